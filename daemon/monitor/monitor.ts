import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { CwmError } from '../protocol/index.js';
import type { SessionRecord } from '../registry/records.js';
import type { ServiceContext } from '../services/context.js';
import type { WindowService } from '../services/windows.js';
import { type MemoryReading, readMemory } from './memory.js';
import {
  type AutoReason,
  autoWindowName,
  Hysteresis,
  idleCandidates,
  type ThresholdState,
  thresholdDue,
  tokenLimit,
} from './policy.js';

export interface MonitorDeps {
  ctx: ServiceContext;
  windows: WindowService;
  log: Logger;
  /** Host memory reading (injectable for tests); null when it cannot be read. */
  readMemory?: () => Promise<MemoryReading | null>;
}

export interface MonitorStatus {
  lastRunAt: string | null;
  pressure: { kvUsage: number | null; hostAvailable: number | null; underPressure: boolean };
}

/** After a failed automatic freeze, wait this long (or the cooldown, if longer) before trying that session again. */
const FAILURE_BACKOFF_S = 30;

/**
 * The monitor loop: every autoFreeze.intervalSeconds it reads the pressure signals and freezes sessions that
 * crossed the token threshold, then (under memory pressure) idle sessions, least recently used first, until
 * the reading is back under the low watermark. Policy is read live from the config on every run.
 */
export class Monitor {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private stopped = false;
  private armedSeconds = 0;
  private readonly hysteresis = new Hysteresis();
  private readonly rearmed = new Set<string>();
  private readonly failedAt = new Map<string, number>();
  private engineFailing = false;
  private kvUsage: number | null = null;
  private hostAvailable: number | null = null;
  lastRunAt: string | null = null;
  runs = 0;

  constructor(private readonly deps: MonitorDeps) {}

  private get cfg(): Config {
    return this.deps.ctx.cfg().config;
  }

  start(): void {
    this.stopped = false;
    this.schedule();
  }

  /** Apply a changed interval at once (called on config reload); a run in progress re-arms when it ends. */
  rearm(): void {
    if (this.stopped || this.running) return;
    if (this.cfg.autoFreeze.intervalSeconds === this.armedSeconds) return;
    if (this.timer) clearTimeout(this.timer);
    this.schedule();
  }

  private schedule(): void {
    this.armedSeconds = this.cfg.autoFreeze.intervalSeconds;
    this.timer = setTimeout(() => void this.tick(), this.armedSeconds * 1000);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    this.timer = null;
    if (this.stopped) return;
    this.running = this.runOnce();
    await this.running;
    this.running = null;
    if (!this.stopped) this.schedule();
  }

  status(): MonitorStatus {
    return {
      lastRunAt: this.lastRunAt,
      pressure: { kvUsage: this.kvUsage, hostAvailable: this.hostAvailable, underPressure: this.hysteresis.under },
    };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.running;
  }

  /** One pass. Never throws: a failing engine or registry is logged and counted, and the loop goes on. */
  async runOnce(): Promise<void> {
    const m = this.deps.ctx.metrics;
    try {
      await this.readSignals();
      if (this.cfg.autoFreeze.enabled) {
        const sessions = await this.loadSessions();
        const frozen = await this.thresholdPass(sessions);
        if (this.hysteresis.under) await this.pressurePass(sessions.filter((s) => !frozen.has(s.id)));
      }
      m.monitorRuns.inc({ outcome: 'ok' });
    } catch (err) {
      m.monitorRuns.inc({ outcome: 'error' });
      this.deps.log.warn({ err }, 'monitor run failed; trying again at the next interval');
    } finally {
      this.runs++;
      this.lastRunAt = new Date().toISOString();
    }
  }

  private async loadSessions(): Promise<SessionRecord[]> {
    // Turns the gateway holds back are written first, so the thresholds see every session as it is now.
    await this.deps.windows.sessions.settle();
    const out: SessionRecord[] = [];
    for await (const v of this.deps.ctx.reg.sessions.values()) out.push(v as SessionRecord);
    return out;
  }

  /** KV usage from the engine's /metrics and host memory; updates hysteresis, gauges and the audit log. */
  private async readSignals(): Promise<void> {
    const { ctx, log } = this.deps;
    const m = ctx.metrics;
    try {
      this.kvUsage = (await ctx.backend.metrics()).kvUsage;
      if (this.engineFailing) log.info('engine metrics are readable again');
      this.engineFailing = false;
    } catch (err) {
      this.kvUsage = null;
      m.engineErrors.inc({ code: err instanceof CwmError ? err.code : 'ENGINE_ERROR' });
      if (!this.engineFailing) log.warn({ err: (err as Error).message }, 'monitor cannot read engine metrics');
      this.engineFailing = true;
    }
    try {
      const mem = await (this.deps.readMemory ?? readMemory)();
      this.hostAvailable = mem?.fraction ?? null;
    } catch (err) {
      this.hostAvailable = null;
      log.debug({ err }, 'cannot read host memory');
    }
    if (this.kvUsage !== null) m.pressure.set({ signal: 'kv_usage' }, this.kvUsage);
    if (this.hostAvailable !== null) m.pressure.set({ signal: 'host_available' }, this.hostAvailable);
    const readings = { kvUsage: this.kvUsage, hostAvailable: this.hostAvailable };
    const { entered, left } = this.hysteresis.update(readings, this.cfg.pressure);
    m.underPressure.set({ reason: 'kv_pressure' }, this.hysteresis.kv ? 1 : 0);
    m.underPressure.set({ reason: 'host_memory' }, this.hysteresis.host ? 1 : 0);
    for (const [reason, state] of [
      ...entered.map((r) => [r, 'enter'] as const),
      ...left.map((r) => [r, 'leave'] as const),
    ]) {
      log.info({ reason, state, ...readings }, state === 'enter' ? 'memory pressure' : 'memory pressure over');
      await ctx.audit
        .record({ action: 'autofreeze.pressure', actor: 'monitor', reason, details: { state, ...readings } })
        .catch(() => {});
    }
  }

