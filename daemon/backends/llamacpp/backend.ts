/**
 * llama.cpp (`llama-server`) backend: sessions live in slots, and a window's KV is the slot's own state saved
 * to a file (`POST /slots/{id}?action=save`) in the server's --slot-save-path, which is cwm's engine.slotDir.
 *
 * freeze: make the slot hold exactly the window's tokens (one /completion with n_predict 0 and cache_prompt:
 *         only the tokens the slot lacks are computed), save it to `<window-id>.bin`, check the file's packed token
 *         list against the window's tokens, record size + sha256.
 * thaw:   verify size, checksum and token list, restore into a free slot (swapping an idle session's slot out to
 *         a file first if all are taken), check n_restored. Nothing else is evaluated, so the next request runs
 *         on bit-for-bit the KV the frozen session had. A missing, truncated, corrupt or refused file falls back
 *         to replaying the exact tokens, with a warning.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import type { Logger } from 'pino';
import type { Config } from '../../config.js';
import type { ChatMessage, Residency } from '../../protocol/index.js';
import { CwmError } from '../../protocol/index.js';
import type { StateFileRecord } from '../../registry/records.js';
import { EngineHttp, jsonWithTokens, tokenIdsFrom } from '../http.js';
import { parsePrometheus, sumOf } from '../prometheus.js';
import type {
  EngineBackend,
  EngineMetrics,
  HealthReport,
  KvFreezeInput,
  KvFreezeResult,
  KvPinInput,
  KvReleaseInput,
  KvReleaseResult,
  KvThawInput,
  KvThawResult,
  ModelInfo,
} from '../types.js';
import { SlotTable } from './slots.js';
import {
  checkStateFile,
  commonPrefix,
  describeStateFile,
  isFlatStateName,
  readStateHeader,
  removeStateFile,
  stateFileName,
  statePath,
} from './state-file.js';

const PROPS_TTL_MS = 30_000;
const SWAP_PREFIX = 'cwm-swap-';

export interface LlamaProps {
  totalSlots: number;
  /** Context of one slot (`-c` split over `-np`): the most a session can hold. */
  nCtx: number;
  modelPath: string | null;
  buildInfo: string | null;
}

interface PropsBody {
  total_slots?: number;
  default_generation_settings?: { n_ctx?: number };
  model_path?: string;
  build_info?: string;
}

interface SlotBody {
  id: number;
  n_ctx?: number;
  is_processing?: boolean;
  n_prompt_tokens?: number;
  next_token?: { n_decoded?: number }[] | { n_decoded?: number };
}

interface SlotActionBody {
  id_slot?: number;
  n_saved?: number;
  n_restored?: number;
  n_erased?: number;
  n_written?: number;
  n_read?: number;
  error?: { message?: string } | string;
}

interface CompletionBody {
  tokens_evaluated?: number;
  tokens_cached?: number;
  timings?: { cache_n?: number; prompt_n?: number; prompt_ms?: number };
}

function errorMessage(body: unknown): string {
  if (typeof body === 'string') return body.slice(0, 300);
  if (typeof body === 'object' && body !== null) {
    const e = (body as SlotActionBody).error;
    if (typeof e === 'string') return e;
    if (e && typeof e.message === 'string') return e.message;
  }
  return JSON.stringify(body).slice(0, 300);
}

/** The swap file of a session whose slot was given to another session: flat, fixed-length, no session id leaks. */
export function swapFileName(session: string): string {
  return `${SWAP_PREFIX}${createHash('sha256').update(session).digest('hex').slice(0, 32)}.bin`;
}

interface Prefill {
  cached: number;
  computed: number;
  ms: number;
}

export class LlamaCppBackend implements EngineBackend {
  readonly kind = 'llamacpp' as const;
  readonly url: string;
  readonly lmcacheUrl = null;
  readonly slotDir: string | null;
  private readonly http: EngineHttp;
  private readonly table = new SlotTable();
  /** Slots an operation (freeze prefill + save) is using right now: never chosen for eviction. */
  private readonly held = new Map<number, number>();
  /** Sessions swapped out of their slot: session → swap file in the slot dir. */
  private readonly swapped = new Map<string, string>();
  private propsCache: { at: number; props: LlamaProps } | null = null;
  private modelsCache: { at: number; models: ModelInfo[] } | null = null;
  private swapSwept = false;

