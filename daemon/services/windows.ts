import { randomBytes } from 'node:crypto';
import type { KvFreezeResult, KvReleaseResult, KvThawResult } from '../backends/types.js';
import type { WindowInfo } from '../protocol/index.js';
import { CwmError } from '../protocol/index.js';
import { ChunkCache } from '../registry/chunk-cache.js';
import {
  decodeTokens,
  encodeTokens,
  packTokensBase64,
  splitIntoChunks,
  unpackTokensBase64,
} from '../registry/codec.js';
import type { BatchOp, IterOpts, Sublevel } from '../registry/db.js';
import type { PendingRelease, SessionData, SessionRecord, WindowData, WindowRecord } from '../registry/records.js';
import type { AuditActor } from './audit.js';
import { nowIso, type ServiceContext, saltFor } from './context.js';
import { indexOps, modelPrefix, nameFromIndexKey } from './indexes.js';
import { newSessionRecord, resolveSessionData, type SessionService } from './sessions.js';
import { matchesSearch, type WindowSummary, type WindowSummaryEntry } from './window-summary.js';

interface ChunkRef {
  n: number;
  bytes: number;
  tokens: number;
}

function bump(deltas: Map<string, number>, key: string, d: number): void {
  deltas.set(key, (deltas.get(key) ?? 0) + d);
}

export function toWindowInfo(w: WindowRecord): WindowInfo {
  return {
    name: w.name,
    id: w.id,
    session: w.session,
    model: w.model,
    fingerprint: w.fingerprint,
    tokens: w.tokens,
    chunks: w.chunkHashes.length,
    bytesStored: w.bytesStored,
    description: w.description,
    tags: w.tags,
    parent: w.parent,
    createdAt: w.createdAt,
    pinned: w.pinned,
    residency: w.residency,
    residencyCheckedAt: w.residencyCheckedAt,
    kind: w.kind,
    stateFile: w.stateFile ? { size: w.stateFile.size, sha256: w.stateFile.sha256 } : null,
  };
}

/** A thawed session's context as its own data (exact tokens plus the window's messages or prompt). */
function ownContext(tokens: number[], wdata: WindowData): SessionData {
  const data: SessionData = { tokenIds: tokens };
  if (wdata.messages) data.messages = wdata.messages;
  if (wdata.prompt !== undefined) data.prompt = wdata.prompt;
  return data;
}

export function windowNotFound(name: string): CwmError {
  return new CwmError('WINDOW_NOT_FOUND', `no window "${name}"`, { hint: 'list windows with `cwm windows`' });
}

function windowExists(name: string): CwmError {
  return new CwmError('WINDOW_EXISTS', `a window named "${name}" already exists`, {
    hint: 'choose another name, or delete the old window first (`cwm delete`)',
  });
}

