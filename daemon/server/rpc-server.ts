import net from 'node:net';
import { createJSONRPCErrorResponse, type JSONRPCResponse, JSONRPCServer } from 'json-rpc-2.0';
import type { Logger } from 'pino';
import { z } from 'zod';
import {
  CwmError,
  ERROR_CODES,
  isCwmError,
  isRecord,
  METHODS,
  type MethodName,
  type ParsedParamsOf,
  type ResultOf,
} from '../protocol/index.js';
import { type Frame, LineDecoder } from './framing.js';

export interface RpcContext {
  connId: number;
  log: Logger;
}

export type Handler<M extends MethodName> = (
  params: ParsedParamsOf<M>,
  ctx: RpcContext,
) => Promise<ResultOf<M>> | ResultOf<M>;
export type Handlers = { [M in MethodName]?: Handler<M> };

export interface RpcServerOptions {
  maxLineBytes: number;
  log: Logger;
  /** In-flight requests per connection before the daemon stops reading from it (back-pressure, bounded memory). */
  maxInFlightPerConnection?: number;
  /** A partial line that does not complete within this time closes the connection (slow-trickle defence). */
  partialLineTimeoutMs?: number;
  /** Called after each call; `method` is a registered method name or "unknown" (a bounded metric label). */
  onCall?: (method: string, seconds: number, ok: boolean) => void;
}

interface Conn {
  id: number;
  sock: net.Socket;
  inFlight: number;
  closing: boolean;
  trickleTimer: NodeJS.Timeout | null;
}

export class RpcServer {
  private readonly rpc = new JSONRPCServer<RpcContext>({ errorListener: () => {} });
  private readonly server: net.Server;
  private readonly conns = new Set<Conn>();
  private nextConnId = 1;
  private inFlightTotal = 0;
  private idleWaiters: (() => void)[] = [];
  private accepting = true;

  constructor(
    handlers: Handlers,
    private readonly opts: RpcServerOptions,
  ) {
    for (const name of Object.keys(handlers) as MethodName[]) this.register(name, handlers);
    this.rpc.mapErrorToJSONRPCErrorResponse = (id, error: unknown) => {
      const e = toCwmError(error, opts.log);
      return createJSONRPCErrorResponse(id, e.rpcCode, e.message, e.toData());
    };
    const known = Object.keys(handlers).sort();
    this.rpc.handleMethodNotFound = async (request) =>
      request.id === undefined
        ? null
        : createJSONRPCErrorResponse(request.id, ERROR_CODES.METHOD_NOT_FOUND, `Method not found: ${request.method}`, {
            name: 'METHOD_NOT_FOUND',
            retryable: false,
            hint: `known methods: ${known.join(', ')}`,
          });
    if (opts.onCall) {
      const onCall = opts.onCall;
      this.rpc.applyMiddleware(async (next, request, ctx) => {
        const t0 = process.hrtime.bigint();
        const res = await next(request, ctx);
        // Never a caller's string as a label: every unknown name would add a metric series (unbounded memory).
        const method = Object.hasOwn(handlers, request.method) ? request.method : 'unknown';
        onCall(method, Number(process.hrtime.bigint() - t0) / 1e9, !res || !('error' in res));
        return res;
      });
    }
    this.server = net.createServer({ pauseOnConnect: false }, (sock) => this.accept(sock));
  }

  private register<M extends MethodName>(name: M, handlers: Handlers): void {
    const handler = handlers[name] as Handler<M> | undefined;
    if (!handler) return;
    const schema = METHODS[name].params as unknown as z.ZodType<ParsedParamsOf<M>>;
    this.rpc.addMethod(name, async (raw, ctx) => {
      if (Array.isArray(raw)) {
        throw new CwmError('INVALID_PARAMS', `${name} takes named params (an object), not an array`, {
          hint: 'send "params": {...}; see docs/PROTOCOL.md',
        });
      }
      const parsed = schema.safeParse(raw ?? undefined);
      if (!parsed.success) {
        throw new CwmError('INVALID_PARAMS', `invalid params for ${name}: ${z.prettifyError(parsed.error)}`, {
          hint: 'see docs/PROTOCOL.md for the method params',
          details: { issues: parsed.error.issues.map((i) => ({ path: i.path.map(String), message: i.message })) },
        });
      }
      return handler(parsed.data, ctx);
    });
  }

  get connectionCount(): number {
    return this.conns.size;
  }

  get inFlight(): number {
    return this.inFlightTotal;
  }

