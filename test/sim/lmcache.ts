/**
 * LMCache tier model: 256-token chunks (chunk_size), prefix-chained chunk hashes, keyed per cache_salt
 * (LMCache MP mode puts cache_salt into the ObjectKey, LMCache PR #3042), two local tiers:
 * - LocalCPUBackend: `cpuChunks` capacity, LRU; an evicted chunk is demoted to disk.
 * - LocalDiskBackend: `diskChunks` capacity, LRU; an evicted chunk is dropped.
 * Pinned chunks (pin_count > 0) are never evicted and stay in their tier. If the CPU tier is full of pinned
 * chunks a new chunk goes straight to disk; if disk is full of pinned chunks it is dropped (store failure).
 * Only full chunks are stored (save_unfull_chunk = false); a lookup is the longest prefix of whole chunks
 * present in either tier.
 */
import type { ChainHasher } from './hash.js';

export type Tier = 'LocalCPUBackend' | 'LocalDiskBackend';
export const CPU: Tier = 'LocalCPUBackend';
export const DISK: Tier = 'LocalDiskBackend';

export interface Chunk {
  readonly id: string;
  readonly salt: string | null;
  readonly tokens: number;
  tier: Tier;
  pinCount: number;
}

export interface ChunkRun {
  /** Map keys of the chunks (salt namespace + chained chunk hash). */
  keys: string[];
  chunkSize: number;
}

export interface LMCacheCounters {
  storeRequests: number;
  storedChunks: number;
  storedTokens: number;
  retrieveRequests: number;
  requestedTokens: number;
  hitTokens: number;
  lookupRequests: number;
  lookupTokens: number;
  lookupHitTokens: number;
  cpuEvictions: number;
  diskEvictions: number;
  storeFailures: number;
}

export interface LMCacheStats {
  cpuChunks: number;
  diskChunks: number;
  pinnedChunks: number;
  counters: LMCacheCounters;
}

function zeroCounters(): LMCacheCounters {
  return {
    storeRequests: 0,
    storedChunks: 0,
    storedTokens: 0,
    retrieveRequests: 0,
    requestedTokens: 0,
    hitTokens: 0,
    lookupRequests: 0,
    lookupTokens: 0,
    lookupHitTokens: 0,
    cpuEvictions: 0,
    diskEvictions: 0,
    storeFailures: 0,
  };
}

export class LMCacheStore {
  readonly chunkSize: number;
  readonly cpuCapacity: number;
  readonly diskCapacity: number;
  /** Insertion order = LRU order (oldest first); touching re-inserts. */
  private readonly cpu = new Map<string, Chunk>();
  private readonly disk = new Map<string, Chunk>();
  counters: LMCacheCounters = zeroCounters();

  constructor(
    private readonly hasher: ChainHasher,
    opts: { chunkSize: number; cpuChunks: number; diskChunks: number },
  ) {
    this.chunkSize = opts.chunkSize;
    this.cpuCapacity = opts.cpuChunks;
    this.diskCapacity = opts.diskChunks;
  }

  /** Chunk keys for every full chunk of `tokens` under `salt` (null = the unsalted namespace). */
  chunkKeys(tokens: ArrayLike<number>, salt: string | null): ChunkRun {
    const count = Math.floor(tokens.length / this.chunkSize);
    const chain = this.hasher.chain(tokens, this.chunkSize, 0, count, this.hasher.noneHash, null);
    const ns = salt === null ? '-' : `s:${salt}`;
    const keys: string[] = new Array(count);
    for (let i = 0; i < count; i++) keys[i] = `${ns}\u0000${chain.keys[i]}.${chain.checks[i]}`;
    return { keys, chunkSize: this.chunkSize };
  }

  get(key: string): Chunk | undefined {
    return this.cpu.get(key) ?? this.disk.get(key);
  }

  /** Leading chunks present in either tier (optionally only in `tier`). */
  matchPrefix(run: ChunkRun, tier?: Tier): Chunk[] {
    const out: Chunk[] = [];
    for (const key of run.keys) {
      const c = this.get(key);
      if (c === undefined || (tier !== undefined && c.tier !== tier)) break;
      out.push(c);
    }
    return out;
  }

  /** Mark chunks as recently used (LRU refresh in their tier). */
  touch(chunks: readonly Chunk[]): void {
    for (const c of chunks) {
      const map = c.tier === CPU ? this.cpu : this.disk;
      map.delete(c.id);
      map.set(c.id, c);
    }
  }

