import { EngineHttp, jsonWithTokens } from '../http.js';

export interface LookupResult {
  /** Longest matched prefix in tokens, over all instances. */
  matched: number;
  /** Matched tokens per location (LocalCPUBackend, LocalDiskBackend, …). */
  byTier: Record<string, number>;
  location: string | null;
}

/**
 * LMCache controller API (lmcache/v1/api_server). `cache_salt` in the body follows LMCache MP mode, where the salt
 * is part of the object key (LMCache PR #3042); see docs/ARCHITECTURE.md.
 */
export class LmcacheController {
  readonly http: EngineHttp;

  constructor(
    url: string,
    private readonly instanceId: string,
    timeoutMs: number,
    retries: number,
  ) {
    this.http = new EngineHttp(url, { timeoutMs, retries, label: 'LMCache controller', connections: 4 });
  }

  async lookup(tokens: number[], salt: string): Promise<LookupResult> {
    const r = await this.http.json<{ layout_info?: Record<string, [string, number]> }>(
      'POST',
      '/lookup',
      jsonWithTokens({ cache_salt: salt }, 'tokens', tokens),
    );
    const byTier: Record<string, number> = {};
    let matched = 0;
    let location: string | null = null;
    for (const entry of Object.values(r.body.layout_info ?? {})) {
      const [loc, n] = entry;
      byTier[loc] = Math.max(byTier[loc] ?? 0, n);
      if (n > matched) {
        matched = n;
        location = loc;
      }
    }
    return { matched, byTier, location };
  }

  /** pin_count++ on the chunks of this prefix in one tier; returns the tokens affected. */
  pin(tokens: number[], salt: string, location: string): Promise<number> {
    return this.prefixOp('/pin', tokens, salt, location);
  }

  unpin(tokens: number[], salt: string, location: string): Promise<number> {
    return this.prefixOp('/unpin', tokens, salt, location);
  }

  /** Clear the chunks of this token prefix that are not pinned by anyone else. */
  clear(tokens: number[], salt: string, location: string): Promise<number> {
    return this.prefixOp('/clear', tokens, salt, location);
  }

  private async prefixOp(path: string, tokens: number[], salt: string, location: string): Promise<number> {
    const r = await this.http.json<{ num_tokens?: number }>(
      'POST',
      path,
      jsonWithTokens({ instance_id: this.instanceId, location, cache_salt: salt }, 'tokens', tokens),
    );
    return r.body.num_tokens ?? 0;
  }

  async health(): Promise<{ ok: boolean; ms: number; message: string }> {
    const r = await this.http.json<{ error_codes?: Record<string, number>; error_code?: number }>(
      'POST',
      '/health',
      { instance_id: this.instanceId },
      { retry: false, timeoutMs: 3000 },
    );
    const codes = r.body.error_codes ? Object.values(r.body.error_codes) : [r.body.error_code ?? 0];
    const bad = codes.filter((c) => c !== 0).length;
    return { ok: bad === 0, ms: r.ms, message: bad === 0 ? 'workers healthy' : `${bad} worker(s) report errors` };
  }

  close(): Promise<void> {
    return this.http.close();
  }
}
