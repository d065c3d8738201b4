import { z } from 'zod';
import { windowName } from './names.js';

/** Auto-freeze policy as seen on the wire (a view of config.autoFreeze). */
export const AutoFreezePolicy = z.object({
  enabled: z.boolean(),
  threshold: z.number().gt(0).lte(1),
  maxTokens: z.number().int().positive().nullable(),
  cooldownSeconds: z.number().int().min(0),
  intervalSeconds: z.number().positive(),
});
export type AutoFreezePolicy = z.infer<typeof AutoFreezePolicy>;

export const AutoFreezeGetParams = z.object({}).optional();
export const AutoFreezeGetResult = z.object({
  policy: AutoFreezePolicy,
  source: z.record(z.string(), z.string()),
  lastRunAt: z.string().nullable(),
  pressure: z.object({
    kvUsage: z.number().nullable(),
    hostAvailable: z.number().nullable(),
    underPressure: z.boolean(),
  }),
});
export const AutoFreezeSetParams = AutoFreezePolicy.partial();
export const AutoFreezeSetResult = AutoFreezeGetResult;

export const AuditEvent = z.object({
  id: z.string(),
  time: z.string(),
  action: z.string(),
  actor: z.enum(['rpc', 'gateway', 'monitor', 'daemon']),
  target: z.string().nullable(),
  outcome: z.enum(['ok', 'error']),
  reason: z.string().nullable(),
  details: z.record(z.string(), z.unknown()),
});
export type AuditEvent = z.infer<typeof AuditEvent>;
export const AuditListParams = z
  .object({
    limit: z.number().int().min(1).max(10_000).default(50),
    action: z.string().max(64).optional(),
    since: z.string().optional(),
  })
  .optional();
export const AuditListResult = z.object({ events: z.array(AuditEvent) });

export const ConfigShowParams = z.object({}).optional();
export const ConfigShowResult = z.object({
  file: z.string(),
  config: z.record(z.string(), z.unknown()),
  sources: z.record(z.string(), z.string()),
  lastError: z.string().nullable(),
  pendingRestart: z.array(z.string()),
});

export const CacheStatsParams = z.object({}).optional();
export const CacheStatsResult = z.object({
  registry: z.object({
    windows: z.number().int(),
    chunks: z.number().int(),
    bytesStored: z.number().int(),
    tokensStored: z.number().int(),
  }),
  engine: z.object({
    reachable: z.boolean(),
    kind: z.string(),
    kvUsage: z.number().nullable(),
    prefixCacheQueries: z.number().nullable(),
    prefixCacheHits: z.number().nullable(),
    externalPrefixCacheHits: z.number().nullable(),
    hitRate: z.number().nullable(),
    error: z.string().nullable(),
  }),
  thaws: z.object({ count: z.number().int(), cachedTokens: z.number().int(), recomputedTokens: z.number().int() }),
});

export const HealthComponent = z.object({
  name: z.string(),
  status: z.enum(['ok', 'degraded', 'down', 'disabled']),
  message: z.string(),
  latencyMs: z.number().nullable(),
});
export const HealthParams = z
  .object({ component: z.enum(['registry', 'engine', 'lmcache', 'gateway']).optional() })
  .optional();
export const HealthResult = z.object({
  status: z.enum(['ok', 'degraded', 'down']),
  version: z.string(),
  uptimeSeconds: z.number(),
  components: z.array(HealthComponent),
});

export const RegistryCheckParams = z.object({ repair: z.boolean().default(false) }).optional();
export const RegistryCheckResult = z.object({
  ok: z.boolean(),
  checked: z.object({ windows: z.number().int(), chunks: z.number().int(), sessions: z.number().int() }),
  problems: z.array(z.object({ kind: z.string(), key: z.string(), message: z.string() })),
  repaired: z.number().int(),
});

export const ExportParams = z.object({ name: windowName, file: z.string().min(1).max(4096) });
export const ExportResult = z.object({
  name: z.string(),
  file: z.string(),
  bytes: z.number().int(),
  sha256: z.string(),
});
export const ImportParams = z.object({
  file: z.string().min(1).max(4096),
  name: windowName.optional(),
});
export const ImportResult = z.object({ name: z.string(), tokens: z.number().int(), chunks: z.number().int() });
