/**
 * Test-only admin API on the vLLM port under /admin/ (not part of vLLM). Never affected by faults.
 *
 *   POST /admin/evict-gpu                 → {"evictedBlocks": n}
 *   POST /admin/clear-lmcache {keepPinned?} → {"removedChunks": n}
 *   GET  /admin/counters                  → SimCounters (see counters())
 *   GET  /admin/requests?limit=N&path=P&server=vllm|lmcache → LoggedRequest[] (oldest first;
 *        default: vLLM paths under /v1/)
 *   POST /admin/kv-usage {value: number|null} → {"value": v}
 *   GET|POST /admin/faults {mode, delayMs?, count?, paths?, target?} → {"vllm": FaultStatus, "lmcache": …}
 *   POST /admin/reset                     → {"ok": true}
 */
import { parseFaultSpec } from './faults.js';
import { HttpError, isRecord, type Responder } from './http-util.js';
import type { SimState } from './state.js';

export interface SimCounters {
  requests: Record<string, number>;
  lmcacheRequests: Record<string, number>;
  promptTokens: number;
  computedTokens: number;
  localHitTokens: number;
  externalHitTokens: number;
  loadedTokens: number;
  lmcacheHitTokens: number;
  generationTokens: number;
  finished: { stop: number; length: number; abort: number };
  running: number;
  waiting: number;
  kvCacheUsage: number;
  gpu: { numBlocks: number; usedBlocks: number; cachedBlocks: number; freeBlocks: number; evictedBlocks: number };
  lmcache: {
    cpuChunks: number;
    diskChunks: number;
    pinnedChunks: number;
    storedChunks: number;
    cpuEvictions: number;
    diskEvictions: number;
    storeFailures: number;
  };
  last: {
    promptTokens: number;
    localHitTokens: number;
    externalHitTokens: number;
    lmcacheHitTokens: number;
    computedTokens: number;
    cachedTokens: number;
    skippedPrefixRead: boolean;
  } | null;
}

export function counters(state: SimState): SimCounters {
  const e = state.engine;
  const c = e.counters;
  const g = e.pool.stats();
  const lm = e.lmcache?.stats();
  return {
    requests: Object.fromEntries(state.requestCounts),
    lmcacheRequests: Object.fromEntries(state.lmcacheRequestCounts),
    promptTokens: c.promptTokens,
    computedTokens: c.computedTokens,
    localHitTokens: c.localHitTokens,
    externalHitTokens: c.externalHitTokens,
    loadedTokens: c.externalHitTokens,
    lmcacheHitTokens: c.lmcacheHitTokens,
    generationTokens: c.generationTokens,
    finished: { ...c.finished },
    running: e.numRunning,
    waiting: e.numWaiting,
    kvCacheUsage: state.kvUsage,
    gpu: {
      numBlocks: g.numBlocks,
      usedBlocks: g.usedBlocks,
      cachedBlocks: g.cachedBlocks,
      freeBlocks: g.freeBlocks,
      evictedBlocks: g.evictedBlocks,
    },
    lmcache: {
      cpuChunks: lm?.cpuChunks ?? 0,
      diskChunks: lm?.diskChunks ?? 0,
      pinnedChunks: lm?.pinnedChunks ?? 0,
      storedChunks: lm?.counters.storedChunks ?? 0,
      cpuEvictions: lm?.counters.cpuEvictions ?? 0,
      diskEvictions: lm?.counters.diskEvictions ?? 0,
      storeFailures: lm?.counters.storeFailures ?? 0,
    },
    last: e.last === null ? null : { ...e.last },
  };
}

function adminError(message: string): HttpError {
  return new HttpError(400, { error: message });
}

export async function handleAdmin(
  state: SimState,
  r: Responder,
  method: string,
  path: string,
  url: URL,
  body: () => Promise<unknown>,
): Promise<void> {
  const key = `${method} ${path}`;
  const optBody = async (): Promise<Record<string, unknown>> => {
    const b = await body();
    if (b === null || b === undefined) return {};
    if (!isRecord(b)) throw adminError('body must be a JSON object');
    return b;
  };
  switch (key) {
    case 'POST /admin/evict-gpu':
      r.json(200, { evictedBlocks: state.engine.evictGpu() });
      return;
    case 'POST /admin/clear-lmcache': {
      const b = await optBody();
      const removed = state.engine.lmcache?.clearAll(b.keepPinned === true) ?? 0;
      r.json(200, { removedChunks: removed });
      return;
    }
    case 'GET /admin/counters':
      r.json(200, counters(state));
      return;
    case 'GET /admin/requests': {
      const limit = Number(url.searchParams.get('limit') ?? '20');
      if (!Number.isInteger(limit) || limit < 0) throw adminError('limit must be an integer ≥ 0');
      const server = url.searchParams.get('server');
      if (server !== null && server !== 'vllm' && server !== 'lmcache') throw adminError('server: vllm | lmcache');
      const filter: { path?: string; server?: 'vllm' | 'lmcache' } = {};
      const p = url.searchParams.get('path');
      if (p !== null) filter.path = p;
      if (server !== null) filter.server = server;
      r.json(200, state.requests(limit, filter));
      return;
    }
    case 'POST /admin/kv-usage': {
      const b = await optBody();
      const v = b.value;
      if (v !== null && (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > 1)) {
        throw adminError('value must be a number in [0, 1] or null');
      }
      state.kvUsageOverride = v;
      r.json(200, { value: v });
      return;
    }
    case 'GET /admin/faults':
      r.json(200, { vllm: state.faults.vllm.status(), lmcache: state.faults.lmcache.status() });
      return;
    case 'POST /admin/faults': {
      const spec = parseFaultSpec(await optBody());
      if (typeof spec === 'string') throw adminError(spec);
      state.faults[spec.target ?? 'vllm'].set(spec);
      r.json(200, { vllm: state.faults.vllm.status(), lmcache: state.faults.lmcache.status() });
      return;
    }
    case 'POST /admin/reset':
      state.reset();
      r.json(200, { ok: true });
      return;
    default:
      throw new HttpError(404, { detail: 'Not Found' });
  }
}
