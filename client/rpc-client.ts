import net from 'node:net';
import { createJSONRPCErrorResponse, JSONRPCClient, JSONRPCErrorException } from 'json-rpc-2.0';
import { resolvePaths } from '../daemon/paths.js';
import {
  CwmError,
  DEFAULT_MAX_LINE_BYTES,
  type MethodName,
  type ParamsOf,
  PROTOCOL_VERSION,
  type ResultOf,
} from '../daemon/protocol/index.js';
import { LineDecoder } from '../daemon/server/framing.js';

export interface ConnectOptions {
  socket?: string | undefined;
  /** Connect + hello timeout. */
  connectTimeoutMs?: number;
  /** Default per-call timeout (0 = none). */
  callTimeoutMs?: number;
  client?: { name: string; version: string };
  /** Skip the daemon.hello handshake (only for probes and tests of the handshake itself). */
  hello?: boolean;
}

export function defaultSocket(): string {
  return resolvePaths().socket;
}

export function notRunning(socket: string): CwmError {
  return new CwmError('NOT_RUNNING', `cwmd is not running on ${socket}`, {
    hint: 'start it with `cwm daemon start`',
    retryable: true,
  });
}

function connectError(socket: string, err: NodeJS.ErrnoException): CwmError {
  if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') return notRunning(socket);
  if (err.code === 'EACCES' || err.code === 'EPERM') {
    return new CwmError('PERMISSION_DENIED', `permission denied connecting to ${socket}`, {
      hint: 'the socket belongs to another user; run as that user, or start your own daemon with another --socket',
    });
  }
  return new CwmError('CONNECTION_LOST', `cannot connect to cwmd on ${socket}: ${err.message}`, {
    hint: 'check the socket path (--socket / CWM_SOCKET); `cwm doctor` explains more',
  });
}

/** A typed JSON-RPC client for cwmd over one connection; many calls may be in flight at once. */
export class CwmClient {
  private readonly rpc: JSONRPCClient;
  private closed = false;
  hello: ResultOf<'daemon.hello'> | null = null;

  private constructor(
    private readonly sock: net.Socket,
    readonly socket: string,
    private readonly callTimeoutMs: number,
  ) {
    this.rpc = new JSONRPCClient((payload) => {
      if (this.closed) throw new Error(NOT_SENT);
      sock.write(`${JSON.stringify(payload)}\n`);
    });
    const decoder = new LineDecoder(DEFAULT_MAX_LINE_BYTES * 4);
    sock.on('data', (chunk: Buffer) => {
      for (const frame of decoder.push(chunk)) {
        if (frame.kind !== 'line' || frame.text === '') continue;
        try {
          this.rpc.receive(JSON.parse(frame.text));
        } catch {
          // a line we cannot read is not ours to answer; the pending call will time out or fail on close
        }
      }
    });
    sock.on('close', () => {
      this.closed = true;
      this.rpc.rejectAllPendingRequests('CONNECTION_LOST: cwmd closed the connection');
    });
    sock.on('error', () => {});
  }

  static async connect(opts: ConnectOptions = {}): Promise<CwmClient> {
    const socket = opts.socket ?? defaultSocket();
    const timeout = opts.connectTimeoutMs ?? 5000;
    const sock = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect(socket);
      const timer = setTimeout(() => {
        s.destroy();
        reject(
          new CwmError('TIMEOUT', `cwmd on ${socket} did not accept the connection within ${timeout} ms`, {
            hint: 'is the daemon stuck? see its log',
          }),
        );
      }, timeout);
      s.once('connect', () => {
        clearTimeout(timer);
        resolve(s);
      });
      s.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(connectError(socket, err));
      });
    });
    const client = new CwmClient(sock, socket, opts.callTimeoutMs ?? 0);
    if (opts.hello !== false) {
      try {
        client.hello = await client.call(
          'daemon.hello',
          { protocolVersion: PROTOCOL_VERSION, ...(opts.client ? { client: opts.client } : {}) },
          { timeoutMs: timeout },
        );
      } catch (err) {
        client.close();
        throw err;
      }
    }
    return client;
  }

  async call<M extends MethodName>(
    method: M,
    params?: ParamsOf<M>,
    opts: { timeoutMs?: number } = {},
  ): Promise<ResultOf<M>> {
    const timeoutMs = opts.timeoutMs ?? this.callTimeoutMs;
    const requester =
      timeoutMs > 0
        ? this.rpc.timeout(timeoutMs, (id) => createJSONRPCErrorResponse(id, 0, `TIMEOUT:${timeoutMs}`))
        : this.rpc;
    try {
      return (await requester.request(method, params)) as ResultOf<M>;
    } catch (err) {
      throw toClientError(err, method, this.socket);
    }
  }

  close(): void {
    this.closed = true;
    this.sock.end();
    this.sock.destroy();
  }
}

/** Marks a request that was never written because the connection had already closed. */
const NOT_SENT = 'CONNECTION_NOT_SENT';

/**
 * A closed connection is CONNECTION_LOST either way; `details.sent` tells a request that never left (safe to resend)
 * from one that was in flight (it may have run).
 */
function toClientError(err: unknown, method: string, socket: string): CwmError {
  if (err instanceof CwmError) return err;
  const text = err instanceof Error ? err.message : String(err);
  if (text.includes(NOT_SENT)) {
    return new CwmError('CONNECTION_LOST', `the connection to cwmd on ${socket} was closed; ${method} was not sent`, {
      hint: 'reconnect and retry; check `cwm daemon status`',
      details: { sent: false },
    });
  }
  if (text.includes('CONNECTION_LOST')) {
    return new CwmError('CONNECTION_LOST', `cwmd on ${socket} closed the connection during ${method}`, {
      hint: 'the daemon may have stopped or restarted; check `cwm daemon status` (the call may or may not have run)',
      details: { sent: true },
    });
  }
  if (err instanceof JSONRPCErrorException) {
    if (err.code === 0 && err.message.startsWith('TIMEOUT:')) {
      return new CwmError('TIMEOUT', `${method} did not finish within ${err.message.slice(8)} ms`, {
        hint: 'the daemon may still complete it; check with `cwm status` or the log',
      });
    }
    return CwmError.fromRpc({ code: err.code, message: err.message, data: err.data });
  }
  return new CwmError('INTERNAL', text, { hint: null });
}

/** Connect, make one call, close. */
export async function callOnce<M extends MethodName>(
  method: M,
  params?: ParamsOf<M>,
  opts: ConnectOptions & { timeoutMs?: number } = {},
): Promise<ResultOf<M>> {
  const c = await CwmClient.connect(opts);
  try {
    return await c.call(method, params, opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {});
  } finally {
    c.close();
  }
}
