import type { ChatMessage, SessionInfo, SessionState, Usage } from '../protocol/index.js';
import { CwmError } from '../protocol/index.js';
import type { BatchOp, Registry } from '../registry/db.js';
import type { SessionData, SessionRecord } from '../registry/records.js';
import type { AuditActor } from './audit.js';
import { nowIso, type ServiceContext } from './context.js';
import { newLineageRoot } from './salts.js';

/** Session data with a thawed session's window reference resolved to the window's messages or prompt. */
export async function resolveSessionData(reg: Registry, data: SessionData): Promise<SessionData> {
  if (!data.fromWindow) return data;
  const wdata = (await reg.getWindowData(data.fromWindow)) ?? {};
  const out: SessionData = { ...data };
  if (wdata.messages) out.messages = wdata.messages;
  if (wdata.prompt !== undefined) out.prompt = wdata.prompt;
  return out;
}

export function toSessionInfo(s: SessionRecord): SessionInfo {
  return {
    id: s.id,
    model: s.model,
    state: s.state,
    tokens: s.tokens,
    maxModelLen: s.maxModelLen,
    turns: s.turns,
    kind: s.kind,
    createdAt: s.createdAt,
    updatedAt: s.updatedAt,
    lastUsedAt: s.lastUsedAt,
    sourceWindow: s.sourceWindow,
    lastWindow: s.lastWindow,
    lastUsage: s.lastUsage,
    slot: s.slot,
  };
}

export interface RecordInput {
  session: string;
  model: string;
  messages?: ChatMessage[] | undefined;
  prompt?: string | number[] | undefined;
  completion?: string | undefined;
  usage?: Usage | undefined;
  /** Exact token ids of the context when the caller knows them (the gateway, a backend). */
  tokenIds?: number[] | undefined;
  /** Lineage root for a session created by this call (the gateway picks it before the first request's salt). */
  lineageRoot?: string | undefined;
  /** Turns this record stands for (default 1; the gateway folds turns it coalesced under load into one record). */
  turns?: number | undefined;
}

export function newSessionRecord(
  id: string,
  model: string,
  kind: 'chat' | 'completion',
  now = nowIso(),
): SessionRecord {
  return {
    id,
    model,
    state: 'active',
    kind,
    tokens: 0,
    maxModelLen: null,
    turns: 0,
    createdAt: now,
    updatedAt: now,
    lastUsedAt: now,
    sourceWindow: null,
    lastWindow: null,
    lastUsage: null,
    lineageRoot: newLineageRoot(),
    slot: null,
    autoFrozenAtTokens: null,
    autoFrozenAt: null,
  };
}

export class SessionService {
  private pendingWrites: ((session?: string) => Promise<void>) | null = null;

  constructor(private readonly ctx: ServiceContext) {}

  /** Who holds turns not yet written (the gateway's write-behind recorder); settle() waits for them. */
  setPendingWrites(fn: ((session?: string) => Promise<void>) | null): void {
    this.pendingWrites = fn;
  }

  /**
   * Write out any turns of `session` (of every session when omitted) still held back, so what is read next is
   * current. Call it before reading or replacing a session, and never inside the registry mutex (the writes take it).
   */
  settle(session?: string): Promise<void> {
    return this.pendingWrites ? this.pendingWrites(session) : Promise.resolve();
  }

  async get(id: string): Promise<SessionRecord> {
    const s = await this.ctx.reg.getSession(id);
    if (!s) {
      throw new CwmError('SESSION_NOT_FOUND', `no session "${id}"`, {
        hint: 'list sessions with `cwm sessions`; a session is created by `cwm session record` or the gateway',
      });
    }
    return s;
  }

  async maxModelLen(model: string): Promise<number | null> {
    try {
      const models = await this.ctx.backend.models();
      return models.find((m) => m.id === model)?.maxModelLen ?? models[0]?.maxModelLen ?? null;
    } catch {
      return null;
    }
  }

