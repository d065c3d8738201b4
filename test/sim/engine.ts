/**
 * The scheduler/KV side of the simulated vLLM engine: admission (prefix-cache lookup, LMCache lookup,
 * block allocation), LMCache store after prefill, caching of output blocks and release on finish, a FIFO
 * waiting queue when the GPU has no room, and the counters behind /metrics and /admin/counters.
 *
 * Hit rules (reference §1.6, §3.3, §4.1):
 * - local hit = longest run of cached block hashes, capped at floor((n-1)/B) blocks;
 * - LMCache hit = longest run of whole chunks in CPU/disk; a hit covering the whole prompt counts n-1;
 *   external (loaded) tokens = max(0, LMCache hit - local hit);
 * - cached_tokens = local + external; recomputed = n - cached_tokens;
 * - `prompt_logprobs` requests skip both reads (and their query/hit counters) but still compute and store.
 * A request that needs more blocks than the GPU has is rejected (CapacityError → HTTP 400); one that does
 * not fit right now waits in the queue (vllm:num_requests_waiting) until running requests release blocks.
 */
import { type ChainHasher, createHasher, type HashAlgo, type HashChain } from './hash.js';
import { type Chunk, type ChunkRun, LMCacheStore } from './lmcache.js';
import { E2E_BUCKETS, Histogram, TTFT_BUCKETS, tokenBuckets } from './metrics.js';
import { BlockPool } from './prefix-cache.js';

export interface EngineConfig {
  blockSize: number;
  gpuBlocks: number;
  maxModelLen: number;
  hashAlgo: HashAlgo;
  lmcache: { chunkSize: number; cpuChunks: number; diskChunks: number } | null;
}

export type EndReason = 'stop' | 'length' | 'abort';

export interface AdmitRequest {
  prompt: Int32Array;
  salt: string | null;
  /** prompt_logprobs set ⇒ vLLM skips reading the prefix cache (and the connector). */
  skipPrefixRead: boolean;
  /** Tokens whose KV the request holds at the end: prompt + generated - 1. */
  kvTokens: number;
  signal?: AbortSignal;
}

export interface Admission {
  readonly seq: number;
  readonly prompt: Int32Array;
  readonly salt: string | null;
  readonly promptLen: number;
  readonly localHit: number;
  readonly externalHit: number;
  readonly lmcacheHit: number;
  readonly cachedTokens: number;
  readonly computed: number;
  readonly blocks: number[];
  readonly promptChain: HashChain;
  readonly chunkRun: ChunkRun | null;
  readonly admittedAt: number;
  released: boolean;
}

export class CapacityError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CapacityError';
  }
}

export class AbortedError extends Error {
  constructor() {
    super('request aborted');
    this.name = 'AbortedError';
  }
}

export interface EngineCounters {
  requests: number;
  promptTokens: number;
  computedTokens: number;
  localHitTokens: number;
  externalHitTokens: number;
  lmcacheHitTokens: number;
  generationTokens: number;
  prefixQueries: number;
  prefixHits: number;
  externalQueries: number;
  externalHits: number;
  preemptions: number;
  finished: { stop: number; length: number; abort: number };
}

export interface LastRequestInfo {
  promptTokens: number;
  localHitTokens: number;
  externalHitTokens: number;
  lmcacheHitTokens: number;
  computedTokens: number;
  cachedTokens: number;
  skippedPrefixRead: boolean;
}

function zeroCounters(): EngineCounters {
  return {
    requests: 0,
    promptTokens: 0,
    computedTokens: 0,
    localHitTokens: 0,
    externalHitTokens: 0,
    lmcacheHitTokens: 0,
    generationTokens: 0,
    prefixQueries: 0,
    prefixHits: 0,
    externalQueries: 0,
    externalHits: 0,
    preemptions: 0,
    finished: { stop: 0, length: 0, abort: 0 },
  };
}

interface Waiter {
  req: AdmitRequest;
  resolve: (a: Admission) => void;
  reject: (e: Error) => void;
  onAbort: () => void;
}

interface Prepared {
  chain: HashChain;
  run: ChunkRun | null;
}

export class Engine {
  readonly config: EngineConfig;
  readonly hasher: ChainHasher;
  readonly pool: BlockPool;
  readonly lmcache: LMCacheStore | null;
  counters: EngineCounters = zeroCounters();
  last: LastRequestInfo | null = null;
  readonly ttft = new Histogram(TTFT_BUCKETS);
  readonly e2e = new Histogram(E2E_BUCKETS);
  readonly promptHist: Histogram;
  readonly generationHist: Histogram;
  private readonly running = new Set<Admission>();
  private readonly waiting: Waiter[] = [];
  private readonly prepared = new WeakMap<AdmitRequest, Prepared>();
  private seq = 0;

