import type { Logger } from 'pino';
import type { Config } from '../../config.js';
import type { ChatMessage, Residency } from '../../protocol/index.js';
import { CwmError } from '../../protocol/index.js';
import { cleanText, EngineHttp, jsonWithTokens, tokenIdsFrom } from '../http.js';
import { maxOf, parsePrometheus, sumOf } from '../prometheus.js';
import type {
  EngineBackend,
  EngineMetrics,
  HealthReport,
  KvFreezeInput,
  KvFreezeResult,
  KvPinInput,
  KvReleaseInput,
  KvReleaseResult,
  KvThawInput,
  KvThawResult,
  ModelInfo,
} from '../types.js';
import { LmcacheController } from './lmcache.js';

const TIERS = ['LocalCPUBackend', 'LocalDiskBackend'];
const LMCACHE_CHUNK = 256;
const MODELS_TTL_MS = 30_000;

interface CompletionResponse {
  usage?: {
    prompt_tokens?: number;
    prompt_tokens_details?: { cached_tokens?: number | null } | null;
  };
}

/** Block-aligned maximum of a prefix-cache hit for an n-token prompt: vLLM never hits the last token's block. */
export function maxCacheable(n: number, blockSize: number): number {
  return n <= 0 ? 0 : Math.floor((n - 1) / blockSize) * blockSize;
}

/** ready: at most one LMCache chunk (plus a block) had to be recomputed; lost: nothing came from cache. */
export function residencyOf(cached: number, n: number, blockSize: number): Residency {
  if (n <= blockSize) return 'ready';
  if (cached <= 0) return 'lost';
  return n - cached <= LMCACHE_CHUNK + blockSize ? 'ready' : 'partial';
}

export class VllmBackend implements EngineBackend {
  readonly kind = 'vllm' as const;
  readonly url: string;
  readonly lmcacheUrl: string | null;
  private readonly http: EngineHttp;
  private readonly lmcache: LmcacheController | null;
  private modelsCache: { at: number; models: ModelInfo[] } | null = null;
  private versionCache: string | null | undefined;
  private blockSize = 16;
  private reportsCached: boolean | undefined;

  constructor(
    cfg: Config['engine'],
    private readonly log: Logger,
  ) {
    this.url = cfg.url.replace(/\/+$/, '');
    this.lmcacheUrl = cfg.lmcacheUrl;
    this.http = new EngineHttp(this.url, {
      timeoutMs: cfg.timeoutMs,
      retries: cfg.retries,
      apiKey: cfg.apiKey,
      label: 'vLLM',
    });
    this.lmcache = cfg.lmcacheUrl
      ? new LmcacheController(cfg.lmcacheUrl, cfg.lmcacheInstanceId, Math.min(cfg.timeoutMs, 30_000), cfg.retries)
      : null;
  }

  get dispatcher() {
    return this.http.pool;
  }

  async models(): Promise<ModelInfo[]> {
    if (this.modelsCache && Date.now() - this.modelsCache.at < MODELS_TTL_MS) return this.modelsCache.models;
    const r = await this.http.json<{ data?: { id?: unknown; max_model_len?: unknown }[] }>('GET', '/v1/models');
    // Only what the protocol can carry: a string id, a positive integer length (else unknown).
    const data = Array.isArray(r.body?.data) ? r.body.data : [];
    const models = data
      .filter((m) => typeof m?.id === 'string')
      .map((m) => ({
        id: m.id as string,
        maxModelLen:
          Number.isInteger(m.max_model_len) && (m.max_model_len as number) > 0 ? (m.max_model_len as number) : null,
      }));
    this.modelsCache = { at: Date.now(), models };
    return models;
  }

  async version(): Promise<string | null> {
    if (this.versionCache !== undefined) return this.versionCache;
    try {
      const r = await this.http.json<{ version?: unknown }>('GET', '/version', undefined, { retry: false });
      this.versionCache = typeof r.body?.version === 'string' ? cleanText(r.body.version, 64) : null;
    } catch {
      return null;
    }
    return this.versionCache;
  }

  async tokenizeChat(model: string, messages: ChatMessage[]): Promise<number[]> {
    const r = await this.http.json<{ tokens?: unknown }>('POST', '/tokenize', {
      model,
      messages,
      add_generation_prompt: false,
      continue_final_message: false,
    });
    return tokenIdsFrom(r.body?.tokens, 'vLLM /tokenize');
  }

  async tokenizePrompt(model: string, prompt: string, addSpecial = true): Promise<number[]> {
    const r = await this.http.json<{ tokens?: unknown }>('POST', '/tokenize', {
      model,
      prompt,
      add_special_tokens: addSpecial,
    });
    return tokenIdsFrom(r.body?.tokens, 'vLLM /tokenize');
  }