  constructor(
    cfg: Config['engine'],
    private readonly log: Logger,
  ) {
    this.url = cfg.url.replace(/\/+$/, '');
    this.slotDir = cfg.slotDir;
    this.http = new EngineHttp(this.url, {
      timeoutMs: cfg.timeoutMs,
      retries: cfg.retries,
      apiKey: cfg.apiKey,
      label: 'llama-server',
    });
  }

  // ---- engine facts ----

  async props(force = false): Promise<LlamaProps> {
    if (!force && this.propsCache && Date.now() - this.propsCache.at < PROPS_TTL_MS) return this.propsCache.props;
    const r = await this.http.json<PropsBody>('GET', '/props');
    const b = r.body;
    const totalSlots = b.total_slots ?? 1;
    const props: LlamaProps = {
      totalSlots,
      nCtx: b.default_generation_settings?.n_ctx ?? 0,
      modelPath: b.model_path ?? null,
      buildInfo: b.build_info ?? null,
    };
    this.propsCache = { at: Date.now(), props };
    this.table.resize(totalSlots);
    if (!this.swapSwept) {
      this.swapSwept = true;
      await this.sweepSwapFiles();
    }
    return props;
  }

  /** Swap files belong to the slot table of the daemon that wrote them; a new daemon starts without them. */
  private async sweepSwapFiles(): Promise<void> {
    if (!this.slotDir) return;
    try {
      for (const f of await fs.readdir(this.slotDir)) {
        if (f.startsWith(SWAP_PREFIX) && isFlatStateName(f)) await removeStateFile(this.slotDir, f).catch(() => false);
      }
    } catch {
      // the slot dir may not exist yet, or not be readable by the daemon; freeze reports that
    }
  }

  async models(): Promise<ModelInfo[]> {
    if (this.modelsCache && Date.now() - this.modelsCache.at < PROPS_TTL_MS) return this.modelsCache.models;
    const [r, props] = await Promise.all([
      this.http.json<{ data?: { id: string }[] }>('GET', '/v1/models'),
      this.props(),
    ]);
    const models = (r.body.data ?? []).map((m) => ({ id: m.id, maxModelLen: props.nCtx > 0 ? props.nCtx : null }));
    this.modelsCache = { at: Date.now(), models };
    return models;
  }

  async version(): Promise<string | null> {
    try {
      return (await this.props()).buildInfo;
    } catch {
      return null;
    }
  }

  /**
   * The context as the server evaluates a chat: its own template (/apply-template, no generation prompt; a final
   * assistant message is rendered open, exactly as the server continues it), tokenized like the chat endpoint
   * does (BOS added, special tokens parsed). After a turn this equals the slot's tokens plus the last sampled one.
   */
  async tokenizeChat(_model: string, messages: ChatMessage[]): Promise<number[]> {
    const t = await this.http.json<{ prompt?: string }>('POST', '/apply-template', {
      messages,
      add_generation_prompt: false,
    });
    if (typeof t.body.prompt !== 'string') {
      throw new CwmError('ENGINE_ERROR', 'llama-server /apply-template answered without a prompt', {
        hint: 'is the engine a llama-server with a chat template?',
      });
    }
    return this.tokenize(t.body.prompt, true);
  }

  async tokenizePrompt(_model: string, prompt: string, addSpecial = true): Promise<number[]> {
    return this.tokenize(prompt, addSpecial);
  }

  private async tokenize(content: string, addSpecial: boolean): Promise<number[]> {
    const r = await this.http.json<{ tokens?: unknown }>('POST', '/tokenize', {
      content,
      add_special: addSpecial,
      parse_special: true,
    });
    return tokenIdsFrom(r.body?.tokens, 'llama-server /tokenize');
  }

  private async slotList(): Promise<SlotBody[]> {
    const r = await this.http.json<SlotBody[]>('GET', '/slots', undefined, { retry: false, timeoutMs: 5000 });
    return Array.isArray(r.body) ? r.body : [];
  }

