/**
 * The one error model. Every failure that crosses a boundary (RPC, CLI, MCP) is a CwmError with a stable
 * string code; the numeric JSON-RPC code is derived from it here and nowhere else.
 */
export const ERROR_CODES = {
  // JSON-RPC's own (transport / request shape)
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  METHOD_NOT_FOUND: -32601,
  INVALID_PARAMS: -32602,
  // application errors: outside -32768..-32000
  INTERNAL: 1000,
  PROTOCOL_MISMATCH: 1001,
  BAD_NAME: 1002,
  SHUTTING_DOWN: 1003,
  UNSUPPORTED: 1004,
  FRAME_TOO_LARGE: 1005,
  SESSION_NOT_FOUND: 1100,
  WINDOW_NOT_FOUND: 1101,
  WINDOW_EXISTS: 1102,
  SESSION_EXISTS: 1103,
  INVALID_STATE: 1104,
  MODEL_MISMATCH: 1105,
  CONFIG_INVALID: 1106,
  ENGINE_UNAVAILABLE: 2000,
  ENGINE_ERROR: 2001,
  ENGINE_TIMEOUT: 2002,
  ENGINE_REJECTED: 2003,
  LMCACHE_UNAVAILABLE: 2004,
  STATE_FILE_INVALID: 2005,
  STORAGE_ERROR: 3000,
  DISK_FULL: 3001,
  REGISTRY_CORRUPT: 3002,
  BUNDLE_INVALID: 3003,
  // client-side only (never sent by the daemon, but shared so CLI and shim print them the same way)
  NOT_RUNNING: 5000,
  PERMISSION_DENIED: 5001,
  TIMEOUT: 5002,
  CONNECTION_LOST: 5003,
} as const;

export type ErrorName = keyof typeof ERROR_CODES;

const BY_NUMBER = new Map<number, ErrorName>(
  (Object.entries(ERROR_CODES) as [ErrorName, number][]).map(([name, code]) => [code, name]),
);

export interface CwmErrorData {
  name: ErrorName;
  retryable: boolean;
  hint: string | null;
  details?: Record<string, unknown>;
}

export interface CwmErrorOptions {
  hint?: string | null;
  retryable?: boolean;
  details?: Record<string, unknown>;
  cause?: unknown;
}

const RETRYABLE_BY_DEFAULT: ReadonlySet<ErrorName> = new Set<ErrorName>([
  'SHUTTING_DOWN',
  'ENGINE_UNAVAILABLE',
  'ENGINE_TIMEOUT',
  'LMCACHE_UNAVAILABLE',
  'TIMEOUT',
  'CONNECTION_LOST',
]);

export class CwmError extends Error {
  readonly code: ErrorName;
  readonly hint: string | null;
  readonly retryable: boolean;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorName, message: string, opts: CwmErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'CwmError';
    this.code = code;
    this.hint = opts.hint ?? null;
    this.retryable = opts.retryable ?? RETRYABLE_BY_DEFAULT.has(code);
    this.details = opts.details;
  }

  get rpcCode(): number {
    return ERROR_CODES[this.code];
  }

  toData(): CwmErrorData {
    const data: CwmErrorData = { name: this.code, retryable: this.retryable, hint: this.hint };
    if (this.details !== undefined) data.details = this.details;
    return data;
  }

  /** Rebuild from a JSON-RPC error object (client side). Unknown shapes become INTERNAL, never lost. */
  static fromRpc(err: { code: number; message: string; data?: unknown }): CwmError {
    const data = isRecord(err.data) ? err.data : {};
    const named = typeof data.name === 'string' && data.name in ERROR_CODES ? (data.name as ErrorName) : undefined;
    const code = named ?? BY_NUMBER.get(err.code) ?? 'INTERNAL';
    const opts: CwmErrorOptions = {
      hint: typeof data.hint === 'string' ? data.hint : null,
      retryable: typeof data.retryable === 'boolean' ? data.retryable : RETRYABLE_BY_DEFAULT.has(code),
    };
    if (isRecord(data.details)) opts.details = data.details;
    return new CwmError(code, err.message, opts);
  }
}

export function isCwmError(e: unknown): e is CwmError {
  return e instanceof CwmError;
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