  async metrics(): Promise<EngineMetrics> {
    const r = await this.http.json<string>('GET', '/metrics', undefined, { retry: false, timeoutMs: 5000 });
    const m = parsePrometheus(typeof r.body === 'string' ? r.body : String(r.body));
    const cfg = m.get('vllm:cache_config_info')?.[0]?.labels;
    const bs = cfg?.block_size ? Number(cfg.block_size) : null;
    if (bs && Number.isFinite(bs)) this.blockSize = bs;
    return {
      kvUsage: maxOf(m, 'vllm:kv_cache_usage_perc', 'vllm:gpu_cache_usage_perc'),
      prefixCacheQueries: sumOf(m, 'vllm:prefix_cache_queries_total', 'vllm:gpu_prefix_cache_queries_total'),
      prefixCacheHits: sumOf(m, 'vllm:prefix_cache_hits_total', 'vllm:gpu_prefix_cache_hits_total'),
      externalPrefixCacheHits: sumOf(m, 'vllm:external_prefix_cache_hits_total'),
      requestsRunning: sumOf(m, 'vllm:num_requests_running'),
      requestsWaiting: sumOf(m, 'vllm:num_requests_waiting'),
      blockSize: bs,
    };
  }

  async health(): Promise<HealthReport> {
    try {
      const r = await this.http.json('GET', '/health', undefined, { retry: false, timeoutMs: 3000 });
      return { ok: true, latencyMs: r.ms, message: `vLLM at ${this.url} is healthy` };
    } catch (err) {
      return { ok: false, latencyMs: null, message: (err as Error).message };
    }
  }

  async lmcacheHealth(): Promise<HealthReport | null> {
    if (!this.lmcache) return null;
    try {
      const r = await this.lmcache.health();
      return { ok: r.ok, latencyMs: r.ms, message: r.message };
    } catch (err) {
      return { ok: false, latencyMs: null, message: (err as Error).message };
    }
  }

  /** One prefill of the exact token ids under the salt: max_tokens 1, never prompt_logprobs (it bypasses the cache). */
  private async prefill(model: string, tokens: number[], salt: string): Promise<{ cached: number | null; ms: number }> {
    const r = await this.http.json<CompletionResponse>(
      'POST',
      '/v1/completions',
      jsonWithTokens({ model, max_tokens: 1, temperature: 0, cache_salt: salt }, 'prompt', tokens),
      // A completion is not idempotent in cost; still safe to retry on refused connections (nothing was processed).
      { retry: true },
    );
    const cached = r.body?.usage?.prompt_tokens_details?.cached_tokens;
    // A count the engine could not have served (negative, fractional, beyond the prompt) is treated as unknown.
    const valid = Number.isInteger(cached) && (cached as number) >= 0 && (cached as number) <= tokens.length;
    return { cached: valid ? (cached as number) : null, ms: r.ms };
  }

  async freezeKv(input: KvFreezeInput): Promise<KvFreezeResult> {
    const warnings: string[] = [];
    let engineMs = 0;
    // Engine time is the HTTP exchange itself: the argument (and its serialisation) is evaluated before timing starts.
    const timed = async <T>(call: Promise<T>): Promise<T> => {
      const t0 = performance.now();
      try {
        return await call;
      } finally {
        engineMs += performance.now() - t0;
      }
    };
    const n = input.tokens.length;
    const wantChunks = Math.floor(n / LMCACHE_CHUNK) * LMCACHE_CHUNK;
    if (this.lmcache) {
      const lm = this.lmcache;
      let look = await timed(lm.lookup(input.tokens, input.salt));
      if (look.matched < wantChunks && input.prefill) {
        await timed(this.prefill(input.model, input.tokens, input.salt));
        look = await timed(lm.lookup(input.tokens, input.salt));
      } else if (look.matched < wantChunks) {
        warnings.push('prefill skipped: the KV cache for this context is not resident; thaw will recompute it');
      }
      let pinned = 0;
      for (const tier of TIERS) pinned += await timed(lm.pin(input.tokens, input.salt, tier));
      if (wantChunks > 0 && pinned === 0) warnings.push('LMCache holds none of this context: nothing was pinned');
      const residency: Residency = look.matched >= wantChunks ? 'ready' : look.matched > 0 ? 'partial' : 'lost';
      return { pinned: pinned > 0, cached: look.matched > 0, residency, stateFile: null, engineMs, warnings };
    }
    if (!input.prefill) {
      warnings.push('prefill skipped and no LMCache controller: the window is not cached; thaw will recompute it');
      return { pinned: false, cached: false, residency: 'unknown', stateFile: null, engineMs, warnings };
    }
    await timed(this.prefill(input.model, input.tokens, input.salt));
    warnings.push(
      'no LMCache controller configured (engine.lmcacheUrl): the KV exists but is not pinned and may be evicted',
    );
    return { pinned: false, cached: true, residency: 'unknown', stateFile: null, engineMs, warnings };
  }

