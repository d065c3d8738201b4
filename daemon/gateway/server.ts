import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { Pool } from 'undici';
import { CwmError } from '../protocol/index.js';
import type { SessionRecord } from '../registry/records.js';
import { type ServiceContext, saltFor } from '../services/context.js';
import { newLineageRoot } from '../services/salts.js';
import { newSessionRecord, type SessionService } from '../services/sessions.js';
import { bearerOk } from './auth.js';
import { Capture, replyFromJson, replyFromSse } from './capture.js';
import { GatewayError, sendError } from './errors.js';
import { checkLoopback, urlOf } from './listen.js';
import { type ForwardResult, forward, upstreamHeaders } from './proxy.js';
import { Recorder } from './recorder.js';
import { rewriteRequest } from './rewrite.js';
import { type Route, type RouteLabel, resolveRoute, SESSION_HEADER } from './routing.js';

/** Largest session request body the gateway parses (passthrough bodies are streamed, never held). */
const MAX_BODY_BYTES = 64 * 1024 * 1024;
/** Largest response kept for recording; a bigger one is forwarded but not recorded. */
const MAX_CAPTURE_BYTES = 32 * 1024 * 1024;
/** Upstream header/body timeouts: generous, since a non-streaming completion only answers when it is done. */
const UPSTREAM_TIMEOUT_MS = 600_000;
const PENDING_LINEAGE_MAX = 10_000;
/** Session records are re-read from the registry at most this often per session (the salt never changes). */
const SESSION_CACHE_MS = 1000;
const SESSION_CACHE_MAX = 10_000;

export interface GatewayDeps {
  ctx: ServiceContext;
  sessions: SessionService;
  log: Logger;
}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        req.pause();
        reject(new GatewayError(413, `the request body is larger than ${limit} bytes`, 'BadRequestError'));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function hasBody(req: IncomingMessage): boolean {
  const len = req.headers['content-length'];
  return (len !== undefined && len !== '0') || req.headers['transfer-encoding'] !== undefined;
}

function statusClass(status: number): string {
  return status >= 500 ? '5xx' : status >= 400 ? '4xx' : status >= 300 ? '3xx' : status >= 200 ? '2xx' : 'other';
}

/**
 * The OpenAI-compatible gateway: a loopback HTTP server in front of the engine. Requests that name a session
 * get the session's cache_salt and are recorded into it; everything else passes through untouched.
 */
export class Gateway {
  readonly recorder: Recorder;
  private readonly pool: Pool;
  private readonly basePath: string;
  private readonly engineUrl: string;
  /** Lineage roots chosen for sessions whose first request is still in flight (created when recorded). */
  private readonly pendingLineage = new Map<string, string>();
  private readonly sessionCache = new Map<string, { record: SessionRecord; at: number }>();
  private readonly saltCache = new Map<string, string>();
  private readonly active = new Set<ServerResponse>();
  private closing: Promise<void> | null = null;
  url = '';

  private constructor(
    private readonly deps: GatewayDeps,
    private readonly server: Server,
    readonly listenAddress: string,
  ) {
    const engine = new URL(deps.ctx.backend.url);
    this.engineUrl = deps.ctx.backend.url;
    this.basePath = engine.pathname.replace(/\/+$/, '');
    // Its own pool, not the backend's: a stream holds its connection for the whole generation, so the
    // gateway must not be capped at the backend's few control connections (vLLM batches what it is sent).
    this.pool = new Pool(engine.origin, { connections: null, pipelining: 1, keepAliveTimeout: 30_000 });
    this.recorder = new Recorder(deps.sessions, deps.log, deps.ctx.metrics, (record) => {
      this.pendingLineage.delete(record.id);
      this.remember(record);
    });
    deps.sessions.setPendingWrites((session) => this.recorder.flush(session));
  }

