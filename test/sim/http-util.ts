import type { IncomingMessage, ServerResponse } from 'node:http';

const MAX_BODY_BYTES = 256 * 1024 * 1024;

/** An error that maps to one HTTP response. */
export class HttpError extends Error {
  readonly status: number;
  readonly body: unknown;

  constructor(status: number, body: unknown, message?: string) {
    super(message ?? `HTTP ${status}`);
    this.name = 'HttpError';
    this.status = status;
    this.body = body;
  }
}

/** vLLM V1 error body: {"error":{"message","type","param","code"}}. */
export function vllmError(status: number, message: string, type: string, param: string | null = null): HttpError {
  return new HttpError(status, { error: { message, type, param, code: status } }, message);
}

export function badRequest(message: string, param: string | null = null): HttpError {
  return vllmError(400, message, 'BadRequestError', param);
}

export function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        reject(new HttpError(413, { detail: 'Request body too large' }));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

export function parseJson(buf: Buffer, onError: (msg: string) => HttpError): unknown {
  if (buf.length === 0) throw onError('Request body is empty; expected JSON');
  try {
    return JSON.parse(buf.toString('utf8')) as unknown;
  } catch (e) {
    throw onError(`JSON decode error: ${e instanceof Error ? e.message : String(e)}`);
  }
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Writes one response, honouring the 'reset-mid-stream' fault: with `reset` set, a JSON/text body is cut
 * in half and an SSE stream is cut after half of its token chunks, by destroying the socket.
 */
export class Responder {
  readonly res: ServerResponse;
  reset = false;
  /** SSE token chunks after which the socket is destroyed when `reset` (set by the stream writer). */
  resetAfterChunks = 1;
  private sseChunks = 0;

  constructor(res: ServerResponse) {
    this.res = res;
  }

  get closed(): boolean {
    return this.res.destroyed || this.res.writableEnded;
  }

  send(status: number, body: string | Buffer, contentType: string, extra: Record<string, string> = {}): void {
    if (this.closed) return;
    if (this.res.headersSent) {
      this.res.destroy();
      return;
    }
    const buf = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
    this.res.writeHead(status, { 'content-type': contentType, 'content-length': String(buf.length), ...extra });
    if (this.reset && buf.length > 0) {
      this.res.write(buf.subarray(0, Math.max(1, Math.floor(buf.length / 2))));
      this.destroySoon();
      return;
    }
    this.res.end(buf);
  }

  json(status: number, obj: unknown): void {
    this.send(status, JSON.stringify(obj), 'application/json');
  }

  empty(status: number): void {
    if (this.closed) return;
    this.res.writeHead(status, { 'content-length': '0' });
    this.res.end();
  }

  error(e: HttpError): void {
    this.json(e.status, e.body);
  }

  startSse(): void {
    if (this.closed) return;
    this.res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
    });
    this.res.flushHeaders();
  }

  /** One `data: {json}\n\n` event; returns false once the stream is gone. */
  sse(obj: unknown, isTokenChunk: boolean): boolean {
    if (this.closed) return false;
    this.res.write(`data: ${JSON.stringify(obj)}\n\n`);
    if (isTokenChunk) {
      this.sseChunks++;
      if (this.reset && this.sseChunks >= this.resetAfterChunks) {
        this.destroySoon();
        return false;
      }
    }
    return true;
  }

  endSse(): void {
    if (this.closed) return;
    this.res.end('data: [DONE]\n\n');
  }

  /** Destroy the socket without a proper end (after already-written bytes are flushed). */
  destroySoon(): void {
    const sock = this.res.socket;
    if (sock === null) {
      this.res.destroy();
      return;
    }
    sock.write('', () => sock.destroy());
  }
}
