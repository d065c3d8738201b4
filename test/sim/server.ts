/**
 * The simulated vLLM OpenAI-compatible server (node:http): routing, fault injection, request log, and the
 * small endpoints (/health, /version, /v1/models, /tokenize, /detokenize, /metrics, /reset_prefix_cache).
 * Admin endpoints (/admin/*) live in admin.ts and ignore faults.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { handleAdmin } from './admin.js';
import { CapacityError } from './engine.js';
import { badRequest, HttpError, isRecord, parseJson, Responder, readBody, vllmError } from './http-util.js';
import { renderMetrics } from './metrics.js';
import { handleGenerate } from './openai.js';
import { parseChat, parseCompletion, parseTokenize, toTokenArray } from './requests.js';
import type { SimState } from './state.js';
import { decode, tokenStr } from './tokenizer.js';

type Handler = (ctx: RequestCtx) => Promise<void> | void;

interface RequestCtx {
  state: SimState;
  req: IncomingMessage;
  r: Responder;
  url: URL;
  path: string;
  signal: AbortSignal;
  arrival: number;
  body: () => Promise<unknown>;
}

const NOT_FOUND = new HttpError(404, { detail: 'Not Found' });
const METHOD_NOT_ALLOWED = new HttpError(405, { detail: 'Method Not Allowed' });

function unavailable(message: string): HttpError {
  return vllmError(503, message, 'ServiceUnavailableError');
}

const routes: Record<string, Partial<Record<string, Handler>>> = {
  '/health': { GET: ({ r }) => r.empty(200) },
  '/ping': { GET: ({ r }) => r.empty(200), POST: ({ r }) => r.empty(200) },
  '/version': { GET: ({ r, state }) => r.json(200, { version: state.options.version }) },
  '/load': { GET: ({ r, state }) => r.json(200, { server_load: state.engine.numRunning }) },
  '/v1/models': { GET: ({ r, state }) => r.json(200, modelList(state)) },
  '/metrics': {
    GET: ({ r, state }) => {
      const o = state.options;
      const text = renderMetrics({
        profile: o.profile,
        model: o.model,
        engine: state.engine,
        kvUsage: state.kvUsage,
        blockSize: o.blockSize,
        gpuBlocks: o.gpuBlocks,
        hashAlgoLabel: o.hashAlgo === 'sha256_cbor' ? 'sha256_cbor' : 'sha256',
        kvBytesPerToken: o.kvBytesPerToken,
      });
      r.send(200, text, 'text/plain; version=0.0.4; charset=utf-8');
    },
  },
  '/tokenize': {
    POST: async ({ r, state, body }) => {
      const t = parseTokenize(await body(), state.options);
      r.json(200, {
        count: t.tokens.length,
        max_model_len: state.options.maxModelLen,
        tokens: t.tokens,
        token_strs: t.returnTokenStrs ? t.tokens.map(tokenStr) : null,
      });
    },
  },
  '/detokenize': {
    POST: async ({ r, state, body }) => {
      const b = await body();
      if (!isRecord(b) || !Array.isArray(b.tokens)) throw badRequest('tokens: Input should be a valid list', 'tokens');
      if (b.model !== undefined && b.model !== null && b.model !== state.options.model) {
        throw vllmError(404, `The model \`${String(b.model)}\` does not exist.`, 'NotFoundError', 'model');
      }
      r.json(200, { prompt: decode(toTokenArray(b.tokens, 'tokens')) });
    },
  },
  '/v1/completions': {
    POST: async (ctx) => {
      const g = parseCompletion(await ctx.body(), ctx.state.options);
      await handleGenerate(ctx.state, ctx.r, g, ctx.signal, ctx.arrival);
    },
  },
  '/v1/chat/completions': {
    POST: async (ctx) => {
      const g = parseChat(await ctx.body(), ctx.state.options);
      await handleGenerate(ctx.state, ctx.r, g, ctx.signal, ctx.arrival);
    },
  },
  '/reset_prefix_cache': {
    POST: ({ r, state, url }) => {
      state.engine.evictGpu();
      if (url.searchParams.get('reset_external') === 'true') state.engine.lmcache?.clearAll(true);
      r.empty(200);
    },
  },
};

function modelList(state: SimState): unknown {
  const o = state.options;
  const created = state.startedAt;
  return {
    object: 'list',
    data: [
      {
        id: o.model,
        object: 'model',
        created,
        owned_by: 'vllm',
        root: o.model,
        parent: null,
        max_model_len: o.maxModelLen,
        permission: [
          {
            id: `modelperm-${randomUUID().replace(/-/g, '')}`,
            object: 'model_permission',
            created,
            allow_create_engine: false,
            allow_sampling: true,
            allow_logprobs: true,
            allow_search_indices: false,
            allow_view: true,
            allow_fine_tuning: false,
            organization: '*',
            group: null,
            is_blocking: false,
          },
        ],
      },
    ],
  };
}

async function handle(state: SimState, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const arrival = performance.now();
  const url = new URL(req.url ?? '/', 'http://127.0.0.1');
  const path = url.pathname;
  const method = req.method ?? 'GET';
  const r = new Responder(res);
  const abort = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) abort.abort();
  });
  state.count('vllm', path);

  const isAdmin = path.startsWith('/admin/');
  let parsed: unknown;
  let bodyRead = false;
  const body = async (): Promise<unknown> => {
    if (!bodyRead) {
      const buf = await readBody(req);
      bodyRead = true;
      if (isAdmin) {
        parsed = buf.length === 0 ? undefined : parseJson(buf, (m) => new HttpError(400, { error: m }));
      } else {
        parsed = parseJson(buf, (m) => badRequest(m));
        state.record({ server: 'vllm', method, path, time: Date.now(), body: parsed });
      }
    }
    return parsed;
  };

  try {
    if (isAdmin) {
      await handleAdmin(state, r, method, path, url, body);
      return;
    }
    const fault = state.faults.vllm.take(path);
    if (fault !== null) {
      switch (fault.mode) {
        case 'drop':
          req.socket.destroy();
          return;
        case '503':
          throw unavailable('Service Unavailable (sim fault)');
        case 'down':
          if (path === '/health' || path === '/ping') {
            r.empty(503);
            return;
          }
          throw unavailable('EngineDeadError: the engine is not running (sim fault)');
        case 'slow':
          await sleep(fault.delayMs, undefined, { signal: abort.signal });
          break;
        case 'reset-mid-stream':
          r.reset = true;
          break;
      }
    }
    const route = routes[path];
    if (route === undefined) throw NOT_FOUND;
    const handler = route[method];
    if (handler === undefined) throw METHOD_NOT_ALLOWED;
    await handler({ state, req, r, url, path, signal: abort.signal, arrival, body });
  } catch (e) {
    if (e instanceof HttpError) r.error(e);
    else if (e instanceof CapacityError) r.error(badRequest(e.message));
    else if (e instanceof Error && e.name === 'AbortError') r.res.destroy();
    else {
      const msg = e instanceof Error ? e.message : String(e);
      r.error(vllmError(500, msg, 'InternalServerError'));
    }
  }
}

export function createVllmServer(state: SimState): Server {
  const server = createServer((req, res) => {
    void handle(state, req, res);
  });
  server.keepAliveTimeout = 5000;
  return server;
}