  constructor(config: EngineConfig) {
    this.config = config;
    this.hasher = createHasher(config.hashAlgo);
    this.pool = new BlockPool(config.gpuBlocks);
    this.lmcache = config.lmcache === null ? null : new LMCacheStore(this.hasher, config.lmcache);
    this.promptHist = new Histogram(tokenBuckets(config.maxModelLen));
    this.generationHist = new Histogram(tokenBuckets(config.maxModelLen));
  }

  get numRunning(): number {
    return this.running.size;
  }

  get numWaiting(): number {
    return this.waiting.length;
  }

  /** Admit now, or wait in FIFO order until blocks are released. */
  admit(req: AdmitRequest): Promise<Admission> {
    if (req.signal?.aborted === true) return Promise.reject(new AbortedError());
    if (this.waiting.length === 0) {
      const adm = this.tryAdmit(req);
      if (adm !== null) return Promise.resolve(adm);
    } else {
      this.checkCapacity(req);
    }
    return new Promise<Admission>((resolve, reject) => {
      const waiter: Waiter = {
        req,
        resolve,
        reject,
        onAbort: () => {
          const i = this.waiting.indexOf(waiter);
          if (i >= 0) this.waiting.splice(i, 1);
          reject(new AbortedError());
        },
      };
      req.signal?.addEventListener('abort', waiter.onAbort, { once: true });
      this.waiting.push(waiter);
    });
  }

  /** LMCache store of the prompt's full chunks, once prefill is done. */
  completePrefill(adm: Admission): void {
    if (this.lmcache !== null && adm.chunkRun !== null && adm.chunkRun.keys.length > 0) {
      this.lmcache.store(adm.chunkRun, adm.salt);
    }
  }

  /** Cache the full blocks of prompt + output (minus the last sampled token), release the request. */
  finish(adm: Admission, output: readonly number[], reason: 'stop' | 'length', ttftS: number, e2eS: number): void {
    if (adm.released) return;
    const B = this.config.blockSize;
    const kvLen = adm.promptLen + Math.max(output.length - 1, 0);
    const fullPrompt = Math.floor(adm.promptLen / B);
    const fullTotal = Math.min(Math.floor(kvLen / B), adm.blocks.length);
    if (fullTotal > fullPrompt) {
      const all = new Int32Array(kvLen);
      all.set(adm.prompt);
      for (let i = 0; i < kvLen - adm.promptLen; i++) all[adm.promptLen + i] = output[i] as number;
      const chain = this.hasher.chain(all, B, fullPrompt, fullTotal - fullPrompt, adm.promptChain.last, adm.salt);
      for (let j = 0; j < chain.count; j++) {
        this.pool.cacheBlock(adm.blocks[fullPrompt + j] as number, chain.keys[j] as number, chain.checks[j] as number);
      }
    }
    this.counters.generationTokens += output.length;
    this.counters.finished[reason]++;
    this.ttft.observe(ttftS);
    this.e2e.observe(e2eS);
    this.promptHist.observe(adm.promptLen);
    this.generationHist.observe(output.length);
    this.releaseAdmission(adm);
  }

  abort(adm: Admission): void {
    if (adm.released) return;
    this.counters.finished.abort++;
    this.releaseAdmission(adm);
  }

  /** Drop all unreferenced cached GPU blocks. Returns the number of hashes dropped. */
  evictGpu(): number {
    return this.pool.evictUnreferenced();
  }

  /** Forget everything: caches, counters, histograms (running requests keep their blocks until done). */
  reset(): void {
    for (const adm of this.running) adm.released = true;
    this.running.clear();
    for (const w of this.waiting.splice(0)) {
      w.req.signal?.removeEventListener('abort', w.onAbort);
      w.reject(new AbortedError());
    }
    this.pool.reset();
    this.lmcache?.reset();
    this.counters = zeroCounters();
    this.last = null;
    for (const h of [this.ttft, this.e2e, this.promptHist, this.generationHist]) h.reset();
  }

  /** Throws CapacityError when a request holding `kvTokens` tokens could never fit on the GPU. */
  assertFits(kvTokens: number): void {
    const need = Math.max(1, Math.ceil(kvTokens / this.config.blockSize));
    if (need > this.pool.usableBlocks) {
      throw new CapacityError(
        `sim: the request needs ${need} KV blocks (${kvTokens} tokens) but the GPU has only ` +
          `${this.pool.usableBlocks} usable blocks (gpuBlocks=${this.config.gpuBlocks})`,
      );
    }
  }