  /** kv_cache_usage metrics were removed from llama-server: KV in use = tokens held by the slots / their n_ctx. */
  async metrics(): Promise<EngineMetrics> {
    const out: EngineMetrics = {
      kvUsage: null,
      prefixCacheQueries: null,
      prefixCacheHits: null,
      externalPrefixCacheHits: null,
      requestsRunning: null,
      requestsWaiting: null,
      blockSize: null,
    };
    const [text, slots] = await Promise.all([
      this.http
        .json<string>('GET', '/metrics', undefined, { retry: false, timeoutMs: 5000, acceptStatus: (s) => s === 200 })
        .then((r) => (typeof r.body === 'string' ? r.body : null))
        .catch(() => null),
      this.slotList().catch(() => null),
    ]);
    if (text !== null) {
      const m = parsePrometheus(text);
      const computed = sumOf(m, 'llamacpp:prompt_tokens_total');
      const cached = sumOf(m, 'llamacpp:prompt_tokens_cached_total');
      out.prefixCacheQueries = computed !== null ? computed + (cached ?? 0) : null;
      out.prefixCacheHits = cached;
      out.requestsRunning = sumOf(m, 'llamacpp:requests_processing');
      out.requestsWaiting = sumOf(m, 'llamacpp:requests_deferred');
    }
    if (slots && slots.length > 0) {
      let used = 0;
      let cap = 0;
      for (const s of slots) {
        const nt = Array.isArray(s.next_token) ? s.next_token[0] : s.next_token;
        used += (s.n_prompt_tokens ?? 0) + (s.is_processing ? (nt?.n_decoded ?? 0) : 0);
        cap += s.n_ctx ?? 0;
      }
      if (cap > 0) out.kvUsage = Math.min(1, used / cap);
    }
    if (text === null && !slots) throw new CwmError('ENGINE_UNAVAILABLE', `llama-server at ${this.url} has no metrics`);
    return out;
  }

  async health(): Promise<HealthReport> {
    try {
      const r = await this.http.json('GET', '/health', undefined, { retry: false, timeoutMs: 3000 });
      const p = await this.props(true).catch(() => null);
      const detail = p ? ` (${p.totalSlots} slots of ${p.nCtx} tokens)` : '';
      const slotDir = this.slotDir ? '' : '; engine.slotDir is not set, so windows get no KV state files';
      return { ok: true, latencyMs: r.ms, message: `llama-server at ${this.url} is healthy${detail}${slotDir}` };
    } catch (err) {
      return { ok: false, latencyMs: null, message: (err as Error).message };
    }
  }

  async lmcacheHealth(): Promise<HealthReport | null> {
    return null;
  }

  // ---- slots ----

  /** The slot a session is bound to in this daemon (null: none right now). */
  slotOf(session: string): number | null {
    return this.table.slotOf(session);
  }

  private hold(slot: number): void {
    this.held.set(slot, (this.held.get(slot) ?? 0) + 1);
  }

  private unhold(slot: number): void {
    const n = (this.held.get(slot) ?? 0) - 1;
    if (n <= 0) this.held.delete(slot);
    else this.held.set(slot, n);
  }

  /**
   * Bind a session to a slot: its own, its previous one, a free one, or the least recently used idle one, whose
   * session is swapped out to a file first (and swapped back in on its next request). With hold, the slot is
   * protected from eviction until unhold.
   */
  private acquire(session: string, hint: number | null, hold = false): Promise<number> {
    return this.table.mutex.run(async () => {
      await this.props();
      let busy = new Set<number>();
      const own = this.table.slotOf(session);
      const hintFree = hint !== null && this.table.valid(hint) && this.table.holder(hint) === null;
      const anyFree = this.table.snapshot().some((e) => e.session === null);
      if (own === null && !hintFree && !anyFree) {
        busy = new Set(
          (await this.slotList().catch(() => [] as SlotBody[])).filter((s) => s.is_processing).map((s) => s.id),
        );
      }
      const choice = this.table.choose(session, hint, (id) => busy.has(id) || this.held.has(id));
      if (choice.victim) {
        this.log.info({ slot: choice.slot, victim: choice.victim, session, how: choice.how }, 'slot handed over');
        await this.swapOut(choice.victim, choice.slot);
      }
      this.table.bind(choice.slot, session);
      if (this.swapped.has(session)) await this.swapIn(session, choice.slot);
      if (hold) this.hold(choice.slot);
      return choice.slot;
    });
  }

  private async swapOut(victim: string, slot: number): Promise<void> {
    this.table.release(victim);
    if (!this.slotDir) return;
    const file = swapFileName(victim);
    try {
      const r = await this.slotAction(slot, 'save', file);
      if (r.ok && (r.body.n_saved ?? 0) > 0) {
        this.swapped.set(victim, file);
        return;
      }
      if (!r.ok) this.log.warn({ slot, victim, error: r.message }, 'could not swap a session out of its slot');
      await removeStateFile(this.slotDir, file).catch(() => false);
    } catch (err) {
      this.log.warn({ err, slot, victim }, 'could not swap a session out of its slot; its KV will be recomputed');
    }
  }

