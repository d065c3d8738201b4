import { type Dispatcher, errors, Pool } from 'undici';
import { CwmError } from '../protocol/index.js';

export interface HttpOptions {
  timeoutMs: number;
  retries: number;
  apiKey?: string | null;
  /** Consecutive failures after which calls fail fast for cooldownMs (circuit breaker). */
  breakerThreshold?: number;
  breakerCooldownMs?: number;
  connections?: number;
  label: string;
  /** Largest answer read (default MAX_RESPONSE_BYTES); a bigger one fails with ENGINE_ERROR. */
  maxResponseBytes?: number;
}

/**
 * Engine answers are read whole, so they are capped: a broken or hostile endpoint could otherwise make the daemon
 * buffer gigabytes. 64 MiB is far above any answer cwm asks for (a 128k-token /tokenize answer is under 1 MiB).
 */
export const MAX_RESPONSE_BYTES = 64 * 1024 * 1024;

/** The body as text, refusing (and dropping the connection) past `max` bytes, declared or actually sent. */
async function readCapped(res: Dispatcher.ResponseData, max: number, tooLarge: () => Error): Promise<string> {
  const declared = Number(res.headers['content-length']);
  if (Number.isFinite(declared) && declared > max) {
    res.body.destroy();
    throw tooLarge();
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res.body) {
    size += (chunk as Buffer).length;
    if (size > max) {
      res.body.destroy();
      throw tooLarge();
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks, size).toString('utf8');
}

export interface JsonResponse<T = unknown> {
  status: number;
  body: T;
  ms: number;
}

const RETRYABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_CONNECT_TIMEOUT',
]);

/** A request body that is already JSON text (for bodies built around a large, pre-serialised token list). */
export class RawJson {
  constructor(readonly text: string) {}
}

const tokenJsonCache = new WeakMap<readonly number[], string>();

/**
 * `{...fields, [key]: tokens}` as JSON text. The token list is serialised once per array and reused, because one
 * freeze or thaw sends the same 100k-token prompt to several endpoints (lookup, prefill, pin).
 */
