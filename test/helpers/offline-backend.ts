import path from 'node:path';
import { pino } from 'pino';
import type { EngineBackend } from '../../daemon/backends/types.js';
import { loadConfig } from '../../daemon/config.js';
import { Metrics } from '../../daemon/metrics.js';
import { loadOrCreateSecret, Registry } from '../../daemon/registry/db.js';
import { AuditLog } from '../../daemon/services/audit.js';
import type { ServiceContext } from '../../daemon/services/context.js';
import { SessionService } from '../../daemon/services/sessions.js';
import { WindowService } from '../../daemon/services/windows.js';

export const OFFLINE_MODEL = 'sim/llama-3-8b-instruct';

/**
 * A stand-in engine below the services' boundary, for registry unit tests and for filling large registries fast:
 * it tokenizes nothing and keeps no KV. Everything above it (registry, services) is the real code.
 */
export function offlineBackend(): EngineBackend {
  return {
    kind: 'vllm',
    url: 'offline',
    lmcacheUrl: null,
    models: async () => [{ id: OFFLINE_MODEL, maxModelLen: 32768 }],
    version: async () => 'offline',
    tokenizeChat: async () => {
      throw new Error('offline backend: pass tokenIds');
    },
    tokenizePrompt: async () => {
      throw new Error('offline backend: pass tokenIds');
    },
    metrics: async () => ({
      kvUsage: null,
      prefixCacheQueries: null,
      prefixCacheHits: null,
      externalPrefixCacheHits: null,
      requestsRunning: null,
      requestsWaiting: null,
      blockSize: null,
    }),
    health: async () => ({ ok: true, latencyMs: 0, message: 'offline' }),
    lmcacheHealth: async () => null,
    freezeKv: async () => ({
      pinned: false,
      cached: false,
      residency: 'unknown',
      stateFile: null,
      engineMs: 0,
      warnings: [],
    }),
    thawKv: async (input) => ({
      warmed: false,
      cachedTokens: 0,
      recomputedTokens: 0,
      maxCacheableTokens: 0,
      ttftMs: null,
      engineMs: 0,
      residency: input.window.residency,
      residencyByTier: null,
      slot: null,
      warnings: [],
    }),
    retainKv: async () => ({ pinned: false, warnings: [] }),
    releaseKv: async () => ({ cleared: 0, warnings: [] }),
    decorateRequest: async () => {},
    close: async () => {},
  };
}

export interface OfflineServices {
  reg: Registry;
  ctx: ServiceContext;
  sessions: SessionService;
  windows: WindowService;
  close(): Promise<void>;
}

/** Open a registry in dataDir with the real services over the offline backend. */
export async function openOffline(dataDir: string): Promise<OfflineServices> {
  const log = pino({ level: 'silent' });
  const reg = await Registry.open(path.join(dataDir, 'registry'), log);
  const cfg = loadConfig(path.join(dataDir, 'no-config.json'), {});
  const ctx: ServiceContext = {
    reg,
    backend: offlineBackend(),
    audit: new AuditLog(reg),
    log,
    metrics: new Metrics(),
    secret: loadOrCreateSecret(dataDir),
    cfg: () => cfg,
  };
  const sessions = new SessionService(ctx);
  const windows = new WindowService(ctx, sessions);
  return { reg, ctx, sessions, windows, close: () => reg.close() };
}
