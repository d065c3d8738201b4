/**
 * GPU KV block pool modelled on vLLM V1 (vllm/v1/core/block_pool.py, kv_cache_utils.py):
 * - `numBlocks` blocks; block 0 is the reserved null block, so `numBlocks - 1` are usable.
 * - Ref-counted blocks. A block with ref 0 sits in the free queue (a doubly linked LRU list); it may still
 *   carry a cached hash ("cached but evictable"), and counts as free for `kv_cache_usage_perc`.
 * - Allocation pops from the head of the free queue, evicting the popped block's hash.
 * - A finished request frees its blocks tail first (appended to the queue tail in reverse order), so the
 *   blocks of a prefix survive longest.
 * - Hash lookup: longest run of leading block hashes present in the cache.
 */

export interface BlockPoolStats {
  numBlocks: number;
  /** Blocks referenced by running requests. */
  usedBlocks: number;
  /** Blocks that carry a cached hash (referenced or not). */
  cachedBlocks: number;
  /** Free-queue length (includes cached-but-unreferenced blocks). */
  freeBlocks: number;
  /** 1 - free/(numBlocks-1), the real `kv_cache_usage_perc` formula. */
  usage: number;
  evictedBlocks: number;
}

const NONE = -1;

export class BlockPool {
  readonly numBlocks: number;
  private readonly refCnt: Int32Array;
  private readonly key: Float64Array; // NaN = no hash
  private readonly check: Int32Array;
  private readonly prev: Int32Array;
  private readonly next: Int32Array;
  private readonly inFree: Uint8Array;
  private head = NONE;
  private tail = NONE;
  private freeCount = 0;
  private readonly cached = new Map<number, number>(); // key → block id
  private evicted = 0;

  constructor(numBlocks: number) {
    if (!Number.isInteger(numBlocks) || numBlocks < 2) throw new Error('gpuBlocks must be an integer ≥ 2');
    this.numBlocks = numBlocks;
    this.refCnt = new Int32Array(numBlocks);
    this.key = new Float64Array(numBlocks).fill(Number.NaN);
    this.check = new Int32Array(numBlocks);
    this.prev = new Int32Array(numBlocks).fill(NONE);
    this.next = new Int32Array(numBlocks).fill(NONE);
    this.inFree = new Uint8Array(numBlocks);
    this.reset();
  }

  /** Drop every hash and reference; all usable blocks back in the free queue in id order. */
  reset(): void {
    this.cached.clear();
    this.key.fill(Number.NaN);
    this.refCnt.fill(0);
    this.inFree.fill(0);
    this.head = NONE;
    this.tail = NONE;
    this.freeCount = 0;
    this.evicted = 0;
    this.refCnt[0] = 1; // null block, never freed
    for (let b = 1; b < this.numBlocks; b++) this.append(b);
  }

  get usableBlocks(): number {
    return this.numBlocks - 1;
  }

  get free(): number {
    return this.freeCount;
  }

  /** Block ids of the leading units whose hash is cached (at most `max` of them). */
  matchPrefix(keys: Float64Array, checks: Int32Array, max: number): number[] {
    const limit = Math.min(max, keys.length);
    const ids: number[] = [];
    for (let n = 0; n < limit; n++) {
      const id = this.lookup(keys[n] as number, checks[n] as number);
      if (id === NONE) break;
      ids.push(id);
    }
    return ids;
  }

  /** How many of these blocks are currently in the free queue (would stop being free when touched). */
  countFree(ids: readonly number[]): number {
    let n = 0;
    for (const id of ids) if (this.inFree[id] === 1) n++;
    return n;
  }

  /** Take a reference on cached blocks (removing unreferenced ones from the free queue). */
  touch(ids: readonly number[]): void {
    for (const id of ids) {
      if (this.refCnt[id] === 0) this.remove(id);
      this.refCnt[id] = (this.refCnt[id] as number) + 1;
    }
  }

  /** Pop `n` blocks from the free-queue head (evicting their hashes). Caller checks `free >= n`. */
  allocate(n: number): number[] {
    if (n > this.freeCount) throw new Error(`cannot allocate ${n} blocks, ${this.freeCount} free`);
    const ids: number[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const id = this.head;
      this.remove(id);
      this.dropHash(id);
      this.refCnt[id] = 1;
      ids[i] = id;
    }
    return ids;
  }

  /** Register a computed full block under its hash (first writer wins, as in vLLM). */
  cacheBlock(id: number, key: number, check: number): void {
    if (!Number.isNaN(this.key[id] as number)) return;
    if (this.cached.has(key)) return;
    this.cached.set(key, id);
    this.key[id] = key;
    this.check[id] = check;
  }

  /** Release one reference on each block; blocks reaching 0 join the free queue, tail block first. */
  release(ids: readonly number[]): void {
    for (let i = ids.length - 1; i >= 0; i--) {
      const id = ids[i] as number;
      const r = (this.refCnt[id] as number) - 1;
      this.refCnt[id] = r;
      if (r === 0) this.append(id);
    }
  }

  /** Drop the hash of every unreferenced block (what `POST /admin/evict-gpu` does). */
  evictUnreferenced(): number {
    let n = 0;
    for (let id = this.head; id !== NONE; id = this.next[id] as number) {
      if (!Number.isNaN(this.key[id] as number)) {
        this.dropHash(id);
        n++;
      }
    }
    return n;
  }

  stats(): BlockPoolStats {
    const usable = this.numBlocks - 1;
    return {
      numBlocks: this.numBlocks,
      usedBlocks: usable - this.freeCount,
      cachedBlocks: this.cached.size,
      freeBlocks: this.freeCount,
      usage: usable > 0 ? 1 - this.freeCount / usable : 0,
      evictedBlocks: this.evicted,
    };
  }

  private lookup(key: number, check: number): number {
    const id = this.cached.get(key);
    if (id === undefined || this.check[id] !== check) return NONE;
    return id;
  }

  private dropHash(id: number): void {
    const k = this.key[id] as number;
    if (Number.isNaN(k)) return;
    if (this.cached.get(k) === id) this.cached.delete(k);
    this.key[id] = Number.NaN;
    this.evicted++;
  }

  private append(id: number): void {
    this.prev[id] = this.tail;
    this.next[id] = NONE;
    if (this.tail !== NONE) this.next[this.tail] = id;
    else this.head = id;
    this.tail = id;
    this.inFree[id] = 1;
    this.freeCount++;
  }

  private remove(id: number): void {
    const p = this.prev[id] as number;
    const n = this.next[id] as number;
    if (p !== NONE) this.next[p] = n;
    else this.head = n;
    if (n !== NONE) this.prev[n] = p;
    else this.tail = p;
    this.prev[id] = NONE;
    this.next[id] = NONE;
    this.inFree[id] = 0;
    this.freeCount--;
  }
}