  private async swapIn(session: string, slot: number): Promise<void> {
    const file = this.swapped.get(session);
    this.swapped.delete(session);
    if (!file || !this.slotDir) return;
    try {
      const r = await this.slotAction(slot, 'restore', file);
      if (!r.ok) this.log.warn({ slot, session, error: r.message }, 'could not swap a session back into a slot');
    } catch (err) {
      this.log.warn({ err, slot, session }, 'could not swap a session back into a slot; its KV will be recomputed');
    } finally {
      await removeStateFile(this.slotDir, file).catch(() => false);
    }
  }

  private async slotAction(
    slot: number,
    action: 'save' | 'restore' | 'erase',
    filename?: string,
  ): Promise<{ ok: boolean; status: number; body: SlotActionBody; message: string; ms: number }> {
    const props = await this.props();
    if (!Number.isInteger(slot) || slot < 0 || slot >= props.totalSlots) {
      // llama-server would silently wrap an out-of-range id onto another slot.
      throw new CwmError('INVALID_STATE', `slot ${slot} does not exist (llama-server has ${props.totalSlots})`);
    }
    const r = await this.http.json<SlotActionBody>(
      'POST',
      `/slots/${slot}?action=${action}`,
      filename === undefined ? {} : { filename },
      { acceptStatus: () => true },
    );
    const ok = r.status >= 200 && r.status < 300;
    return { ok, status: r.status, body: r.body, message: ok ? '' : errorMessage(r.body), ms: r.ms };
  }

  /** Make a slot hold exactly these tokens: cache_prompt reuses the common prefix, n_predict 0 computes the rest. */
  private async prefill(slot: number, tokens: number[]): Promise<Prefill> {
    const r = await this.http.json<CompletionBody>(
      'POST',
      '/completion',
      jsonWithTokens({ n_predict: 0, id_slot: slot, cache_prompt: true, temperature: 0 }, 'prompt', tokens),
      { retry: true },
    );
    const t = r.body.timings ?? {};
    const computed = t.prompt_n ?? tokens.length;
    return { cached: t.cache_n ?? Math.max(0, tokens.length - computed), computed, ms: r.ms };
  }

  // ---- freeze / thaw / clone / delete ----

  private noState(warnings: string[], msg: string, engineMs = 0, cached = false): KvFreezeResult {
    warnings.push(msg);
    return { pinned: false, cached, residency: cached ? 'unknown' : 'lost', stateFile: null, engineMs, warnings };
  }

  async freezeKv(input: KvFreezeInput): Promise<KvFreezeResult> {
    const warnings: string[] = [];
    const n = input.tokens.length;
    const session = input.session.id;
    if (!this.slotDir) {
      return this.noState(
        warnings,
        'engine.slotDir is not set (CWM_SLOT_DIR, --slot-dir): no KV state file was saved; thaw will recompute the context. Set it to llama-server --slot-save-path',
      );
    }
    const name = stateFileName(input.windowId);
    const props = await this.props();
    if (props.nCtx > 0 && n > props.nCtx) {
      return this.noState(
        warnings,
        `the context (${n} tokens) is larger than one llama-server slot (${props.nCtx} tokens): no KV state was saved`,
      );
    }
    let engineMs = 0;
    let slot: number | null = null;
    try {
      if (input.prefill) {
        slot = await this.acquire(session, input.session.slot, true);
        const pre = await this.prefill(slot, input.tokens);
        engineMs += pre.ms;
        if (pre.computed > 1) {
          this.log.info(
            { session, slot, cached: pre.cached, computed: pre.computed, tokens: n },
            'freeze prefill computed tokens the slot did not hold',
          );
        }
      } else {
        slot = this.table.slotOf(session);
        if (slot === null) {
          const swap = this.swapped.get(session);
          if (swap) {
            // The session's KV is already in a file: a copy is the window's state.
            const t0 = performance.now();
            await fs.copyFile(statePath(this.slotDir, swap), statePath(this.slotDir, name));
            engineMs += performance.now() - t0;
            return await this.recordState(name, input.tokens, engineMs, warnings);
          }
          return this.noState(
            warnings,
            'prefill skipped and the session holds no llama-server slot: no KV state was saved; thaw will recompute the context',
          );
        }
        this.hold(slot);
      }
      const saved = await this.slotAction(slot, 'save', name);
      engineMs += saved.ms;
      if (!saved.ok) {
        const hint =
          saved.status === 501
            ? ` (start llama-server with --slot-save-path ${this.slotDir})`
            : saved.status === 400
              ? ' (is engine.slotDir the same directory as llama-server --slot-save-path?)'
              : '';
        return this.noState(warnings, `llama-server could not save slot ${slot}: ${saved.message}${hint}`, engineMs);
      }
      return await this.recordState(name, input.tokens, engineMs, warnings, saved.body.n_saved);
    } finally {
      if (slot !== null) this.unhold(slot);
    }
  }