  async thawKv(input: KvThawInput): Promise<KvThawResult> {
    const warnings: string[] = [];
    const n = input.tokens.length;
    let residencyByTier: Record<string, number> | null = null;
    let lookupMs = 0;
    if (this.lmcache) {
      const tl = performance.now();
      try {
        residencyByTier = (await this.lmcache.lookup(input.tokens, input.salt)).byTier;
      } catch (err) {
        warnings.push(`LMCache residency unknown: ${(err as Error).message}`);
      }
      lookupMs = performance.now() - tl;
    }
    if (!input.warm) {
      return {
        warmed: false,
        cachedTokens: 0,
        recomputedTokens: 0,
        maxCacheableTokens: maxCacheable(n, this.blockSize),
        ttftMs: null,
        engineMs: lookupMs,
        residency: input.window.residency,
        residencyByTier,
        slot: null,
        warnings: ['not warmed: the first request of the new session will load or recompute the context'],
      };
    }
    // Without --enable-prompt-tokens-details the answer has no cached_tokens: fall back to the /metrics deltas.
    const before = this.reportsCached === false ? await this.metrics().catch(() => null) : null;
    const t0 = performance.now();
    const first = await this.prefill(input.window.model, input.tokens, input.salt);
    const engineMs = performance.now() - t0 + lookupMs;
    this.reportsCached = first.cached !== null;
    let cached = first.cached;
    if (cached === null) {
      warnings.push(
        'the engine does not report cached_tokens (start vLLM with --enable-prompt-tokens-details); estimated from /metrics',
      );
      const after = before ? await this.metrics().catch(() => null) : null;
      const hits = (m: EngineMetrics | null) => (m?.prefixCacheHits ?? 0) + (m?.externalPrefixCacheHits ?? 0);
      cached = before && after ? Math.max(0, Math.min(n, hits(after) - hits(before))) : 0;
    }
    const maxC = maxCacheable(n, this.blockSize);
    const residency = residencyOf(cached, n, this.blockSize);
    if (residency === 'lost') {
      warnings.push(`the KV cache was gone: all ${n} tokens were recomputed (the exact context was still restored)`);
    } else if (residency === 'partial') {
      warnings.push(
        `partial cache hit: ${cached} of ${maxC} cacheable tokens came from cache, ${n - cached} recomputed`,
      );
    }
    return {
      warmed: true,
      cachedTokens: cached,
      recomputedTokens: n - cached,
      maxCacheableTokens: maxC,
      ttftMs: first.ms,
      engineMs,
      residency,
      residencyByTier,
      slot: null,
      warnings,
    };
  }

  async retainKv(input: KvPinInput): Promise<{ pinned: boolean; warnings: string[] }> {
    if (!this.lmcache) return { pinned: false, warnings: [] };
    try {
      let pinned = 0;
      for (const tier of TIERS) pinned += await this.lmcache.pin(input.tokens, input.salt, tier);
      return { pinned: pinned > 0, warnings: [] };
    } catch (err) {
      return { pinned: false, warnings: [`could not pin the shared KV in LMCache: ${(err as Error).message}`] };
    }
  }

  async releaseKv(input: KvReleaseInput): Promise<KvReleaseResult> {
    if (!this.lmcache || !input.window.pinned) return { cleared: 0, warnings: [] };
    const warnings: string[] = [];
    let cleared = 0;
    try {
      for (const tier of TIERS) await this.lmcache.unpin(input.tokens, input.salt, tier);
      // Chunks of the kept prefix stay pinned by the windows that need them; clear skips pinned chunks.
      if (input.keepTokens < input.tokens.length) {
        for (const tier of TIERS) cleared += await this.lmcache.clear(input.tokens, input.salt, tier);
      }
    } catch (err) {
      warnings.push(`LMCache was not cleaned up yet (cwmd retries): ${(err as Error).message}`);
      this.log.warn({ err, window: input.window.name }, 'lmcache release failed');
      return { cleared, warnings, retry: true };
    }
    return { cleared, warnings };
  }

  async decorateRequest(body: Record<string, unknown>, ctx: { salt: string }): Promise<void> {
    body.cache_salt = ctx.salt;
  }

  async close(): Promise<void> {
    await this.http.close();
    await this.lmcache?.close();
  }
}

export function requireModel(models: ModelInfo[], model: string): ModelInfo {
  const m = models.find((x) => x.id === model);
  if (!m) {
    throw new CwmError('MODEL_MISMATCH', `the engine does not serve model "${model}"`, {
      hint: `it serves: ${models.map((x) => x.id).join(', ') || '(none)'}`,
    });
  }
  return m;
}