  /** Listen on a path (Unix socket / named pipe) or an inherited listening fd (socket activation). */
  listen(target: { path: string } | { fd: number }): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.server.once('error', onError);
      const done = () => {
        this.server.off('error', onError);
        this.server.on('error', (err) => this.opts.log.error({ err }, 'rpc server error'));
        resolve();
      };
      if ('fd' in target) this.server.listen({ fd: target.fd }, done);
      else this.server.listen({ path: target.path, readableAll: false, writableAll: false }, done);
    });
  }

  /** Stop accepting, let in-flight calls finish (bounded), then close every connection. */
  async close(graceMs: number): Promise<{ unfinished: number }> {
    this.accepting = false;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (this.inFlightTotal > 0) {
      await Promise.race([
        new Promise<void>((resolve) => this.idleWaiters.push(resolve)),
        new Promise<void>((resolve) => setTimeout(resolve, graceMs).unref()),
      ]);
    }
    const unfinished = this.inFlightTotal;
    for (const c of this.conns) c.sock.destroy();
    await closed;
    return { unfinished };
  }

  private accept(sock: net.Socket): void {
    if (!this.accepting) {
      sock.destroy();
      return;
    }
    const conn: Conn = { id: this.nextConnId++, sock, inFlight: 0, closing: false, trickleTimer: null };
    this.conns.add(conn);
    const decoder = new LineDecoder(this.opts.maxLineBytes);
    const log = this.opts.log.child({ conn: conn.id });
    sock.on('data', (chunk: Buffer) => {
      if (conn.closing) return;
      for (const frame of decoder.push(chunk)) {
        if (!this.onFrame(conn, frame, log)) break;
      }
      this.armTrickleTimer(conn, decoder.pendingBytes > 0);
    });
    sock.on('error', (err) => log.debug({ err }, 'connection error'));
    sock.on('close', () => {
      if (conn.trickleTimer) clearTimeout(conn.trickleTimer);
      this.conns.delete(conn);
    });
  }

  private armTrickleTimer(conn: Conn, partial: boolean): void {
    const ms = this.opts.partialLineTimeoutMs;
    if (!ms) return;
    if (conn.trickleTimer) {
      clearTimeout(conn.trickleTimer);
      conn.trickleTimer = null;
    }
    if (partial && !conn.closing) {
      conn.trickleTimer = setTimeout(() => {
        this.fail(conn, null, ERROR_CODES.INVALID_REQUEST, `incomplete line: no newline within ${ms} ms`, {
          name: 'INVALID_PARAMS',
          retryable: false,
          hint: 'every JSON-RPC message must end with "\\n"',
        });
      }, ms);
      conn.trickleTimer.unref();
    }
  }

  /** Returns false when the connection is being closed and no further frames should be handled. */
  private onFrame(conn: Conn, frame: Frame, log: Logger): boolean {
    if (frame.kind === 'too-large') {
      log.warn({ bytes: frame.bytes, max: this.opts.maxLineBytes }, 'oversized frame, closing connection');
      this.fail(
        conn,
        null,
        ERROR_CODES.INVALID_REQUEST,
        `message exceeds the ${this.opts.maxLineBytes}-byte line limit`,
        {
          name: 'FRAME_TOO_LARGE',
          retryable: false,
          hint: 'split the request or raise the daemon limit (--max-line-bytes / CWM_MAX_LINE_BYTES)',
        },
      );
      return false;
    }
    if (frame.kind === 'invalid-utf8') {
      this.fail(conn, null, ERROR_CODES.PARSE_ERROR, 'Parse error: the line is not valid UTF-8', {
        name: 'PARSE_ERROR',
        retryable: false,
        hint: 'send UTF-8 encoded JSON, one message per line',
      });
      return false;
    }
    if (frame.text.trim() === '') return true;
    let message: unknown;
    try {
      message = JSON.parse(frame.text);
    } catch (err) {
      this.fail(conn, null, ERROR_CODES.PARSE_ERROR, `Parse error: ${(err as Error).message}`, {
        name: 'PARSE_ERROR',
        retryable: false,
        hint: 'send one complete JSON-RPC 2.0 object per line',
      });
      return false;
    }
    this.dispatch(conn, message, log);
    return true;
  }

  private dispatch(conn: Conn, message: unknown, log: Logger): void {
    conn.inFlight++;
    this.inFlightTotal++;
    if (conn.inFlight >= (this.opts.maxInFlightPerConnection ?? 4096)) conn.sock.pause();
    let promise: PromiseLike<JSONRPCResponse | JSONRPCResponse[] | null>;
    try {
      const ctx = { connId: conn.id, log };
      if (Array.isArray(message)) {
        // A batch: each member checked on its own; an empty or oversized batch is one Invalid Request.
        if (message.length === 0 || message.length > MAX_BATCH) {
          promise = Promise.resolve(invalidRequest(null, message.length === 0 ? 'empty batch' : 'batch too large'));
        } else {
          promise = Promise.all(message.map((m) => this.receiveOne(m, ctx))).then((all) => {
            const answers = all.filter((r): r is JSONRPCResponse => r !== null);
            return answers.length === 0 ? null : answers;
          });
        }
      } else {
        promise = this.receiveOne(message, ctx);
      }
    } catch (err) {
      promise = Promise.resolve(
        createJSONRPCErrorResponse(null, ERROR_CODES.INVALID_REQUEST, `Invalid Request: ${(err as Error).message}`),
      );
    }
    Promise.resolve(promise)
      .then(
        (res) => {
          if (res && !(Array.isArray(res) && res.length === 0)) this.write(conn, res);
        },
        (err: unknown) => log.error({ err }, 'dispatch failed'),
      )
      .finally(() => {
        conn.inFlight--;
        this.inFlightTotal--;
        if (conn.sock.isPaused() && !conn.closing && conn.inFlight < (this.opts.maxInFlightPerConnection ?? 4096)) {
          conn.sock.resume();
        }
        if (conn.closing && conn.inFlight === 0) conn.sock.end();
        if (this.inFlightTotal === 0) {
          const waiters = this.idleWaiters;
          this.idleWaiters = [];
          for (const w of waiters) w();
        }
      });
  }

  /**
   * One request. Its shape is checked here before the library sees it: json-rpc-2.0 throws on `null` (so the caller
   * got no answer at all) and echoes an id of any type; JSON-RPC 2.0 wants -32600 with a string, number or null id.
   */
  private receiveOne(message: unknown, ctx: RpcContext): PromiseLike<JSONRPCResponse | null> {
    const problem = requestProblem(message);
    if (problem !== null) {
      const id = isRecord(message) && isRpcId(message.id) ? message.id : null;
      return Promise.resolve(invalidRequest(id, problem));
    }
    // biome-ignore lint/suspicious/noExplicitAny: the shape was checked just above
    return this.rpc.receive(message as any, ctx) as PromiseLike<JSONRPCResponse | null>;
  }

  private write(conn: Conn, res: JSONRPCResponse | JSONRPCResponse[]): void {
    if (conn.sock.destroyed || conn.sock.writableEnded) return;
    let line: string;
    try {
      line = `${JSON.stringify(res)}\n`;
    } catch (err) {
      const id = Array.isArray(res) ? null : res.id;
      line = `${JSON.stringify(createJSONRPCErrorResponse(id, ERROR_CODES.INTERNAL, `result could not be serialised: ${(err as Error).message}`, { name: 'INTERNAL', retryable: false, hint: null }))}\n`;
    }
    conn.sock.write(line);
  }

  /** Answer a framing-level error, stop reading, and close once in-flight calls on this connection are answered. */
  private fail(conn: Conn, id: null, code: number, message: string, data: Record<string, unknown>): void {
    if (conn.closing) return;
    conn.closing = true;
    if (conn.trickleTimer) clearTimeout(conn.trickleTimer);
    this.write(conn, createJSONRPCErrorResponse(id, code, message, data));
    conn.sock.pause();
    if (conn.inFlight === 0) conn.sock.end();
    // A peer that never reads must not hold the connection open forever.
    setTimeout(() => conn.sock.destroy(), 5000).unref();
  }
}

