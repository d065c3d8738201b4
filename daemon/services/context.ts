import type { Logger } from 'pino';
import type { EngineBackend } from '../backends/types.js';
import type { LoadedConfig } from '../config.js';
import type { Metrics } from '../metrics.js';
import type { Registry } from '../registry/db.js';
import type { AuditLog } from './audit.js';
import { deriveSalt } from './salts.js';

/** What every service needs; built once by the daemon. `cfg()` is read per call so live config changes apply. */
export interface ServiceContext {
  reg: Registry;
  backend: EngineBackend;
  audit: AuditLog;
  log: Logger;
  metrics: Metrics;
  secret: Buffer;
  cfg(): LoadedConfig;
}

export function saltFor(ctx: ServiceContext, lineageRoot: string): string {
  return deriveSalt(ctx.secret, lineageRoot);
}

export function nowIso(): string {
  return new Date().toISOString();
}