/** A default id for a thawed session: readable, unique, and always within the 64-character session rule. */
export function defaultThawSessionId(window: string): string {
  const suffix = `${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
  return `${window.slice(0, 64 - suffix.length - 1)}-${suffix}`;
}

export interface FreezeInput {
  session: string;
  name: string;
  description?: string | undefined;
  tags?: string[] | undefined;
  prefill: boolean;
}

export interface ListParams {
  tags?: string[] | undefined;
  model?: string | undefined;
  session?: string | undefined;
  search?: string | undefined;
  sort: 'created' | 'name' | 'tokens';
  order: 'asc' | 'desc';
  limit: number;
  offset: number;
}

const entryOrder: Record<ListParams['sort'], (a: WindowSummaryEntry, b: WindowSummaryEntry) => number> = {
  // Names are unique, so every order is total: created and tokens tie-break on the name.
  created: (a, b) => (a.created < b.created ? -1 : a.created > b.created ? 1 : a.name < b.name ? -1 : 1),
  name: (a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0),
  tokens: (a, b) => a.tokens - b.tokens || (a.name < b.name ? -1 : 1),
};

/**
 * window.list for any filter: every filter applies (tags all match, model, session, case-insensitive substring of
 * the name or the description), in the requested order, and only the page's records are read from LevelDB.
 * `total` counts every match.
 */
export async function listFromSummary(summary: WindowSummary, windowsDb: Sublevel, p: ListParams) {
  const all = await summary.get();
  const tags = p.tags ?? [];
  const search = p.search?.toLowerCase();
  const matched: WindowSummaryEntry[] = [];
  // Synchronous until the page is chosen: the map is live, and no batch can apply in between.
  for (const e of all.values()) {
    if (p.model !== undefined && e.model !== p.model) continue;
    if (p.session !== undefined && e.session !== p.session) continue;
    if (tags.length > 0 && !tags.every((t) => e.tags.includes(t))) continue;
    if (search && !matchesSearch(e, search)) continue;
    matched.push(e);
  }
  const order = entryOrder[p.sort];
  const cmp = p.order === 'desc' ? (a: WindowSummaryEntry, b: WindowSummaryEntry) => order(b, a) : order;
  const page = smallest(matched, p.offset + p.limit, cmp)
    .slice(p.offset)
    .map((e) => e.key);
  // A window deleted since the filter is left out of the page, as the index-driven reads do.
  const windows = ((await windowsDb.getMany(page)) as (WindowRecord | undefined)[]).filter(
    (w): w is WindowRecord => w !== undefined,
  );
  return { windows: windows.map(toWindowInfo), total: matched.length, limit: p.limit, offset: p.offset };
}

/**
 * The first `k` items in `cmp` order (a total order), sorted. When the page ends well before the last match, a
 * bounded max-heap finds them in O(n log k) instead of sorting every match (a search matching all 100k windows).
 */
export function smallest<T>(items: T[], k: number, cmp: (a: T, b: T) => number): T[] {
  if (k <= 0) return [];
  if (k * 4 >= items.length) return items.sort(cmp).slice(0, k);
  const heap: T[] = [];
  const swap = (i: number, j: number) => {
    const t = heap[i] as T;
    heap[i] = heap[j] as T;
    heap[j] = t;
  };
  for (const x of items) {
    if (heap.length < k) {
      heap.push(x);
      for (let i = heap.length - 1; i > 0; ) {
        const up = (i - 1) >> 1;
        if (cmp(heap[i] as T, heap[up] as T) <= 0) break;
        swap(i, up);
        i = up;
      }
    } else if (cmp(x, heap[0] as T) < 0) {
      heap[0] = x;
      for (let i = 0; ; ) {
        const l = 2 * i + 1;
        const r = l + 1;
        let big = i;
        if (l < k && cmp(heap[l] as T, heap[big] as T) > 0) big = l;
        if (r < k && cmp(heap[r] as T, heap[big] as T) > 0) big = r;
        if (big === i) break;
        swap(i, big);
        i = big;
      }
    }
  }
  return heap.sort(cmp);
}

export class WindowService {
  /** About 8 MB: two 128k-token windows, or many small ones. */
  private readonly chunkCache = new ChunkCache(2_000_000);
  /** Release-journal entries being released right now (never twice at once: an LMCache unpin is not idempotent). */
  private readonly releasing = new Set<string>();
  /** Window ids of freezes in progress: their journal entries are theirs until their batch lands or they fail. */
  private readonly freezing = new Set<string>();

  constructor(
    private readonly ctx: ServiceContext,
    readonly sessions: SessionService,
  ) {}

  async get(name: string): Promise<WindowRecord> {
    const w = await this.ctx.reg.getWindow(name);
    if (!w) throw windowNotFound(name);
    return w;
  }

  async tokensOf(w: WindowRecord): Promise<number[]> {
    const cached = w.chunkHashes.map((h) => this.chunkCache.get(h));
    const missing = w.chunkHashes.filter((_, i) => cached[i] === undefined);
    const bufs = missing.length > 0 ? ((await this.ctx.reg.chunks.getMany(missing)) as (Buffer | undefined)[]) : [];
    const out = new Array<number>(w.tokens);
    let o = 0;
    let m = 0;
    for (let i = 0; i < w.chunkHashes.length; i++) {
      let ids: ArrayLike<number> | undefined = cached[i];
      if (ids === undefined) {
        const b = bufs[m++];
        if (!b) {
          // Read outside the registry mutex (thaw, window.get): a delete that ran meanwhile is not corruption.
          const now = await this.ctx.reg.getWindow(w.name);
          if (now?.id !== w.id) throw windowNotFound(w.name);
          throw new CwmError('REGISTRY_CORRUPT', `window "${w.name}" is missing chunk ${i} (${w.chunkHashes[i]})`, {
            hint: 'run `cwm doctor --registry` to check the registry',
          });
        }
        ids = decodeTokens(b);
        this.chunkCache.set(w.chunkHashes[i] as string, ids);
      }
      for (let j = 0; j < ids.length; j++) out[o++] = ids[j] as number;
    }
    if (o !== w.tokens) {
      throw new CwmError('REGISTRY_CORRUPT', `window "${w.name}" holds ${o} tokens in its chunks, not ${w.tokens}`, {
        hint: 'run `cwm doctor --registry` to check the registry',
      });
    }
    return out;
  }

  private async contextTokens(s: SessionRecord, data: SessionData): Promise<number[]> {
    if (data.tokenIds && data.tokenIds.length > 0) return data.tokenIds;
    if (data.fromWindow) {
      const w = await this.ctx.reg.getWindow(data.fromWindow);
      if (w) return this.tokensOf(w);
    }
    return this.sessions.tokenize(s.model, await resolveSessionData(this.ctx.reg, data));
  }

  async freeze(input: FreezeInput, actor: AuditActor = 'rpc', extraTags: string[] = []) {
    const t0 = performance.now();
    await this.sessions.settle(input.session);
    const session = await this.sessions.get(input.session);
    if (await this.ctx.reg.getWindow(input.name)) throw windowExists(input.name);
    const stored = (await this.ctx.reg.getSessionData(session.id)) ?? {};
    const data = await resolveSessionData(this.ctx.reg, stored);
    const tTok = performance.now();
    const tokens = await this.contextTokens(session, stored);
    let engineMs = stored.tokenIds || stored.fromWindow ? 0 : performance.now() - tTok;
    if (tokens.length === 0) {
      throw new CwmError('INVALID_STATE', `session "${session.id}" has no context to freeze`, {
        hint: 'record at least one turn first',
      });
    }
    const id = randomBytes(12).toString('base64url');
    const salt = saltFor(this.ctx, session.lineageRoot);
    const warnings: string[] = [];
    let kv: Awaited<ReturnType<typeof this.ctx.backend.freezeKv>>;
    try {
      kv = await this.ctx.backend.freezeKv({
        session,
        windowId: id,
        windowName: input.name,
        model: session.model,
        tokens,
        salt,
        prefill: input.prefill,
      });
    } catch (err) {
      if (!(err instanceof CwmError) || !err.retryable) throw err;
      // The exact tokens are what matter most: keep them even when the engine cannot pin the KV right now.
      this.ctx.metrics.engineErrors.inc({ code: err.code });
      kv = {
        pinned: false,
        cached: false,
        residency: 'unknown',
        stateFile: null,
        engineMs: 0,
        warnings: [
          `the engine is unavailable (${err.message}): the exact tokens were frozen, the KV cache was not pinned`,
        ],
      };
    }
    engineMs += kv.engineMs;
    warnings.push(...kv.warnings);
    const split = splitIntoChunks(tokens);
    // From here until the freeze's batch lands, the engine holds state no window owns: journal it, so a failed
    // batch (a name taken meanwhile, a full disk) or a crash cannot leave an LMCache pin or a state file behind.
    // The window as it will be stored, less what the commit fills in (fingerprint, bytes, tags, times).
    const base: WindowRecord = {
      name: input.name,
      id,
      session: session.id,
      model: session.model,
      fingerprint: {
        model: session.model,
        maxModelLen: session.maxModelLen,
        engineKind: this.ctx.backend.kind,
        engineVersion: null,
      },
      tokens: tokens.length,
      chunkHashes: split.map((c) => c.hash),
      bytesStored: 0,
      description: input.description ?? '',
      tags: [],
      parent: null,
      lineageRoot: session.lineageRoot,
      createdAt: nowIso(),
      pinned: kv.pinned,
      residency: kv.residency,
      residencyCheckedAt: null,
      kind: session.kind,
      stateFile: kv.stateFile,
    };
    let journal: PendingRelease | null = null;
    if (kv.pinned || kv.stateFile !== null) {
      journal = this.releaseEntry(base, tokens, 'freeze-aborted');
      this.freezing.add(id);
      try {
        await this.ctx.reg.batch([this.putRelease(journal)]);
      } catch (err) {
        this.freezing.delete(id);
        await this.release(journal, false);
        throw err;
      }
    }
    try {
      return await this.commitFreeze(input, actor, extraTags, {
        t0,
        base,
        session,
        data,
        tokens,
        split,
        kv,
        engineMs,
        warnings,
        journaled: journal !== null,
      });
    } catch (err) {
      if (journal) {
        const r = await this.release(journal);
        if (!r.done) this.ctx.log.warn({ window: input.name }, 'an aborted freeze left engine state; it is retried');
      }
      throw err;
    } finally {
      this.freezing.delete(id);
    }
  }

  private async commitFreeze(
    input: FreezeInput,
    actor: AuditActor,
    extraTags: string[],
    f: {
      t0: number;
      base: WindowRecord;
      session: SessionRecord;
      data: SessionData;
      tokens: number[];
      split: ReturnType<typeof splitIntoChunks>;
      kv: KvFreezeResult;
      engineMs: number;
      warnings: string[];
      journaled: boolean;
    },
  ) {
    const { t0, session, data, tokens, split, kv, engineMs, warnings } = f;
    const id = f.base.id;
    const fingerprint = {
      model: session.model,
      maxModelLen: session.maxModelLen,
      engineKind: this.ctx.backend.kind,
      engineVersion: await this.ctx.backend.version().catch(() => null),
    };
    const tags = [...new Set([...(input.tags ?? []), ...extraTags])].sort();
    return this.ctx.reg.mutex.run(async () => {
      if (await this.ctx.reg.getWindow(input.name)) throw windowExists(input.name);
      const reg = this.ctx.reg;
      const ops: BatchOp[] = [];
      const deltas = new Map<string, number>();
      const existing = (await reg.refs.getMany(split.map((c) => c.hash))) as (ChunkRef | undefined)[];
      let bytesStored = 0;
      let newChunks = 0;
      const seen = new Map<string, ChunkRef>();
      split.forEach((c, i) => {
        const prev = seen.get(c.hash) ?? existing[i];
        let ref: ChunkRef;
        if (prev) {
          ref = { ...prev, n: prev.n + 1 };
        } else {
          const buf = encodeTokens(c.ids);
          ops.push({ type: 'put', sublevel: reg.chunks, key: c.hash, value: buf });
          ref = { n: 1, bytes: buf.length, tokens: c.ids.length };
          newChunks++;
          bump(deltas, 'chunks', 1);
          bump(deltas, 'bytes', buf.length);
          bump(deltas, 'tokens', c.ids.length);
        }
        seen.set(c.hash, ref);
        bytesStored += ref.bytes;
      });
      for (const [hash, ref] of seen) ops.push({ type: 'put', sublevel: reg.refs, key: hash, value: ref });
      const now = nowIso();
      const w: WindowRecord = { ...f.base, fingerprint, bytesStored, tags, createdAt: now, residencyCheckedAt: now };
      ops.push({ type: 'put', sublevel: reg.windows, key: w.name, value: w });
      // The window owns its engine state now: the journal entry goes in the same batch.
      if (f.journaled) ops.push({ type: 'del', sublevel: reg.releases, key: id });
      const wdata: WindowData = session.kind === 'chat' ? { messages: data.messages ?? [] } : {};
      if (session.kind === 'completion' && data.prompt !== undefined) {
        wdata.prompt = typeof data.prompt === 'string' ? data.prompt + (data.completion ?? '') : tokens;
      }
      ops.push({ type: 'put', sublevel: reg.windowData, key: w.name, value: wdata });
      if (w.stateFile) bump(deltas, `sf!${w.stateFile.file}`, 1);
      indexOps(reg, w, 1, ops, deltas);
      const current = (await reg.getSession(session.id)) ?? session;
      current.state = 'frozen';
      current.lastWindow = w.name;
      current.updatedAt = now;
      if (actor === 'monitor') {
        current.autoFrozenAtTokens = tokens.length;
        current.autoFrozenAt = now;
      }
      ops.push({ type: 'put', sublevel: reg.sessions, key: current.id, value: current });
      ops.push(
        this.ctx.audit.op({
          action: 'window.freeze',
          actor,
          target: w.name,
          details: { session: session.id, tokens: tokens.length, pinned: kv.pinned, newChunks },
        }),
      );
      const next = await reg.countOps(deltas, ops);
      await reg.batch(ops);
      reg.commitCounts(next);
      for (const c of split) this.chunkCache.set(c.hash, c.ids);
      this.ctx.metrics.operations.inc({ op: 'freeze', outcome: 'ok' });
      return {
        window: w,
        result: {
          name: w.name,
          session: session.id,
          tokens: tokens.length,
          chunks: split.length,
          newChunks,
          bytesStored,
          pinned: kv.pinned,
          cached: kv.cached,
          durationMs: performance.now() - t0,
          engineMs,
          warnings,
        },
      };
    });
  }

  /** The model check before a thaw: another model is refused; another max_model_len is fine if the context fits. */
  private async checkModel(w: WindowRecord, warnings: string[]): Promise<number | null> {
    const models = await this.ctx.backend.models();
    const m = models.find((x) => x.id === w.model);
    if (!m) {
      throw new CwmError(
        'MODEL_MISMATCH',
        `window "${w.name}" was frozen on model "${w.model}", which the engine does not serve`,
        {
          hint: `the engine serves: ${models.map((x) => x.id).join(', ') || '(none)'}; start it with that model to thaw`,
        },
      );
    }
    if (m.maxModelLen !== null && w.fingerprint.maxModelLen !== null && m.maxModelLen !== w.fingerprint.maxModelLen) {
      if (m.maxModelLen < w.tokens) {
        throw new CwmError(
          'MODEL_MISMATCH',
          `the engine's max_model_len (${m.maxModelLen}) is below this window's ${w.tokens} tokens`,
          {
            hint: 'restart the engine with a larger --max-model-len',
          },
        );
      }
      warnings.push(
        `max_model_len changed from ${w.fingerprint.maxModelLen} to ${m.maxModelLen}; the context still fits`,
      );
    }
    return m.maxModelLen;
  }

  async thaw(input: { name: string; newSession?: string | undefined; warm: boolean }, actor: AuditActor = 'rpc') {
    const t0 = performance.now();
    const w = await this.get(input.name);
    const warnings: string[] = [];
    const maxModelLen = await this.checkModel(w, warnings);
    const sessionId = input.newSession ?? defaultThawSessionId(w.name);
    await this.sessions.settle(sessionId);
    if (await this.ctx.reg.getSession(sessionId)) {
      throw new CwmError('SESSION_EXISTS', `session "${sessionId}" already exists`, {
        hint: 'pick another --session id, or omit it to get a fresh one',
      });
    }
    const tokens = await this.tokensOf(w);
    // Kept in hand in case the window is deleted before the batch below (then the session gets its own copy).
    const wdata = (await this.ctx.reg.getWindowData(w.name)) ?? {};
    const session = newSessionRecord(sessionId, w.model, w.kind);
    session.state = 'thawed';
    session.lineageRoot = w.lineageRoot;
    session.sourceWindow = w.name;
    session.tokens = tokens.length;
    session.maxModelLen = maxModelLen;
    let kv: KvThawResult;
    try {
      kv = await this.ctx.backend.thawKv({
        window: w,
        session,
        tokens,
        salt: saltFor(this.ctx, w.lineageRoot),
        warm: input.warm,
      });
    } catch (err) {
      this.ctx.metrics.operations.inc({ op: 'thaw', outcome: 'error' });
      if (err instanceof CwmError) this.ctx.metrics.engineErrors.inc({ code: err.code });
      throw err;
    }
    warnings.push(...kv.warnings);
    session.slot = kv.slot;
    return this.ctx.reg.mutex.run(async () => {
      const reg = this.ctx.reg;
      if (await reg.getSession(sessionId)) {
        throw new CwmError('SESSION_EXISTS', `session "${sessionId}" already exists`, {
          hint: 'pick another --session id',
        });
      }
      const found = await reg.getWindow(w.name);
      // The same window, not one deleted meanwhile (and perhaps re-created under its name).
      const current = found?.id === w.id ? found : undefined;
      const ops: BatchOp[] = [];
      const data: SessionData = current ? { fromWindow: w.name } : ownContext(tokens, wdata);
      ops.push({ type: 'put', sublevel: reg.sessions, key: session.id, value: session });
      ops.push(reg.sessionDataOp(session.id, data));
      if (current && kv.warmed) {
        current.residency = kv.residency;
        current.residencyCheckedAt = nowIso();
        ops.push({ type: 'put', sublevel: reg.windows, key: current.name, value: current });
      }
      ops.push(
        this.ctx.audit.op({
          action: 'window.thaw',
          actor,
          target: w.name,
          details: { session: session.id, cachedTokens: kv.cachedTokens, recomputedTokens: kv.recomputedTokens },
        }),
      );
      const next = await reg.countOps(new Map([['sessions', 1]]), ops);
      await reg.batch(ops);
      reg.commitCounts(next);
      this.ctx.metrics.operations.inc({ op: 'thaw', outcome: 'ok' });
      this.ctx.metrics.thawTokens.inc({ source: 'cache' }, kv.cachedTokens);
      this.ctx.metrics.thawTokens.inc({ source: 'recomputed' }, kv.recomputedTokens);
      const maxC = kv.maxCacheableTokens;
      return {
        name: w.name,
        session: session.id,
        tokens: tokens.length,
        warmed: kv.warmed,
        cachedTokens: kv.cachedTokens,
        recomputedTokens: kv.recomputedTokens,
        maxCacheableTokens: maxC,
        efficiency: kv.warmed ? (maxC > 0 ? Math.min(1, kv.cachedTokens / maxC) : 1) : 0,
        ttftMs: kv.ttftMs,
        engineMs: kv.engineMs,
        durationMs: performance.now() - t0,
        residency: kv.residency,
        residencyByTier: kv.residencyByTier,
        warnings,
      };
    });
  }

  async clone(input: { name: string; newName: string; description?: string | undefined; tags?: string[] | undefined }) {
    const result = await this.ctx.reg.mutex.run(async () => {
      const reg = this.ctx.reg;
      const src = await this.get(input.name);
      if (await reg.getWindow(input.newName)) throw windowExists(input.newName);
      const ops: BatchOp[] = [];
      const deltas = new Map<string, number>();
      const refs = (await reg.refs.getMany(src.chunkHashes)) as (ChunkRef | undefined)[];
      const bumped = new Map<string, ChunkRef>();
      src.chunkHashes.forEach((h, i) => {
        const prev = bumped.get(h) ?? refs[i];
        if (!prev)
          throw new CwmError('REGISTRY_CORRUPT', `chunk ${h} of "${src.name}" has no refcount`, {
            hint: 'run `cwm doctor --registry --repair`',
          });
        bumped.set(h, { ...prev, n: prev.n + 1 });
      });
      for (const [h, ref] of bumped) ops.push({ type: 'put', sublevel: reg.refs, key: h, value: ref });
      const now = nowIso();
      const w: WindowRecord = {
        ...src,
        name: input.newName,
        id: randomBytes(12).toString('base64url'),
        description: input.description ?? `Clone of ${src.name}`,
        tags: input.tags ? [...new Set(input.tags)].sort() : src.tags,
        parent: src.name,
        createdAt: now,
      };
      delete w.parentDeleted;
      ops.push({ type: 'put', sublevel: reg.windows, key: w.name, value: w });
      const wdata = (await reg.getWindowData(src.name)) ?? {};
      ops.push({ type: 'put', sublevel: reg.windowData, key: w.name, value: wdata });
      if (w.stateFile) bump(deltas, `sf!${w.stateFile.file}`, 1);
      indexOps(reg, w, 1, ops, deltas);
      ops.push(
        this.ctx.audit.op({ action: 'window.clone', actor: 'rpc', target: w.name, details: { parent: src.name } }),
      );
      const next = await reg.countOps(deltas, ops);
      await reg.batch(ops);
      reg.commitCounts(next);
      return w;
    });
    // Take the clone's own reference on the shared KV so deleting the parent leaves it cached.
    if (result.pinned) {
      const tokens = await this.tokensOf(result);
      const r = await this.ctx.backend.retainKv({
        window: result,
        tokens,
        salt: saltFor(this.ctx, result.lineageRoot),
      });
      if (!r.pinned && result.pinned) {
        await this.ctx.reg.mutex.run(async () => {
          const cur = await this.ctx.reg.getWindow(result.name);
          if (cur) {
            cur.pinned = false;
            await this.ctx.reg.batch([{ type: 'put', sublevel: this.ctx.reg.windows, key: cur.name, value: cur }]);
          }
        });
        result.pinned = false;
      }
    }
    this.ctx.metrics.operations.inc({ op: 'clone', outcome: 'ok' });
    return result;
  }

  private async childrenOf(name: string): Promise<string[]> {
    const out: string[] = [];
    const prefix = `p!${name}!`;
    for await (const key of this.ctx.reg.idx.keys({ gte: prefix, lt: `${prefix}\xff` }))
      out.push(nameFromIndexKey(key));
    return out;
  }

  private async lineageMembers(root: string): Promise<string[]> {
    const out: string[] = [];
    const prefix = `L!${root}!`;
    for await (const key of this.ctx.reg.idx.keys({ gte: prefix, lt: `${prefix}\xff` }))
      out.push(nameFromIndexKey(key));
    return out;
  }

  /** The longest prefix of `w` (in tokens) that another window of its salt lineage still needs in LMCache. */
  private async keepTokensFor(w: WindowRecord): Promise<number> {
    let keepChunks = 0;
    for (const other of await this.lineageMembers(w.lineageRoot)) {
      const ow = await this.ctx.reg.getWindow(other);
      if (!ow || ow.id === w.id) continue;
      let k = 0;
      while (k < ow.chunkHashes.length && k < w.chunkHashes.length && ow.chunkHashes[k] === w.chunkHashes[k]) k++;
      keepChunks = Math.max(keepChunks, k);
    }
    return Math.min(w.tokens, keepChunks * 256);
  }

  private releaseEntry(w: WindowRecord, tokens: number[], reason: PendingRelease['reason']): PendingRelease {
    return { window: w, tokens: packTokensBase64(tokens), reason, createdAt: nowIso(), attempts: 0, lastError: null };
  }

  private putRelease(e: PendingRelease): BatchOp {
    return { type: 'put', sublevel: this.ctx.reg.releases, key: e.window.id, value: e };
  }

  /**
   * Give back what the engine holds for a journal entry. What other windows still need is worked out now, from the
   * registry as it is (a window of the same lineage frozen since keeps its prefix). The entry goes once the engine
   * confirmed; when it could not (unreachable, a file that would not go) it stays, with the reason, for a retry.
   * `persisted: false` is for an entry that never reached the registry.
   */
  private async release(e: PendingRelease, persisted = true): Promise<KvReleaseResult & { done: boolean }> {
    const id = e.window.id;
    if (this.releasing.has(id)) return { cleared: 0, warnings: [], done: false };
    this.releasing.add(id);
    const reg = this.ctx.reg;
    try {
      const w = e.window;
      let out: KvReleaseResult;
      try {
        out = await this.ctx.backend.releaseKv({
          window: w,
          tokens: unpackTokensBase64(e.tokens),
          salt: saltFor(this.ctx, w.lineageRoot),
          keepTokens: await this.keepTokensFor(w),
          lastReference: w.stateFile ? (await reg.count(`sf!${w.stateFile.file}`)) <= 0 : true,
        });
      } catch (err) {
        out = {
          cleared: 0,
          warnings: [`engine cleanup for "${w.name}" failed: ${(err as Error).message}`],
          retry: true,
        };
      }
      if (!persisted) return { ...out, done: !out.retry };
      if (out.retry) {
        const lastError = out.warnings.join('; ') || 'the engine did not confirm';
        await reg.batch([this.putRelease({ ...e, attempts: e.attempts + 1, lastError })]).catch(() => {});
        return { ...out, done: false };
      }
      await reg.batch([{ type: 'del', sublevel: reg.releases, key: id }]);
      return { ...out, done: true };
    } finally {
      this.releasing.delete(id);
    }
  }

  /** Release what the journal still holds (at start and every minute); returns how many went and how many wait. */
  async retryReleases(): Promise<{ released: number; pending: number }> {
    let released = 0;
    let pending = 0;
    const entries: PendingRelease[] = [];
    for await (const v of this.ctx.reg.releases.values()) entries.push(v as PendingRelease);
    for (const e of entries) {
      if (this.freezing.has(e.window.id)) continue;
      const r = await this.release(e).catch(() => ({ done: false }));
      if (r.done) released++;
      else pending++;
    }
    this.ctx.metrics.pendingReleases.set(pending);
    if (released > 0 || pending > 0) this.ctx.log.info({ released, pending }, 'engine release journal processed');
    return { released, pending };
  }

  async delete(input: { name: string; cascade: boolean }, actor: AuditActor = 'rpc') {
    const journal: PendingRelease[] = [];
    const res = await this.ctx.reg.mutex.run(async () => {
      const reg = this.ctx.reg;
      const root = await this.get(input.name);
      const doomed: WindowRecord[] = [root];
      if (input.cascade) {
        const queue = [root.name];
        while (queue.length > 0) {
          for (const child of await this.childrenOf(queue.shift() as string)) {
            const cw = await reg.getWindow(child);
            if (cw && !doomed.some((d) => d.name === cw.name)) {
              doomed.push(cw);
              queue.push(cw.name);
            }
          }
        }
      }
      const doomedNames = new Set(doomed.map((d) => d.name));
      const ops: BatchOp[] = [];
      const deltas = new Map<string, number>();
      const refCache = new Map<string, ChunkRef | undefined>();
      let chunksFreed = 0;
      let bytesFreed = 0;
      for (const w of doomed) {
        // Read the tokens now: the batch below may free the chunks, and the engine cleanup runs after it.
        const tokens = w.pinned || w.stateFile ? await this.tokensOf(w) : [];
        const missing = w.chunkHashes.filter((h) => !refCache.has(h));
        const got = (await reg.refs.getMany(missing)) as (ChunkRef | undefined)[];
        missing.forEach((h, i) => {
          refCache.set(h, got[i]);
        });
        for (const h of w.chunkHashes) {
          const ref = refCache.get(h);
          if (!ref) continue;
          const n = ref.n - 1;
          if (n <= 0) {
            refCache.set(h, undefined);
            ops.push({ type: 'del', sublevel: reg.refs, key: h }, { type: 'del', sublevel: reg.chunks, key: h });
            chunksFreed++;
            bytesFreed += ref.bytes;
            bump(deltas, 'chunks', -1);
            bump(deltas, 'bytes', -ref.bytes);
            bump(deltas, 'tokens', -ref.tokens);
          } else {
            refCache.set(h, { ...ref, n });
          }
        }
        ops.push(
          { type: 'del', sublevel: reg.windows, key: w.name },
          { type: 'del', sublevel: reg.windowData, key: w.name },
        );
        indexOps(reg, w, -1, ops, deltas);
        if (w.stateFile) bump(deltas, `sf!${w.stateFile.file}`, -1);
        // What the engine holds for it is given back after the batch; journaled in the batch, so a crash or an
        // unreachable engine in between only delays it (retried at start and every minute), never leaks it.
        if (w.pinned || w.stateFile) {
          const entry = this.releaseEntry(w, tokens, 'delete');
          journal.push(entry);
          ops.push(this.putRelease(entry));
        }
        ops.push(
          this.ctx.audit.op({
            action: 'window.delete',
            actor,
            target: w.name,
            details: { cascade: input.cascade, tokens: w.tokens },
          }),
        );
      }
      for (const [h, ref] of refCache) if (ref) ops.push({ type: 'put', sublevel: reg.refs, key: h, value: ref });
      // Thawed sessions that still read their context from a doomed window get their own copy of it, in this same
      // batch: deleting a window never empties a session (nor lets it read a later window of the same name).
      for await (const v of reg.sessions.values()) {
        const s = v as SessionRecord;
        if (s.sourceWindow === null || !doomedNames.has(s.sourceWindow)) continue;
        const data = await reg.getSessionData(s.id);
        const src = data?.fromWindow === undefined ? undefined : doomed.find((d) => d.name === data.fromWindow);
        if (!data || !src) continue;
        const { fromWindow: _, ...rest } = data;
        const own = ownContext(await this.tokensOf(src), (await reg.getWindowData(src.name)) ?? {});
        ops.push(reg.sessionDataOp(s.id, { ...rest, ...own }));
      }
      // Surviving children keep their parent's name, marked deleted, so lineage stays explainable.
      for (const w of doomed) {
        for (const child of await this.childrenOf(w.name)) {
          if (doomedNames.has(child)) continue;
          const cw = await reg.getWindow(child);
          if (cw) ops.push({ type: 'put', sublevel: reg.windows, key: cw.name, value: { ...cw, parentDeleted: true } });
        }
      }
      const next = await reg.countOps(deltas, ops);
      await reg.batch(ops);
      reg.commitCounts(next);
      return { deleted: doomed.map((d) => d.name), chunksFreed, bytesFreed };
    });
    const warnings: string[] = [];
    let lmcacheCleared = 0;
    for (const entry of journal) {
      const out = await this.release(entry);
      lmcacheCleared += out.cleared;
      warnings.push(...out.warnings);
    }
    this.ctx.metrics.operations.inc({ op: 'delete', outcome: 'ok' }, res.deleted.length);
    return { ...res, lmcacheCleared, warnings };
  }

  async list(p: ListParams) {
    const reg = this.ctx.reg;
    const reverse = p.order === 'desc';
    // One index answers the query when it is the only filter (and sorts the way asked): read just the page from it.
    let prefix = 'c!';
    const rest = { tags: [...(p.tags ?? [])], model: p.model, session: p.session };
    if (p.session) {
      prefix = `s!${p.session}!`;
      rest.session = undefined;
    } else if (p.model) {
      prefix = modelPrefix(p.model);
      rest.model = undefined;
    } else if (rest.tags.length > 0) {
      prefix = `t!${rest.tags.shift()}!`;
    }
    const needsFilter = rest.tags.length > 0 || rest.model !== undefined || rest.session !== undefined || !!p.search;
    const range: IterOpts = { gte: prefix, lt: `${prefix}\xff`, reverse };
    if (
      !needsFilter &&
      (p.sort === 'created' || (p.sort === 'name' && prefix === 'c!') || (p.sort === 'tokens' && prefix === 'c!'))
    ) {
      const total = await reg.count(prefix);
      const names: string[] = [];
      let skipped = 0;
      if (p.sort === 'name') {
        for await (const key of reg.windows.keys({ reverse })) {
          if (skipped++ < p.offset) continue;
          names.push(key);
          if (names.length >= p.limit) break;
        }
      } else {
        const iter = p.sort === 'tokens' ? { gte: 'k!', lt: 'k!\xff', reverse } : range;
        for await (const key of reg.idx.keys(iter)) {
          if (skipped++ < p.offset) continue;
          names.push(nameFromIndexKey(key));
          if (names.length >= p.limit) break;
        }
      }
      const windows = ((await reg.windows.getMany(names)) as (WindowRecord | undefined)[]).filter(
        (w): w is WindowRecord => w !== undefined,
      );
      // The counter and the page are two reads: a window added in between must not make the page exceed the total.
      // (An empty page says nothing: an offset past the end must not raise the total to the offset.)
      return {
        windows: windows.map(toWindowInfo),
        total: windows.length > 0 ? Math.max(total, p.offset + windows.length) : total,
        limit: p.limit,
        offset: p.offset,
      };
    }
    // Slow path (no single index answers it): filter and sort the in-memory summary, then read only the page.
    return listFromSummary(reg.windowSummary, reg.windows, p);
  }

  async lineage(w: WindowRecord) {
    const ancestors: string[] = [];
    let missingParent: string | null = null;
    let cur: WindowRecord = w;
    const seen = new Set([w.name]);
    while (cur.parent) {
      const parent = await this.ctx.reg.getWindow(cur.parent);
      if (!parent) {
        missingParent = cur.parent;
        ancestors.push(cur.parent);
        break;
      }
      if (seen.has(parent.name)) break;
      seen.add(parent.name);
      ancestors.push(parent.name);
      cur = parent;
    }
    return {
      ancestors,
      children: await this.childrenOf(w.name),
      root: ancestors[ancestors.length - 1] ?? w.name,
      depth: ancestors.length,
      missingParent,
    };
  }
}