/** Requests per batch line; more is refused whole (each member would be a call in flight). */
const MAX_BATCH = 1000;

function isRpcId(id: unknown): id is string | number | null {
  return typeof id === 'string' || (typeof id === 'number' && Number.isFinite(id)) || id === null;
}

/** Why a decoded message is not a JSON-RPC 2.0 request, or null when it is one. */
function requestProblem(m: unknown): string | null {
  if (!isRecord(m)) return 'a request must be a JSON object';
  if (m.jsonrpc !== '2.0') return '"jsonrpc" must be "2.0"';
  if (typeof m.method !== 'string') return '"method" must be a string';
  if ('id' in m && !isRpcId(m.id)) return '"id" must be a string, a number or null';
  if ('result' in m || 'error' in m) return 'a request has no "result" or "error"';
  if ('params' in m && (typeof m.params !== 'object' || m.params === null)) return '"params" must be an object';
  return null;
}

function invalidRequest(id: string | number | null, why: string): JSONRPCResponse {
  return createJSONRPCErrorResponse(id, ERROR_CODES.INVALID_REQUEST, `Invalid Request: ${why}`, {
    name: 'INVALID_REQUEST',
    retryable: false,
    hint: 'send {"jsonrpc":"2.0","id":1,"method":"...","params":{...}}, one per line; see docs/PROTOCOL.md',
  });
}

export function toCwmError(error: unknown, log?: Logger): CwmError {
  if (isCwmError(error)) return error;
  const err = error instanceof Error ? error : new Error(String(error));
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC') {
    return new CwmError('DISK_FULL', `the disk is full: ${err.message}`, {
      hint: 'free space on the data dir volume, then retry; nothing was changed',
      retryable: true,
    });
  }
  if (code === 'EACCES' || code === 'EPERM') {
    return new CwmError('STORAGE_ERROR', `permission denied: ${err.message}`, {
      hint: 'check ownership and modes of the data dir',
    });
  }
  log?.error({ err }, 'unexpected error');
  return new CwmError('INTERNAL', `internal error: ${err.message}`, {
    hint: 'this is a bug in cwmd; the daemon log has the stack trace',
  });
}