  private async thresholdPass(sessions: SessionRecord[]): Promise<Set<string>> {
    const p = this.cfg.autoFreeze;
    const now = Date.now();
    const frozen = new Set<string>();
    for (const s of sessions) {
      const limit = tokenLimit(s.maxModelLen, p);
      if (limit === null) continue;
      const st: ThresholdState = {
        tokens: s.tokens,
        state: s.state,
        lastAutoTokens: s.autoFrozenAtTokens,
        lastAutoAt: s.autoFrozenAt ? Date.parse(s.autoFrozenAt) : null,
        rearmed: this.rearmed.has(s.id),
      };
      if (st.lastAutoTokens === null && s.sourceWindow !== null && s.tokens >= limit) {
        // A session thawed from an automatic window continues that window's crossing, not a new one.
        const w = await this.deps.ctx.reg.getWindow(s.sourceWindow);
        if (w?.tags.includes('auto') && w.tokens >= limit) st.lastAutoTokens = w.tokens;
      }
      if (st.lastAutoTokens !== null && s.tokens < limit) this.rearmed.add(s.id);
      if (!thresholdDue(st, limit, now, p.cooldownSeconds) || this.backingOff(s.id, now)) continue;
      const ok = await this.freeze(s, 'threshold', { limit: Math.floor(limit), maxModelLen: s.maxModelLen });
      if (ok) frozen.add(s.id);
    }
    return frozen;
  }

  private async pressurePass(sessions: SessionRecord[]): Promise<void> {
    const cfg = this.cfg;
    const now = Date.now();
    let done = 0;
    for (const s of idleCandidates(sessions, now, cfg.pressure.idleSeconds)) {
      const reason = this.hysteresis.reason;
      if (reason === null || done >= cfg.pressure.maxFreezesPerRun) break;
      const lastAt = s.autoFrozenAt ? Date.parse(s.autoFrozenAt) : null;
      if (lastAt !== null && now - lastAt < cfg.autoFreeze.cooldownSeconds * 1000) continue;
      if (this.backingOff(s.id, now)) continue;
      if (s.lastWindow !== null) {
        const w = await this.deps.ctx.reg.getWindow(s.lastWindow);
        if (w && w.tokens === s.tokens) continue;
      }
      const readings = { kvUsage: this.kvUsage, hostAvailable: this.hostAvailable };
      if (await this.freeze(s, reason, readings)) done++;
      // Look again after each freeze: stop as soon as the reading is back under the low watermark.
      await this.readSignals();
    }
  }

  private backingOff(id: string, now: number): boolean {
    const at = this.failedAt.get(id);
    if (at === undefined) return false;
    if (now - at < Math.max(FAILURE_BACKOFF_S, this.cfg.autoFreeze.cooldownSeconds) * 1000) return true;
    this.failedAt.delete(id);
    return false;
  }

  private async freeze(s: SessionRecord, reason: AutoReason, details: Record<string, unknown>): Promise<boolean> {
    const { ctx, windows, log } = this.deps;
    const at = new Date();
    let name = autoWindowName(s.id, at);
    for (let n = 2; ; n++) {
      try {
        const r = await windows.freeze(
          {
            session: s.id,
            name,
            description: `automatic freeze (${reason}) of session ${s.id} at ${s.tokens} tokens`,
            tags: [reason],
            // Threshold freezes make sure the KV exists; under memory pressure only what is resident is pinned.
            prefill: reason === 'threshold',
          },
          'monitor',
          ['auto'],
        );
        this.rearmed.delete(s.id);
        this.failedAt.delete(s.id);
        ctx.metrics.autoFreezes.inc({ reason });
        await ctx.audit
          .record({
            action: 'autofreeze.freeze',
            actor: 'monitor',
            target: name,
            reason,
            details: { session: s.id, tokens: r.result.tokens, pinned: r.result.pinned, ...details },
          })
          .catch(() => {});
        log.info({ session: s.id, window: name, reason, tokens: r.result.tokens }, 'automatic freeze');
        return true;
      } catch (err) {
        if (err instanceof CwmError && err.code === 'WINDOW_EXISTS' && n <= 5) {
          name = autoWindowName(s.id, at, n);
          continue;
        }
        this.failedAt.set(s.id, Date.now());
        ctx.metrics.operations.inc({ op: 'freeze', outcome: 'error' });
        if (err instanceof CwmError && err.code.startsWith('ENGINE')) ctx.metrics.engineErrors.inc({ code: err.code });
        log.warn({ err: (err as Error).message, session: s.id, reason }, 'automatic freeze failed');
        await ctx.audit
          .record({
            action: 'autofreeze.freeze',
            actor: 'monitor',
            target: name,
            outcome: 'error',
            reason,
            details: { session: s.id, tokens: s.tokens, error: (err as Error).message, ...details },
          })
          .catch(() => {});
        return false;
      }
    }
  }
}
