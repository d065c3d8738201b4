import { Engine } from './engine.js';
import { FaultState } from './faults.js';
import type { LoggedRequest, SimOptions } from './types.js';

/** Everything the servers share; exposed as `Simulator.state` for tests. */
export class SimState {
  readonly options: SimOptions;
  readonly engine: Engine;
  readonly faults = { vllm: new FaultState(), lmcache: new FaultState() };
  /** Forced `kv_cache_usage_perc` (null = the real value). */
  kvUsageOverride: number | null = null;
  /** Requests per path on the vLLM port (all methods, including errors and admin calls). */
  readonly requestCounts = new Map<string, number>();
  /** Requests per path on the LMCache controller port. */
  readonly lmcacheRequestCounts = new Map<string, number>();
  /** Controller event ids handed out (for /check_finish). */
  readonly events = new Set<string>();
  readonly startedAt = Math.floor(Date.now() / 1000);
  private log: LoggedRequest[] = [];

  constructor(options: SimOptions) {
    this.options = options;
    this.engine = new Engine({
      blockSize: options.blockSize,
      gpuBlocks: options.gpuBlocks,
      maxModelLen: options.maxModelLen,
      hashAlgo: options.hashAlgo,
      lmcache: options.lmcache
        ? {
            chunkSize: options.lmcacheChunkSize,
            cpuChunks: options.lmcacheCpuChunks,
            diskChunks: options.lmcacheDiskChunks,
          }
        : null,
    });
  }

  /** The `kv_cache_usage_perc` value /metrics reports. */
  get kvUsage(): number {
    return this.kvUsageOverride ?? this.engine.pool.stats().usage;
  }

  count(server: 'vllm' | 'lmcache', path: string): void {
    const m = server === 'vllm' ? this.requestCounts : this.lmcacheRequestCounts;
    m.set(path, (m.get(path) ?? 0) + 1);
  }

  record(entry: LoggedRequest): void {
    if (this.options.requestLogSize <= 0) return;
    this.log.push(entry);
    if (this.log.length > this.options.requestLogSize)
      this.log.splice(0, this.log.length - this.options.requestLogSize);
  }

  /**
   * Last `limit` logged request bodies, oldest first. Default filter: vLLM `/v1/` paths; `path` = a path
   * prefix on the chosen server ('/' = all), `server` = 'vllm' | 'lmcache'.
   */
  requests(limit = 20, filter: { path?: string; server?: 'vllm' | 'lmcache' } = {}): LoggedRequest[] {
    const server = filter.server ?? 'vllm';
    const prefix = filter.path ?? (server === 'vllm' ? '/v1/' : '/');
    const hits = this.log.filter((r) => r.server === server && r.path.startsWith(prefix));
    return limit >= hits.length ? hits : hits.slice(hits.length - limit);
  }

  reset(): void {
    this.engine.reset();
    this.faults.vllm.clear();
    this.faults.lmcache.clear();
    this.kvUsageOverride = null;
    this.requestCounts.clear();
    this.lmcacheRequestCounts.clear();
    this.events.clear();
    this.log = [];
  }
}
