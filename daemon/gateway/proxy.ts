import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import type { Capture } from './capture.js';
import { errorBody } from './errors.js';
import { UsageStripper } from './sse.js';

/** Hop-by-hop headers (RFC 9110 §7.6.1) never cross the gateway; content-length is recomputed when needed. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'transfer-encoding',
  'upgrade',
  'te',
  'trailer',
]);

export interface ForwardInput {
  dispatcher: Dispatcher;
  method: string;
  path: string;
  headers: Record<string, string | string[]>;
  body: Buffer | Readable | null;
  res: ServerResponse;
  /** Remove the usage-only SSE chunk (the gateway asked for it, the client did not). */
  stripUsage: boolean;
  /** Keep a copy of a successful response's bytes for recording. */
  capture: Capture | null;
  engineUrl: string;
  timeoutMs: number;
}

export interface ForwardResult {
  status: number;
  /** The response reached the client completely. */
  complete: boolean;
  /** The upstream exchange failed (connection, timeout, reset); status is then the gateway's own 502. */
  upstreamError: Error | null;
  clientGone: boolean;
  /** performance.now() when the first response byte was written to the client. */
  firstByteAt: number | null;
}

/** Client request headers → engine request headers. */
export function upstreamHeaders(
  h: IncomingHttpHeaders,
  opts: { drop: ReadonlySet<string>; set: Record<string, string> },
): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const k in h) {
    if (HOP_BY_HOP.has(k) || opts.drop.has(k)) continue;
    const v = h[k];
    if (v !== undefined) out[k] = v;
  }
  for (const k in opts.set) out[k] = opts.set[k] as string;
  return out;
}

function responseHeaders(h: IncomingHttpHeaders, dropLength: boolean): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const k in h) {
    if (HOP_BY_HOP.has(k) || (dropLength && k === 'content-length')) continue;
    const v = h[k];
    if (v !== undefined) out[k] = v;
  }
  return out;
}

function describe(err: Error): string {
  const code = (err as { code?: string }).code;
  return code ? `${err.message} (${code})` : err.message;
}

/**
 * Forward one request with undici's dispatch API: the response streams to the client chunk by chunk as it
 * arrives, the upstream read pauses while the client socket is full (back-pressure), and a client that goes
 * away aborts the upstream request so the engine stops generating.
 */
export function forward(input: ForwardInput): Promise<ForwardResult> {
  const { res } = input;
  return new Promise<ForwardResult>((resolve) => {
    let controller: Dispatcher.DispatchController | null = null;
    let clientGone = false;
    let settled = false;
    let status = 0;
    let firstByteAt: number | null = null;
    let stripper: UsageStripper | null = null;
    let capture: Capture | null = null;
    let waitingDrain = false;
    const finish = (r: Omit<ForwardResult, 'clientGone' | 'firstByteAt'>) => {
      if (settled) return;
      settled = true;
      res.off('close', onClose);
      resolve({ ...r, clientGone, firstByteAt });
    };
    const onClose = () => {
      if (res.writableFinished) return;
      clientGone = true;
      controller?.abort(new Error('the client disconnected'));
    };
    res.on('close', onClose);
    const onDrain = () => {
      waitingDrain = false;
      controller?.resume();
    };
    // undici hands over one body chunk per HTTP chunk, and an engine that is ahead of its client has many in one
    // socket read: they are gathered and written once, in a microtask that runs as soon as that read has been
    // parsed (no timer, no added latency). One write per read instead of one per event was most of the gateway's
    // CPU with a fast engine. (Not res.cork(): on Node 24 a corked chunked response after flushHeaders() arrived
    // with an empty body.)
    let batch: Buffer[] = [];
    let flushQueued = false;
    /** An event stream's headers go out at once, but with its first event when that came in the same read. */
    let headersPending = false;
    const queueFlush = () => {
      if (!flushQueued) {
        flushQueued = true;
        queueMicrotask(flush);
      }
    };
    /** Everything gathered, as one buffer (null when nothing is). */
    const take = (): Buffer | null => {
      const buf = batch.length === 0 ? null : batch.length === 1 ? (batch[0] as Buffer) : Buffer.concat(batch);
      batch = [];
      return buf;
    };
    const flush = () => {
      flushQueued = false;
      const buf = take();
      if (clientGone) return;
      if (buf === null) {
        if (headersPending) res.flushHeaders();
        headersPending = false;
        return;
      }
      headersPending = false;
      if (!res.write(buf) && !waitingDrain) {
        waitingDrain = true;
        controller?.pause();
        res.once('drain', onDrain);
      }
    };
    const write = (buf: Buffer) => {
      firstByteAt ??= performance.now();
      batch.push(buf);
      queueFlush();
    };

    const handler: Dispatcher.DispatchHandler = {
      onRequestStart(c) {
        controller = c;
        if (clientGone) c.abort(new Error('the client disconnected'));
      },
      onResponseStart(_c, statusCode, headers, statusMessage) {
        if (statusCode < 200) return;
        status = statusCode;
        const ok = statusCode >= 200 && statusCode < 300;
        const ctype = String(headers['content-type'] ?? '');
        const sse = ctype.startsWith('text/event-stream');
        stripper = ok && sse && input.stripUsage ? new UsageStripper() : null;
        capture = ok ? input.capture : null;
        if (clientGone) return;
        const out = responseHeaders(headers, stripper !== null);
        if (statusMessage) res.writeHead(statusCode, statusMessage, out);
        else res.writeHead(statusCode, out);
        if (sse) {
          headersPending = true;
          firstByteAt ??= performance.now();
          queueFlush();
        }
      },
      onResponseData(_c, chunk) {
        if (clientGone) return;
        capture?.push(chunk);
        if (stripper) {
          const out = stripper.push(chunk);
          if (out !== null && out.length > 0) write(out);
        } else {
          write(chunk);
        }
      },
      onResponseEnd() {
        if (!clientGone) {
          const tail = stripper?.flush();
          if (tail) batch.push(tail);
          // Whatever is still gathered goes out with the end of the response, in the same write.
          const rest = take();
          if (rest) res.end(rest);
          else res.end();
        }
        finish({ status, complete: !clientGone, upstreamError: null });
      },
      onResponseError(_c, err) {
        if (clientGone) {
          finish({ status, complete: false, upstreamError: null });
          return;
        }
        if (!res.headersSent) {
          const body = errorBody(
            502,
            `cwm gateway: the engine at ${input.engineUrl} failed: ${describe(err)}`,
            'BadGatewayError',
          );
          res.writeHead(502, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
          res.end(body);
          finish({ status: 502, complete: true, upstreamError: err });
          return;
        }
        // Mid-stream: the status is out already. What arrived before the failure still goes to the client, then the
        // connection is cut so the client sees an incomplete response.
        flush();
        res.destroy(err);
        finish({ status, complete: false, upstreamError: err });
      },
    };

    try {
      input.dispatcher.dispatch(
        {
          method: input.method,
          path: input.path,
          headers: input.headers,
          body: input.body,
          headersTimeout: input.timeoutMs,
          bodyTimeout: input.timeoutMs,
        },
        handler,
      );
    } catch (err) {
      handler.onResponseError?.(controller as unknown as Dispatcher.DispatchController, err as Error);
    }
  });
}