  private checkCapacity(req: AdmitRequest): void {
    this.assertFits(req.kvTokens);
  }

  private prepare(req: AdmitRequest): Prepared {
    let p = this.prepared.get(req);
    if (p === undefined) {
      const B = this.config.blockSize;
      const full = Math.floor(req.prompt.length / B);
      const chain = this.hasher.chain(req.prompt, B, 0, full, this.hasher.noneHash, req.salt);
      const run = this.lmcache === null ? null : this.lmcache.chunkKeys(req.prompt, req.salt);
      p = { chain, run };
      this.prepared.set(req, p);
    }
    return p;
  }

  private tryAdmit(req: AdmitRequest): Admission | null {
    this.checkCapacity(req);
    const B = this.config.blockSize;
    const P = req.prompt.length;
    const { chain, run } = this.prepare(req);
    const maxHitBlocks = Math.floor((P - 1) / B);
    const hitIds = req.skipPrefixRead ? [] : this.pool.matchPrefix(chain.keys, chain.checks, maxHitBlocks);
    const localBlocks = hitIds.length;
    const need = Math.max(1, Math.ceil(req.kvTokens / B), localBlocks);
    const newNeeded = need - localBlocks;
    if (this.pool.free - this.pool.countFree(hitIds) < newNeeded) return null;

    const localHit = localBlocks * B;
    let lmcacheHit = 0;
    let externalHit = 0;
    const lm = this.lmcache;
    if (lm !== null && run !== null && !req.skipPrefixRead) {
      const matched: Chunk[] = lm.matchPrefix(run);
      lmcacheHit = Math.min(matched.length * lm.chunkSize, P - 1);
      lm.counters.lookupRequests++;
      lm.counters.lookupTokens += P;
      lm.counters.lookupHitTokens += lmcacheHit;
      externalHit = Math.max(0, lmcacheHit - localHit);
      if (externalHit > 0) {
        lm.counters.retrieveRequests++;
        lm.counters.requestedTokens += P;
        lm.counters.hitTokens += externalHit;
        lm.touch(matched);
      }
    }

    this.pool.touch(hitIds);
    const blocks = hitIds.concat(this.pool.allocate(newNeeded));
    for (let i = localBlocks; i < chain.count; i++) {
      this.pool.cacheBlock(blocks[i] as number, chain.keys[i] as number, chain.checks[i] as number);
    }

    const cachedTokens = localHit + externalHit;
    const c = this.counters;
    c.requests++;
    c.promptTokens += P;
    c.computedTokens += P - cachedTokens;
    c.localHitTokens += localHit;
    c.externalHitTokens += externalHit;
    c.lmcacheHitTokens += lmcacheHit;
    if (!req.skipPrefixRead) {
      c.prefixQueries += P;
      c.prefixHits += localHit;
      if (lm !== null) {
        c.externalQueries += P;
        c.externalHits += externalHit;
      }
    }
    this.last = {
      promptTokens: P,
      localHitTokens: localHit,
      externalHitTokens: externalHit,
      lmcacheHitTokens: lmcacheHit,
      computedTokens: P - cachedTokens,
      cachedTokens,
      skippedPrefixRead: req.skipPrefixRead,
    };
    const adm: Admission = {
      seq: ++this.seq,
      prompt: req.prompt,
      salt: req.salt,
      promptLen: P,
      localHit,
      externalHit,
      lmcacheHit,
      cachedTokens,
      computed: P - cachedTokens,
      blocks,
      promptChain: chain,
      chunkRun: run,
      admittedAt: performance.now(),
      released: false,
    };
    this.running.add(adm);
    this.prepared.delete(req);
    return adm;
  }

  private releaseAdmission(adm: Admission): void {
    adm.released = true;
    this.running.delete(adm);
    this.pool.release(adm.blocks);
    this.drain();
  }

  private drain(): void {
    while (this.waiting.length > 0) {
      const w = this.waiting[0] as Waiter;
      let adm: Admission | null;
      try {
        adm = this.tryAdmit(w.req);
      } catch (e) {
        this.waiting.shift();
        w.req.signal?.removeEventListener('abort', w.onAbort);
        w.reject(e instanceof Error ? e : new Error(String(e)));
        continue;
      }
      if (adm === null) return;
      this.waiting.shift();
      w.req.signal?.removeEventListener('abort', w.onAbort);
      w.resolve(adm);
    }
  }
}
