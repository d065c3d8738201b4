/**
 * Simulated LMCache controller API (lmcache/v1/api_server/__main__.py): its own port, POST JSON.
 * Errors: FastAPI-style — a body that fails the request model ⇒ 422 {"detail":[{type,loc,msg,input}]},
 * a failing operation (e.g. unknown instance_id) ⇒ 500 {"detail":"…"}.
 *
 *   /lookup {tokens, cache_salt?}                      → {event_id:"Lookup<uuid>", layout_info:{<instance>:[location, n]}}
 *   /pin    {instance_id, location, tokens, cache_salt?} → {event_id, num_tokens}
 *   /unpin  {instance_id, location, tokens, cache_salt?} → {event_id, num_tokens}          (sim extension)
 *   /clear  {instance_id, location, tokens?, cache_salt?} → {event_id, num_tokens}          (tokens: extension)
 *   /health {instance_id}                              → {event_id, error_codes:{"0":0}}
 *   /check_finish {event_id}                           → {status:"finished"}
 *   /query_instance {event_id, ip}                     → {event_id, res:<instance_id>}
 *   /query_worker_info {instance_id, worker_ids?}      → {event_id, worker_infos:[…]}
 * `location` of a lookup = the tier of the last matched chunk (what kv_controller.lookup reports).
 * `cache_salt` selects the salt namespace (LMCache MP mode, PR #3042); without it only unsalted chunks match.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { HttpError, isRecord, parseJson, Responder, readBody } from './http-util.js';
import { type Chunk, type ChunkRun, parseTier } from './lmcache.js';
import type { SimState } from './state.js';

type Body = Record<string, unknown>;

interface FieldIssue {
  type: string;
  loc: (string | number)[];
  msg: string;
  input: unknown;
}

class Validator {
  readonly issues: FieldIssue[] = [];
  constructor(private readonly body: Body) {}

  str(key: string): string {
    const v = this.body[key];
    if (v === undefined)
      this.issues.push({ type: 'missing', loc: ['body', key], msg: 'Field required', input: this.body });
    else if (typeof v !== 'string') {
      this.issues.push({ type: 'string_type', loc: ['body', key], msg: 'Input should be a valid string', input: v });
    } else return v;
    return '';
  }

  optStr(key: string): string | null {
    const v = this.body[key];
    if (v === undefined || v === null) return null;
    return this.str(key);
  }

  tokens(key: string, required: boolean): number[] | null {
    const v = this.body[key];
    if (v === undefined || v === null) {
      if (required) this.issues.push({ type: 'missing', loc: ['body', key], msg: 'Field required', input: this.body });
      return null;
    }
    if (!Array.isArray(v)) {
      this.issues.push({ type: 'list_type', loc: ['body', key], msg: 'Input should be a valid list', input: v });
      return null;
    }
    for (let i = 0; i < v.length; i++) {
      const t = v[i];
      if (typeof t !== 'number' || !Number.isInteger(t)) {
        this.issues.push({
          type: 'int_type',
          loc: ['body', key, i],
          msg: 'Input should be a valid integer',
          input: t,
        });
        return null;
      }
    }
    return v as number[];
  }

  check(): void {
    if (this.issues.length > 0) throw new HttpError(422, { detail: this.issues });
  }
}

function fail(detail: string): HttpError {
  return new HttpError(500, { detail });
}

function newEvent(state: SimState, prefix: string): string {
  const id = `${prefix}${randomUUID()}`;
  state.events.add(id);
  if (state.events.size > 10000) {
    const first = state.events.values().next();
    if (first.done !== true) state.events.delete(first.value);
  }
  return id;
}

function store(state: SimState) {
  const lm = state.engine.lmcache;
  if (lm === null) throw fail('LMCache is disabled in this simulator (lmcache: false)');
  return lm;
}

function checkInstance(state: SimState, instanceId: string): void {
  if (instanceId !== state.options.lmcacheInstanceId) throw fail(`Instance ${instanceId} is not registered`);
}

function runFor(state: SimState, tokens: number[], salt: string | null): ChunkRun {
  return store(state).chunkKeys(tokens, salt);
}

type Op = (state: SimState, body: Body) => unknown;

const ops: Record<string, Op> = {
  '/lookup': (state, body) => {
    const v = new Validator(body);
    const tokens = v.tokens('tokens', true) ?? [];
    const salt = v.optStr('cache_salt');
    v.check();
    const event_id = newEvent(state, 'Lookup');
    const lm = state.engine.lmcache;
    const layout_info: Record<string, [string, number]> = {};
    if (lm !== null) {
      const chunks: Chunk[] = lm.matchPrefix(lm.chunkKeys(tokens, salt));
      const lastChunk = chunks[chunks.length - 1];
      if (lastChunk !== undefined) {
        layout_info[state.options.lmcacheInstanceId] = [lastChunk.tier, chunks.length * lm.chunkSize];
      }
    }
    return { event_id, layout_info };
  },
  '/pin': (state, body) => pinOp(state, body, 'Pin', true),
  '/unpin': (state, body) => pinOp(state, body, 'Unpin', false),
  '/clear': (state, body) => {
    const v = new Validator(body);
    const instanceId = v.str('instance_id');
    const location = v.str('location');
    const tokens = v.tokens('tokens', false);
    const salt = v.optStr('cache_salt');
    v.check();
    checkInstance(state, instanceId);
    const tier = parseTier(location);
    const lm = store(state);
    let num = 0;
    if (tier !== undefined) num = lm.clearTier(tier, tokens === null ? undefined : lm.chunkKeys(tokens, salt));
    return { event_id: newEvent(state, 'Clear'), num_tokens: num };
  },
  '/health': (state, body) => {
    const v = new Validator(body);
    const instanceId = v.str('instance_id');
    v.check();
    checkInstance(state, instanceId);
    return { event_id: newEvent(state, 'Health'), error_codes: { '0': 0 } };
  },
  '/check_finish': (state, body) => {
    const v = new Validator(body);
    const eventId = v.str('event_id');
    v.check();
    if (!state.events.has(eventId)) throw fail(`Event ${eventId} not found`);
    return { status: 'finished' };
  },
  '/query_instance': (state, body) => {
    const v = new Validator(body);
    const eventId = v.str('event_id');
    v.str('ip');
    v.check();
    return { event_id: eventId, res: state.options.lmcacheInstanceId };
  },
  '/query_worker_info': (state, body) => {
    const v = new Validator(body);
    const instanceId = v.str('instance_id');
    v.check();
    checkInstance(state, instanceId);
    return {
      event_id: newEvent(state, 'QueryWorkerInfo'),
      worker_infos: [
        {
          instance_id: instanceId,
          worker_id: 0,
          ip: '127.0.0.1',
          port: 0,
          distributed_url: null,
          registration_time: state.startedAt,
          last_heartbeat_time: Date.now() / 1000,
        },
      ],
    };
  },
};

function pinOp(state: SimState, body: Body, prefix: string, pin: boolean): unknown {
  const v = new Validator(body);
  const instanceId = v.str('instance_id');
  const location = v.str('location');
  const tokens = v.tokens('tokens', true) ?? [];
  const salt = v.optStr('cache_salt');
  v.check();
  checkInstance(state, instanceId);
  const tier = parseTier(location);
  const lm = store(state);
  let num = 0;
  if (tier !== undefined) {
    const run = runFor(state, tokens, salt);
    num = pin ? lm.pin(run, tier) : lm.unpin(run, tier);
  }
  return { event_id: newEvent(state, prefix), num_tokens: num };
}

async function handle(state: SimState, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://127.0.0.1');
  const path = url.pathname;
  const r = new Responder(res);
  state.count('lmcache', path);
  try {
    const fault = state.faults.lmcache.take(path);
    if (fault !== null) {
      if (fault.mode === 'drop') {
        req.socket.destroy();
        return;
      }
      if (fault.mode === '503' || fault.mode === 'down') throw new HttpError(503, { detail: 'Service Unavailable' });
      if (fault.mode === 'slow') await sleep(fault.delayMs);
      if (fault.mode === 'reset-mid-stream') r.reset = true;
    }
    const op = ops[path];
    if (op === undefined) throw new HttpError(404, { detail: 'Not Found' });
    if (req.method !== 'POST') throw new HttpError(405, { detail: 'Method Not Allowed' });
    const body = parseJson(
      await readBody(req),
      (m) => new HttpError(422, { detail: [{ type: 'json_invalid', loc: ['body'], msg: m, input: null }] }),
    );
    state.record({ server: 'lmcache', method: 'POST', path, time: Date.now(), body });
    if (!isRecord(body)) {
      throw new HttpError(422, {
        detail: [
          { type: 'model_attributes_type', loc: ['body'], msg: 'Input should be a valid dictionary', input: body },
        ],
      });
    }
    r.json(200, op(state, body));
  } catch (e) {
    if (e instanceof HttpError) r.error(e);
    else r.json(500, { detail: e instanceof Error ? e.message : String(e) });
  }
}

export function createControllerServer(state: SimState): Server {
  return createServer((req, res) => {
    void handle(state, req, res);
  });
}