  /** After a save: the file must be in the slot dir and hold the window's tokens; its size and sha256 are recorded. */
  private async recordState(
    name: string,
    tokens: number[],
    engineMs: number,
    warnings: string[],
    nSaved?: number,
  ): Promise<KvFreezeResult> {
    const dir = this.slotDir as string;
    const n = tokens.length;
    let rec: StateFileRecord;
    let header: Awaited<ReturnType<typeof readStateHeader>>;
    try {
      rec = await describeStateFile(dir, name);
      header = await readStateHeader(statePath(dir, name));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      return this.noState(
        warnings,
        code === 'ENOENT'
          ? `llama-server saved ${name}, but it is not in engine.slotDir (${dir}): that must be the directory llama-server got as --slot-save-path`
          : `the saved state file ${name} cannot be read: ${(err as Error).message}`,
        engineMs,
        true,
      );
    }
    if (!header) {
      await removeStateFile(dir, name).catch(() => false);
      return this.noState(warnings, `llama-server saved ${name} in a format this daemon cannot read`, engineMs, true);
    }
    const held = header.tokens.length;
    if (nSaved !== undefined && nSaved !== held) {
      warnings.push(`llama-server reported ${nSaved} tokens saved, the file lists ${held}`);
    }
    const common = commonPrefix(header.tokens, tokens);
    let residency: Residency = 'ready';
    if (common === 0) {
      await removeStateFile(dir, name).catch(() => false);
      return this.noState(
        warnings,
        held === 0
          ? "the session's slot is empty (was llama-server restarted?): no KV state was saved; thaw will recompute the context"
          : `the slot held another context (none of its ${held} tokens match this window): no KV state was kept`,
        engineMs,
      );
    }
    if (common < n || held !== n) {
      residency = 'partial';
      warnings.push(
        common === n
          ? `the session moved on while it was frozen: the state file holds the window's ${n} tokens and ${held - n} more`
          : common === held
            ? `the slot held ${held} of the window's ${n} tokens: the other ${n - held} are computed on the first request after thaw`
            : `the slot's tokens differ from the window's at token ${common} of ${n} (the engine evaluated another tokenization): ${n - common} tokens will be recomputed after thaw`,
      );
    }
    return { pinned: true, cached: true, residency, stateFile: rec, engineMs, warnings };
  }

  async thawKv(input: KvThawInput): Promise<KvThawResult> {
    const warnings: string[] = [];
    const tokens = input.tokens;
    const n = tokens.length;
    const sf = input.window.stateFile;
    const t0 = performance.now();
    let header: { tokens: number[] } | null = null;
    if (!sf) {
      warnings.push(`window "${input.window.name}" has no KV state file (it was frozen without one)`);
    } else if (!this.slotDir) {
      warnings.push("engine.slotDir is not set: the window's KV state file cannot be checked or restored");
    } else {
      const check = await checkStateFile(this.slotDir, sf);
      if (check.ok) {
        header = check.header;
        const common = commonPrefix(header.tokens, tokens);
        if (common === 0) {
          warnings.push(`state file ${sf.file} holds other tokens than window "${input.window.name}"`);
          header = null;
        }
      } else {
        warnings.push(check.message);
      }
    }
    const props = await this.props();
    if (header && props.nCtx > 0 && header.tokens.length > props.nCtx) {
      warnings.push(`state file holds ${header.tokens.length} tokens, more than a slot's ${props.nCtx}`);
      header = null;
    }
    if (!header && !input.warm) {
      warnings.push('not warmed: the first request of the new session will recompute the context');
      return this.thawResult(input, null, { warmed: false, cached: 0, ms: performance.now() - t0, warnings });
    }
    const slot = await this.acquire(input.session.id, null, true);
    try {
      let restored = 0;
      if (header && sf) {
        const r = await this.slotAction(slot, 'restore', sf.file);
        if (!r.ok) {
          warnings.push(
            `llama-server refused state file ${sf.file}: ${r.message} (a state file only loads into the same model, KV type and llama.cpp version)`,
          );
        } else if (r.body.n_restored !== header.tokens.length) {
          warnings.push(
            `llama-server restored ${r.body.n_restored ?? 0} tokens from ${sf.file}, the file lists ${header.tokens.length}`,
          );
          await this.slotAction(slot, 'erase').catch(() => null);
        } else {
          restored = commonPrefix(header.tokens, tokens);
        }
      }
      if (restored > 0) {
        // Nothing more is evaluated: the next request computes exactly what the frozen session's next one would.
        return this.thawResult(input, slot, {
          warmed: true,
          cached: restored,
          ms: performance.now() - t0,
          warnings,
        });
      }
      if (!input.warm) {
        warnings.push('not warmed: the first request of the new session will recompute the context');
        return this.thawResult(input, slot, { warmed: false, cached: 0, ms: performance.now() - t0, warnings });
      }
      // Token replay: the exact context is still restored, just computed again.
      await this.slotAction(slot, 'erase').catch(() => null);
      const pre = await this.prefill(slot, tokens);
      warnings.push(`replayed the exact ${n} tokens instead (${pre.computed} computed in ${pre.ms.toFixed(0)} ms)`);
      return this.thawResult(input, slot, {
        warmed: true,
        cached: pre.cached,
        ms: performance.now() - t0,
        warnings,
        ttftMs: pre.ms,
      });
    } finally {
      this.unhold(slot);
    }
  }