  /** Store every chunk of `run` not yet present; returns the number of new chunks. */
  store(run: ChunkRun, salt: string | null): number {
    this.counters.storeRequests++;
    let added = 0;
    for (const key of run.keys) {
      const existing = this.get(key);
      if (existing !== undefined) {
        this.touch([existing]);
        continue;
      }
      const chunk: Chunk = { id: key, salt, tokens: this.chunkSize, tier: CPU, pinCount: 0 };
      if (this.insertCpu(chunk)) {
        added++;
        this.counters.storedChunks++;
        this.counters.storedTokens += this.chunkSize;
      } else {
        this.counters.storeFailures++;
      }
    }
    return added;
  }

  /** pin_count++ on the leading chunks that live in `tier`; returns pinned prefix tokens. */
  pin(run: ChunkRun, tier: Tier): number {
    const chunks = this.matchPrefix(run, tier);
    for (const c of chunks) c.pinCount++;
    return chunks.length * this.chunkSize;
  }

  /** pin_count-- (not below 0) on the leading chunks in `tier`; returns affected prefix tokens. */
  unpin(run: ChunkRun, tier: Tier): number {
    const chunks = this.matchPrefix(run, tier);
    for (const c of chunks) if (c.pinCount > 0) c.pinCount--;
    return chunks.length * this.chunkSize;
  }

  /**
   * Controller `/clear`: remove chunks of `tier` (all of them, or only those of `run`) that can be evicted —
   * pinned chunks are skipped, as LMCache's backends skip `can_evict == false` objects. Returns tokens removed.
   */
  clearTier(tier: Tier, run?: ChunkRun): number {
    const map = tier === CPU ? this.cpu : this.disk;
    const keys = run === undefined ? [...map.keys()] : run.keys.filter((k) => map.has(k));
    let removed = 0;
    for (const key of keys) {
      const c = map.get(key);
      if (c === undefined || c.pinCount > 0) continue;
      map.delete(key);
      removed += c.tokens;
    }
    return removed;
  }

  /** Admin: drop everything (or everything unpinned). Returns chunks removed. */
  clearAll(keepPinned: boolean): number {
    let removed = 0;
    for (const map of [this.cpu, this.disk]) {
      for (const [key, c] of [...map]) {
        if (keepPinned && c.pinCount > 0) continue;
        map.delete(key);
        removed++;
      }
    }
    return removed;
  }

  reset(): void {
    this.cpu.clear();
    this.disk.clear();
    this.counters = zeroCounters();
  }

  stats(): LMCacheStats {
    let pinned = 0;
    for (const c of this.cpu.values()) if (c.pinCount > 0) pinned++;
    for (const c of this.disk.values()) if (c.pinCount > 0) pinned++;
    return { cpuChunks: this.cpu.size, diskChunks: this.disk.size, pinnedChunks: pinned, counters: this.counters };
  }

  /** All chunks (for debugging/tests), CPU first, each tier in LRU order. */
  chunks(): Chunk[] {
    return [...this.cpu.values(), ...this.disk.values()];
  }

  private insertCpu(chunk: Chunk): boolean {
    if (this.cpu.size >= this.cpuCapacity) {
      const victim = oldestUnpinned(this.cpu);
      if (victim === undefined) return this.insertDisk(chunk);
      this.cpu.delete(victim.id);
      this.counters.cpuEvictions++;
      this.insertDisk(victim);
    }
    if (this.cpuCapacity <= 0) return this.insertDisk(chunk);
    chunk.tier = CPU;
    this.cpu.set(chunk.id, chunk);
    return true;
  }

  private insertDisk(chunk: Chunk): boolean {
    if (this.disk.size >= this.diskCapacity) {
      const victim = oldestUnpinned(this.disk);
      if (victim === undefined) return false;
      this.disk.delete(victim.id);
      this.counters.diskEvictions++;
    }
    if (this.diskCapacity <= 0) return false;
    chunk.tier = DISK;
    this.disk.set(chunk.id, chunk);
    return true;
  }
}

function oldestUnpinned(map: Map<string, Chunk>): Chunk | undefined {
  for (const c of map.values()) if (c.pinCount === 0) return c;
  return undefined;
}

export function parseTier(location: string): Tier | undefined {
  if (location === CPU || location === DISK) return location;
  return undefined;
}