  /** Exact token ids of a recorded context, from the engine's own tokenizer. */
  async tokenize(model: string, data: SessionData): Promise<number[]> {
    if (data.messages) return this.ctx.backend.tokenizeChat(model, data.messages);
    const prompt = data.prompt ?? '';
    if (Array.isArray(prompt)) {
      const tail = data.completion ? await this.ctx.backend.tokenizePrompt(model, data.completion, false) : [];
      return [...prompt, ...tail];
    }
    return this.ctx.backend.tokenizePrompt(model, prompt + (data.completion ?? ''));
  }

  /**
   * Record a turn. tokens = the context length now (last prompt + completion, or the tokenized length of the
   * messages), never a sum over turns. The exact token ids are kept so a freeze needs no engine round trip.
   */
  async record(input: RecordInput, actor: AuditActor = 'rpc'): Promise<SessionRecord> {
    const kind = input.messages ? 'chat' : 'completion';
    const data: SessionData = input.messages
      ? { messages: input.messages }
      : {
          ...(input.prompt !== undefined ? { prompt: input.prompt } : {}),
          ...(input.completion !== undefined ? { completion: input.completion } : {}),
        };
    let tokenIds = input.tokenIds;
    if (!tokenIds) {
      try {
        tokenIds = await this.tokenize(input.model, data);
      } catch (err) {
        this.ctx.log.warn(
          { err, session: input.session },
          'could not tokenize the recorded context; freeze will retry',
        );
      }
    }
    if (tokenIds) data.tokenIds = tokenIds;
    const usageTokens = input.usage ? input.usage.prompt_tokens + (input.usage.completion_tokens ?? 0) : null;
    const maxModelLen = await this.maxModelLen(input.model);
    return this.ctx.reg.mutex.run(async () => {
      const now = nowIso();
      const existing = await this.ctx.reg.getSession(input.session);
      const s = existing ?? newSessionRecord(input.session, input.model, kind, now);
      if (!existing && input.lineageRoot) s.lineageRoot = input.lineageRoot;
      s.model = input.model;
      s.kind = kind;
      s.tokens = tokenIds?.length ?? usageTokens ?? s.tokens;
      s.maxModelLen = maxModelLen ?? s.maxModelLen;
      s.turns += input.turns ?? 1;
      s.updatedAt = now;
      s.lastUsedAt = now;
      s.lastUsage = input.usage ?? s.lastUsage;
      if (s.state !== 'ended') s.state = 'active';
      // Engines with slots (llama.cpp) report where the session runs now, so the binding survives a daemon restart.
      if (this.ctx.backend.slotOf) s.slot = this.ctx.backend.slotOf(s.id);
      const ops: BatchOp[] = [
        { type: 'put', sublevel: this.ctx.reg.sessions, key: s.id, value: s },
        this.ctx.reg.sessionDataOp(s.id, data),
      ];
      const deltas = new Map<string, number>();
      if (!existing) {
        deltas.set('sessions', 1);
        ops.push(this.ctx.audit.op({ action: 'session.create', actor, target: s.id, details: { model: s.model } }));
      }
      const next = await this.ctx.reg.countOps(deltas, ops);
      await this.ctx.reg.batch(ops);
      this.ctx.reg.commitCounts(next);
      return s;
    });
  }

  async list(opts: { state?: SessionState | undefined; model?: string | undefined; limit: number; offset: number }) {
    const matched: SessionRecord[] = [];
    for await (const v of this.ctx.reg.sessions.values()) {
      const s = v as SessionRecord;
      if (opts.state && s.state !== opts.state) continue;
      if (opts.model && s.model !== opts.model) continue;
      matched.push(s);
    }
    matched.sort((a, b) => (a.lastUsedAt < b.lastUsedAt ? 1 : a.lastUsedAt > b.lastUsedAt ? -1 : 0));
    return {
      sessions: matched.slice(opts.offset, opts.offset + opts.limit).map(toSessionInfo),
      total: matched.length,
    };
  }

  async end(id: string): Promise<SessionRecord> {
    await this.settle(id);
    return this.ctx.reg.mutex.run(async () => {
      const s = await this.get(id);
      s.state = 'ended';
      s.updatedAt = nowIso();
      await this.ctx.reg.batch([
        { type: 'put', sublevel: this.ctx.reg.sessions, key: s.id, value: s },
        this.ctx.audit.op({ action: 'session.end', actor: 'rpc', target: s.id }),
      ]);
      return s;
    });
  }
}