  private thawResult(
    input: KvThawInput,
    slot: number | null,
    r: { warmed: boolean; cached: number; ms: number; warnings: string[]; ttftMs?: number },
  ): KvThawResult {
    const n = input.tokens.length;
    const cached = Math.min(n, r.cached);
    const residency: Residency = !r.warmed ? 'lost' : cached >= n ? 'ready' : cached > 0 ? 'partial' : 'lost';
    if (r.warmed && cached > 0 && cached < n) {
      r.warnings.push(
        `${cached} of ${n} tokens came from the state file; the next request computes the other ${n - cached}`,
      );
    }
    return {
      warmed: r.warmed,
      cachedTokens: cached,
      recomputedTokens: r.warmed ? n - cached : 0,
      maxCacheableTokens: n,
      ttftMs: r.ttftMs ?? null,
      engineMs: r.ms,
      residency,
      residencyByTier: null,
      slot,
      warnings: r.warnings,
    };
  }

  /** A clone shares the parent's state file; the registry counts the references (`sf!<file>`). */
  async retainKv(input: KvPinInput): Promise<{ pinned: boolean; warnings: string[] }> {
    const sf = input.window.stateFile;
    if (!sf || !this.slotDir) return { pinned: false, warnings: [] };
    try {
      await fs.access(statePath(this.slotDir, sf.file));
      return { pinned: true, warnings: [] };
    } catch {
      return { pinned: false, warnings: [`the shared state file ${sf.file} is missing from ${this.slotDir}`] };
    }
  }

  /** The state file goes when the last window referencing it goes. */
  async releaseKv(input: KvReleaseInput): Promise<KvReleaseResult> {
    const sf = input.window.stateFile;
    if (!sf || !input.lastReference) return { cleared: 0, warnings: [] };
    if (!this.slotDir) {
      return { cleared: 0, warnings: [`engine.slotDir is not set: state file ${sf.file} was not deleted`] };
    }
    try {
      await removeStateFile(this.slotDir, sf.file);
      return { cleared: 0, warnings: [] };
    } catch (err) {
      this.log.warn({ err, file: sf.file }, 'could not delete a state file');
      return {
        cleared: 0,
        warnings: [`could not delete state file ${sf.file} yet (cwmd retries): ${(err as Error).message}`],
        retry: true,
      };
    }
  }

  /** A session's requests go to its slot (bound now if it has none) with cache_prompt on. */
  async decorateRequest(
    body: Record<string, unknown>,
    ctx: { salt: string; session: { id: string; slot: number | null } },
  ) {
    body.cache_prompt = true;
    try {
      body.id_slot = await this.acquire(ctx.session.id, ctx.session.slot);
    } catch (err) {
      // Without a valid slot the server picks one; the request still works, it just may not reuse the KV.
      delete body.id_slot;
      this.log.warn({ err, session: ctx.session.id }, 'could not bind the session to a llama-server slot');
    }
  }

  async close(): Promise<void> {
    await this.http.close();
  }
}