export function jsonWithTokens(fields: Record<string, unknown>, key: string, tokens: readonly number[]): RawJson {
  let t = tokenJsonCache.get(tokens);
  if (t === undefined) {
    t = JSON.stringify(tokens);
    tokenJsonCache.set(tokens, t);
  }
  const head = JSON.stringify(fields);
  return new RawJson(`${head.length > 2 ? `${head.slice(0, -1)},` : '{'}${JSON.stringify(key)}:${t}}`);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Exponential backoff with full jitter: a herd of clients never retries in lock-step. */
export function backoffMs(attempt: number, baseMs = 100, capMs = 5000): number {
  return Math.random() * Math.min(capMs, baseMs * 2 ** attempt);
}

/**
 * JSON over HTTP to one engine origin: keep-alive pool, timeouts, retries with backoff on connection errors and 503,
 * and a circuit breaker so a dead engine is not hammered. Every failure becomes a CwmError naming the engine.
 */
export class EngineHttp {
  readonly pool: Pool;
  private failures = 0;
  private openUntil = 0;
  /** Half-open: after the cooldown one call (the probe) may reach the engine; the others still fail fast. */
  private probing = false;

  constructor(
    readonly origin: string,
    private readonly opts: HttpOptions,
  ) {
    this.pool = new Pool(origin, {
      connections: opts.connections ?? 16,
      keepAliveTimeout: 10_000,
      headersTimeout: opts.timeoutMs,
      bodyTimeout: opts.timeoutMs,
      connectTimeout: Math.min(10_000, opts.timeoutMs),
    });
  }

  get breakerOpen(): boolean {
    return Date.now() < this.openUntil;
  }

  headers(extra: Record<string, string> = {}): Record<string, string> {
    const h: Record<string, string> = { 'content-type': 'application/json', ...extra };
    if (this.opts.apiKey) h.authorization = `Bearer ${this.opts.apiKey}`;
    return h;
  }

  async json<T = unknown>(
    method: 'GET' | 'POST' | 'DELETE',
    path: string,
    body?: unknown,
    opts: { retry?: boolean; timeoutMs?: number; acceptStatus?: (s: number) => boolean } = {},
  ): Promise<JsonResponse<T>> {
    const tripped = this.failures >= (this.opts.breakerThreshold ?? 8);
    if (this.breakerOpen || (tripped && this.probing)) throw this.openError();
    // The first call after the cooldown is the probe: one request, no retries; it closes or re-opens the breaker.
    const probe = tripped;
    if (probe) this.probing = true;
    try {
      return await this.attempts<T>(method, path, body, opts, probe);
    } finally {
      if (probe) this.probing = false;
    }
  }

  private openError(): CwmError {
    return new CwmError('ENGINE_UNAVAILABLE', `${this.opts.label} at ${this.origin} is failing; not retrying for now`, {
      hint: `the last ${this.failures} calls failed; check that it is running (\`cwm doctor\`)`,
      details: { retryAfterMs: Math.max(0, this.openUntil - Date.now()) },
    });
  }

  private async attempts<T>(
    method: 'GET' | 'POST' | 'DELETE',
    path: string,
    body: unknown,
    opts: { retry?: boolean; timeoutMs?: number; acceptStatus?: (s: number) => boolean },
    probe: boolean,
  ): Promise<JsonResponse<T>> {
    const retries = opts.retry === false || probe ? 0 : this.opts.retries;
    const accept = opts.acceptStatus ?? ((s: number) => s < 400);
    let lastErr: CwmError | null = null;
    for (let attempt = 0; attempt <= retries; attempt++) {
      if (attempt > 0) {
        await sleep(backoffMs(attempt - 1));
        // Another caller's failure may have tripped the breaker meanwhile: stop adding to the pile.
        if (this.breakerOpen && lastErr) throw lastErr;
      }
      const t0 = performance.now();
      try {
        const timeout = opts.timeoutMs ?? this.opts.timeoutMs;
        const res = await this.pool.request({
          method,
          path,
          headers: this.headers(),
          body: body === undefined ? null : body instanceof RawJson ? body.text : JSON.stringify(body),
          headersTimeout: timeout,
          bodyTimeout: timeout,
        });
        const max = this.opts.maxResponseBytes ?? MAX_RESPONSE_BYTES;
        const text = await readCapped(res, max, () => this.tooLarge(path, max));
        const ms = performance.now() - t0;
        let parsed: unknown = text;
        if (text !== '') {
          try {
            parsed = JSON.parse(text);
          } catch {
            parsed = text;
          }
        }
        if (res.statusCode === 503 || res.statusCode === 502 || res.statusCode === 504) {
          lastErr = new CwmError(
            'ENGINE_UNAVAILABLE',
            `${this.opts.label} answered ${res.statusCode} on ${path}: ${errorText(parsed)}`,
            {
              hint: 'the engine is overloaded or starting; retry shortly',
            },
          );
          this.noteFailure();
          continue;
        }
        this.failures = 0;
        if (!accept(res.statusCode)) {
          const code = res.statusCode >= 500 ? 'ENGINE_ERROR' : 'ENGINE_REJECTED';
          throw new CwmError(code, `${this.opts.label} answered ${res.statusCode} on ${path}: ${errorText(parsed)}`, {
            hint:
              res.statusCode >= 500 ? 'see the engine log' : 'the engine refused the request; check model and limits',
            details: { status: res.statusCode },
          });
        }
        return { status: res.statusCode, body: parsed as T, ms };
      } catch (err) {
        if (err instanceof CwmError) throw err;
        const e = err as Error & { code?: string };
        if (e instanceof errors.HeadersTimeoutError || e instanceof errors.BodyTimeoutError) {
          this.noteFailure();
          // A timed-out POST may have been processed; retrying is safe only for reads.
          lastErr = new CwmError(
            'ENGINE_TIMEOUT',
            `${this.opts.label} did not answer ${path} within ${opts.timeoutMs ?? this.opts.timeoutMs} ms`,
            {
              hint: 'the engine is slow or stuck; raise engine.timeoutMs or check its load',
            },
          );
          if (method !== 'GET') throw lastErr;
          continue;
        }
        if (e.code && RETRYABLE_CODES.has(e.code)) {
          this.noteFailure();
          lastErr = new CwmError(
            'ENGINE_UNAVAILABLE',
            `cannot reach ${this.opts.label} at ${this.origin} (${e.code})`,
            {
              hint: `is it running? check engine.url / CWM_ENGINE_URL; \`cwm doctor\` tests the connection`,
            },
          );
          continue;
        }
        this.noteFailure();
        throw new CwmError('ENGINE_ERROR', `${this.opts.label} request ${path} failed: ${e.message}`, {
          hint: 'see the daemon log',
          cause: err,
        });
      }
    }
    throw lastErr ?? new CwmError('ENGINE_UNAVAILABLE', `${this.opts.label} unavailable`);
  }

  private tooLarge(path: string, max: number): CwmError {
    return new CwmError('ENGINE_ERROR', `${this.opts.label} answered ${path} with more than ${max} bytes; not read`, {
      hint: 'an engine answer that size is not one cwm asked for: check engine.url points at the engine',
      details: { maxBytes: max },
    });
  }

  private noteFailure(): void {
    this.failures++;
    const threshold = this.opts.breakerThreshold ?? 8;
    if (this.failures >= threshold) this.openUntil = Date.now() + (this.opts.breakerCooldownMs ?? 5000);
  }

  async close(): Promise<void> {
    await this.pool.close();
  }
}

/**
 * Text from an engine made safe to show: control characters replaced (a hostile answer printed by the CLI could
 * otherwise drive the user's terminal with escape sequences) and the length bounded.
 */
export function cleanText(s: string, max = 300): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
  return s.slice(0, max).replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, '\ufffd');
}

/**
 * Token ids from an engine answer: a list of integers in [0, 2^32). Anything else is refused, never stored: a float,
 * a negative, a string or a huge number would otherwise be packed into the registry as a different id.
 */
export function tokenIdsFrom(v: unknown, what: string): number[] {
  if (!Array.isArray(v) || !v.every((t) => Number.isInteger(t) && t >= 0 && t <= 0xffffffff)) {
    throw new CwmError('ENGINE_ERROR', `${what} did not answer with a list of token ids`, {
      hint: 'check that engine.url and engine.kind point at the right server; see the daemon log',
      retryable: false,
    });
  }
  return v as number[];
}

function errorText(body: unknown): string {
  return cleanText(rawErrorText(body));
}

function rawErrorText(body: unknown): string {
  if (typeof body === 'string') return body.slice(0, 300) || '(empty body)';
  if (typeof body === 'object' && body !== null) {
    const b = body as { error?: unknown; message?: unknown; detail?: unknown };
    if (typeof b.error === 'object' && b.error !== null && 'message' in b.error)
      return String((b.error as { message: unknown }).message);
    if (typeof b.error === 'string') return b.error;
    if (typeof b.message === 'string') return b.message;
    if (typeof b.detail === 'string') return b.detail;
  }
  return JSON.stringify(body).slice(0, 300);
}