  /** A gateway for `listen` (refused unless it is a loopback address); call listen() to bind it. */
  static create(deps: GatewayDeps, listen: string): Gateway {
    checkLoopback(listen);
    const server = createServer({ keepAliveTimeout: 30_000, noDelay: true });
    const gw = new Gateway(deps, server, listen);
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      void gw.handle(req, res);
    });
    server.on('clientError', (_err, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
      else socket.destroy();
    });
    return gw;
  }

  /** Bind the listen address; a CwmError says why it could not (the port is taken, no permission). */
  async listen(): Promise<string> {
    const addr = checkLoopback(this.listenAddress);
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(addr.port, addr.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    }).catch((err: NodeJS.ErrnoException) => {
      throw new CwmError(
        'INVALID_STATE',
        `the gateway cannot listen on ${this.listenAddress}: ${err.code ?? err.message}${err.code === 'EADDRINUSE' ? ' (the port is in use)' : ''}`,
        {
          hint: 'free the port, or pick another gateway.listen (--gateway, CWM_GATEWAY); --gateway off turns the gateway off',
        },
      );
    });
    const bound = this.server.address() as AddressInfo;
    this.url = urlOf(bound.address, bound.port);
    return this.url;
  }

  get listening(): boolean {
    return this.server.listening;
  }

  get inFlight(): number {
    return this.active.size;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const t0 = performance.now();
    const m = this.deps.ctx.metrics;
    const url = req.url ?? '/';
    if (req.method === 'GET' && (url === '/metrics' || url.startsWith('/metrics?'))) {
      await this.metricsEndpoint(req, res);
      return;
    }
    let label: RouteLabel = 'other';
    this.active.add(res);
    m.gatewayInFlight.inc();
    let result: Pick<ForwardResult, 'status' | 'complete' | 'upstreamError'> | null = null;
    try {
      const cfg = this.deps.ctx.cfg().config;
      if (!bearerOk(cfg.gateway.token, req.headers.authorization)) throw unauthorized();
      const route = resolveRoute(req.method ?? 'GET', url, req.headers);
      label = route.label;
      result = route.kind ? await this.sessionRequest(req, res, route) : await this.passthrough(req, res, route);
    } catch (err) {
      if (err instanceof GatewayError) {
        sendError(res, err, err.status === 401 ? { 'www-authenticate': 'Bearer' } : {});
        result = { status: err.status, complete: true, upstreamError: null };
      } else {
        this.deps.log.warn({ err }, 'gateway request failed');
        sendError(res, new GatewayError(500, `cwm gateway: ${(err as Error).message}`, 'InternalServerError'));
        result = { status: 500, complete: true, upstreamError: null };
      }
    } finally {
      this.active.delete(res);
      m.gatewayInFlight.dec();
      const status = result?.status ?? 0;
      const outcome = result?.upstreamError
        ? 'upstream_error'
        : result && !result.complete
          ? 'aborted'
          : status >= 400
            ? 'error'
            : 'ok';
      m.gatewayRequests.inc({ route: label, status: statusClass(status) });
      m.gatewaySeconds.observe({ route: label, outcome }, (performance.now() - t0) / 1000);
      if (result?.upstreamError) m.engineErrors.inc({ code: upstreamCode(result.upstreamError) });
      else if (status >= 500 && status !== 502) m.engineErrors.inc({ code: 'HTTP_5XX' });
    }
  }

  /** Prometheus scrape: the daemon's own metrics (cwm_*), behind the same token as everything else. */
  private async metricsEndpoint(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      if (!bearerOk(this.deps.ctx.cfg().config.gateway.token, req.headers.authorization)) throw unauthorized();
      const { contentType, text } = await this.deps.ctx.metrics.render();
      res.writeHead(200, { 'content-type': contentType, 'content-length': Buffer.byteLength(text) });
      res.end(text);
    } catch (err) {
      const e =
        err instanceof GatewayError ? err : new GatewayError(500, (err as Error).message, 'InternalServerError');
      sendError(res, e, e.status === 401 ? { 'www-authenticate': 'Bearer' } : {});
    }
  }

  private baseHeaders(): { drop: Set<string>; set: Record<string, string> } {
    const cfg = this.deps.ctx.cfg().config;
    const drop = new Set(['host', SESSION_HEADER, 'expect']);
    const set: Record<string, string> = {};
    // The gateway's own token is not the engine's: never forward it. The engine key (if any) is cwm's to add.
    if (cfg.gateway.token !== null) drop.add('authorization');
    if (cfg.engine.apiKey) set.authorization = `Bearer ${cfg.engine.apiKey}`;
    return { drop, set };
  }

  private passthrough(req: IncomingMessage, res: ServerResponse, route: Route): Promise<ForwardResult> {
    return forward({
      dispatcher: this.pool,
      method: req.method ?? 'GET',
      path: this.basePath + route.upstreamPath,
      headers: upstreamHeaders(req.headers, this.baseHeaders()),
      body: hasBody(req) ? req : null,
      res,
      stripUsage: false,
      capture: null,
      engineUrl: this.engineUrl,
      timeoutMs: UPSTREAM_TIMEOUT_MS,
    });
  }

  private remember(record: SessionRecord): void {
    this.sessionCache.delete(record.id);
    if (this.sessionCache.size >= SESSION_CACHE_MAX) {
      const oldest = this.sessionCache.keys().next();
      if (oldest.done !== true) this.sessionCache.delete(oldest.value);
    }
    this.sessionCache.set(record.id, { record, at: performance.now() });
  }

  /** HMAC per lineage, computed once (it showed in profiles: one per request otherwise). */
  private saltOf(lineageRoot: string): string {
    let salt = this.saltCache.get(lineageRoot);
    if (salt === undefined) {
      salt = saltFor(this.deps.ctx, lineageRoot);
      if (this.saltCache.size >= SESSION_CACHE_MAX) this.saltCache.clear();
      this.saltCache.set(lineageRoot, salt);
    }
    return salt;
  }

  /** The session's lineage root: from the registry, or chosen now for a session that does not exist yet. */
  private async lineageOf(id: string): Promise<{ record: SessionRecord | null; lineageRoot: string }> {
    const hit = this.sessionCache.get(id);
    if (hit && performance.now() - hit.at < SESSION_CACHE_MS)
      return { record: hit.record, lineageRoot: hit.record.lineageRoot };
    const record = await this.deps.ctx.reg.getSession(id);
    if (record) {
      this.remember(record);
      return { record, lineageRoot: record.lineageRoot };
    }
    let root = this.pendingLineage.get(id);
    if (root === undefined) {
      root = newLineageRoot();
      if (this.pendingLineage.size >= PENDING_LINEAGE_MAX) {
        const oldest = this.pendingLineage.keys().next();
        if (oldest.done !== true) this.pendingLineage.delete(oldest.value);
      }
      this.pendingLineage.set(id, root);
    }
    return { record: null, lineageRoot: root };
  }

  private async sessionRequest(req: IncomingMessage, res: ServerResponse, route: Route): Promise<ForwardResult> {
    const ctx = this.deps.ctx;
    const session = route.session as string;
    const kind = route.kind as NonNullable<Route['kind']>;
    const raw = await readBody(req, MAX_BODY_BYTES);
    const { record, lineageRoot } = await this.lineageOf(session);
    const salt = this.saltOf(lineageRoot);
    const cfg = ctx.cfg().config;
    const rw = await rewriteRequest(raw, cfg.gateway.clientSalt, async (body) => {
      const s = record ?? { ...newSessionRecord(session, String(body.model ?? ''), kind), lineageRoot };
      await ctx.backend.decorateRequest(body, { salt, session: s });
    });
    const base = this.baseHeaders();
    base.drop.add('content-length');
    base.drop.add('accept-encoding');
    base.set['content-type'] = 'application/json';
    base.set['content-length'] = String(rw.body.length);
    // The response is parsed for recording: ask for it uncompressed.
    base.set['accept-encoding'] = 'identity';
    const capture = new Capture(MAX_CAPTURE_BYTES);
    const r = await forward({
      dispatcher: this.pool,
      method: 'POST',
      path: this.basePath + route.upstreamPath,
      headers: upstreamHeaders(req.headers, base),
      body: rw.body,
      res,
      stripUsage: rw.stripUsage,
      capture,
      engineUrl: this.engineUrl,
      timeoutMs: UPSTREAM_TIMEOUT_MS,
    });
    if (r.complete && r.status >= 200 && r.status < 300 && !capture.overflow) {
      this.recorder.enqueue({
        session,
        kind,
        request: rw.json,
        lineageRoot,
        reply: () => (rw.stream ? replyFromSse(kind, capture.body()) : replyFromJson(kind, capture.body())),
        defaultModel: async () => record?.model ?? (await ctx.backend.models().catch(() => []))[0]?.id ?? null,
      });
    } else if (capture.overflow) {
      this.deps.log.warn({ session }, 'response too large to record; the session was not updated');
    }
    return r;
  }

  /** Stop accepting, let running requests finish (bounded), cut the rest, then flush pending records. */
  close(graceMs: number): Promise<void> {
    this.closing ??= (async () => {
      const closed = this.server.listening
        ? new Promise<void>((resolve) => this.server.close(() => resolve()))
        : Promise.resolve();
      this.server.closeIdleConnections();
      const deadline = Date.now() + graceMs;
      while (this.active.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      this.server.closeAllConnections();
      await closed;
      await this.recorder.drain(Math.max(1000, graceMs));
      this.deps.sessions.setPendingWrites(null);
      await this.pool.destroy().catch(() => {});
    })();
    return this.closing;
  }
}

function unauthorized(): GatewayError {
  return new GatewayError(
    401,
    'cwm gateway: missing or wrong bearer token (set the client API key to gateway.token)',
    'AuthenticationError',
  );
}

function upstreamCode(err: Error): string {
  const code = (err as { code?: string }).code ?? '';
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') return 'ENGINE_TIMEOUT';
  if (code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'UND_ERR_CONNECT_TIMEOUT') {
    return 'ENGINE_UNAVAILABLE';
  }
  return 'ENGINE_ERROR';
}
