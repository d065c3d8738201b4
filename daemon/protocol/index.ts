import type { z } from 'zod';
import * as D from './daemon.js';
import * as O from './ops.js';
import * as S from './session.js';
import * as W from './window.js';

export * from './errors.js';
export * from './names.js';

/**
 * Bumped on any incompatible change to a method's params or result. Clients send theirs in daemon.hello;
 * a mismatch is refused with PROTOCOL_MISMATCH naming both.
 */
export const PROTOCOL_VERSION = 1;

/** Line cap for the NDJSON transport unless the daemon is configured otherwise. */
export const DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024;

export const METHODS = {
  'daemon.hello': { params: D.HelloParams, result: D.HelloResult },
  'daemon.status': { params: D.StatusParams, result: D.StatusResult },
  'daemon.shutdown': { params: D.ShutdownParams, result: D.ShutdownResult },
  'session.record': { params: S.RecordParams, result: S.RecordResult },
  'session.list': { params: S.ListSessionsParams, result: S.ListSessionsResult },
  'session.get': { params: S.GetSessionParams, result: S.GetSessionResult },
  'session.end': { params: S.EndSessionParams, result: S.EndSessionResult },
  'window.freeze': { params: W.FreezeParams, result: W.FreezeResult },
  'window.thaw': { params: W.ThawParams, result: W.ThawResult },
  'window.clone': { params: W.CloneParams, result: W.CloneResult },
  'window.delete': { params: W.DeleteParams, result: W.DeleteResult },
  'window.list': { params: W.ListWindowsParams, result: W.ListWindowsResult },
  'window.get': { params: W.GetWindowParams, result: W.GetWindowResult },
  'window.export': { params: O.ExportParams, result: O.ExportResult },
  'window.import': { params: O.ImportParams, result: O.ImportResult },
  'autofreeze.get': { params: O.AutoFreezeGetParams, result: O.AutoFreezeGetResult },
  'autofreeze.set': { params: O.AutoFreezeSetParams, result: O.AutoFreezeSetResult },
  'audit.list': { params: O.AuditListParams, result: O.AuditListResult },
  'config.show': { params: O.ConfigShowParams, result: O.ConfigShowResult },
  'cache.stats': { params: O.CacheStatsParams, result: O.CacheStatsResult },
  'health.check': { params: O.HealthParams, result: O.HealthResult },
  'registry.check': { params: O.RegistryCheckParams, result: O.RegistryCheckResult },
} as const satisfies Record<string, { params: z.ZodType; result: z.ZodType }>;

export type MethodName = keyof typeof METHODS;
/** What a caller may send (defaults not yet applied). */
export type ParamsOf<M extends MethodName> = z.input<(typeof METHODS)[M]['params']>;
/** What a handler receives (after parsing, defaults applied). */
export type ParsedParamsOf<M extends MethodName> = z.output<(typeof METHODS)[M]['params']>;
export type ResultOf<M extends MethodName> = z.output<(typeof METHODS)[M]['result']>;

export function isMethodName(name: string): name is MethodName {
  return Object.hasOwn(METHODS, name);
}

export * as DaemonSchemas from './daemon.js';
export type { AuditEvent, AutoFreezePolicy } from './ops.js';
export * as OpsSchemas from './ops.js';
export type { ChatMessage, SessionInfo, SessionState, Usage } from './session.js';
export * as SessionSchemas from './session.js';
export type { Fingerprint, Residency, WindowInfo } from './window.js';
export * as WindowSchemas from './window.js';
