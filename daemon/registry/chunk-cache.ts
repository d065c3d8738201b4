/**
 * Decoded chunks, least recently used out, bounded by tokens (4 bytes each). Chunks are content-addressed and never
 * change, so a cached entry can never be stale; it spares a thaw of a recently frozen or thawed window the LevelDB
 * read and decompression of every chunk (the largest daemon-side cost of a 128k-token thaw).
 */
export class ChunkCache {
  private readonly map = new Map<string, Uint32Array>();
  private tokens = 0;

  constructor(private readonly maxTokens: number) {}

  get(hash: string): Uint32Array | undefined {
    const v = this.map.get(hash);
    if (v) {
      this.map.delete(hash);
      this.map.set(hash, v);
    }
    return v;
  }

  set(hash: string, ids: ArrayLike<number>): void {
    if (this.maxTokens <= 0 || this.map.has(hash)) return;
    const arr = Uint32Array.from(ids);
    this.map.set(hash, arr);
    this.tokens += arr.length;
    while (this.tokens > this.maxTokens) {
      const oldest = this.map.keys().next();
      if (oldest.done) break;
      this.tokens -= (this.map.get(oldest.value) as Uint32Array).length;
      this.map.delete(oldest.value);
    }
  }

  get size(): number {
    return this.map.size;
  }
}
