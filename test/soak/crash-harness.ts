/**
 * Crash-consistency harness: workers drive a stream of mixed operations (session.record, window.freeze, clone,
 * delete, thaw) at the real daemon while it is SIGKILLed at random moments, with calls in flight. After each restart
 * it checks that the daemon's own start-up registry check found nothing to repair, that registry.check is clean, and
 * that every acknowledged operation is there, exactly (a model of acknowledged state). An operation cut off by the
 * kill may or may not have happened, but only as a whole: the harness reconciles it against the registry and fails
 * on anything in between.
 *
 * Used by test/integration/crash.test.ts (bounded, in `npm test`) and test/soak/soak.ts (long, `npm run soak`).
 */
import fs from 'node:fs';
import type { CwmClient } from '../../client/rpc-client.js';
import { isCwmError } from '../../daemon/protocol/index.js';
import { type DaemonHandle, startDaemon } from '../helpers/daemon.js';
import type { Simulator } from '../sim/index.js';

export const MODEL = 'sim/llama-3-8b-instruct';

export interface CrashOptions {
  sim: Simulator;
  /** Kills (and restarts) to perform. */
  kills: number;
  /** Keep going after `kills` until at least this many operations were attempted. */
  minOps: number;
  workers: number;
  /** Random run time before each kill, ms. */
  runMs: [number, number];
  seed: number;
  /** Verify every window's exact tokens after each restart (otherwise a rotating sample, and all at the end). */
  fullVerifyEachRestart?: boolean;
  /**
   * Also inject engine faults (503s, dropped and reset connections, slow answers, LMCache down) at random in each
   * run between kills. A thaw may then fail with a retryable engine error; it must have changed nothing.
   */
  engineFaults?: boolean;
  log?: (line: string) => void;
}

export interface CrashReport {
  seed: number;
  kills: number;
  restarts: number;
  opsAttempted: number;
  opsAcknowledged: number;
  opsCutOff: number;
  cutOffApplied: number;
  cutOffNotApplied: number;
  maxInFlightAtKill: number;
  /** Kills that hit while at least one call was in flight. */
  killsMidCall: number;
  /** Kills aimed at a freeze's commit (0-3 ms after its last engine call). */
  killsAtCommit: number;
  byOp: Record<string, { ok: number; cut: number; failed: number }>;
  windowsAtEnd: number;
  sessionsAtEnd: number;
  chunksAtEnd: number;
  lostRecords: number;
  startupRepairs: number;
  /** Engine requests the simulator faulted (engineFaults). */
  faultedRequests: number;
  /** Operations refused with a retryable engine error, verified to have changed nothing. */
  engineRefusals: number;
  problems: string[];
  seconds: number;
}

/** mulberry32: a small seeded PRNG, so a failing run can be replayed with its seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface WinModel {
  tokens: number[];
  parent: string | null;
}

type Pending =
  | { op: 'record'; session: string; ids: number[]; existed: boolean }
  | { op: 'freeze'; session: string; name: string }
  | { op: 'clone'; src: string; name: string }
  | { op: 'delete'; name: string; cascade: boolean; doomed: string[] }
  | { op: 'thaw'; name: string; session: string };

/** One worker's slice of the world: its own sessions and windows, so its operations are ordered. */
class Worker {
  sessions = new Map<string, number[]>();
  windows = new Map<string, WinModel>();
  pending: Pending | null = null;
  private n = 0;
  constructor(
    readonly id: number,
    readonly rand: () => number,
    readonly bases: number[][],
  ) {}

  fresh(kind: string): string {
    return `w${this.id}-${kind}${(this.n++).toString(36)}`;
  }

  pick<T>(xs: T[]): T | undefined {
    return xs.length === 0 ? undefined : xs[Math.floor(this.rand() * xs.length)];
  }

  /** Token ids sharing a base prefix with other workers' sessions (so chunks are shared across workers). */
  prompt(): number[] {
    const base = this.pick(this.bases) as number[];
    const shared = 256 * Math.floor(this.rand() * (base.length / 256 + 1));
    const tail = Math.floor(this.rand() * 700) + 1;
    const out = base.slice(0, shared);
    for (let i = 0; i < tail; i++) out.push(Math.floor(this.rand() * 128_000));
    return out;
  }

  descendants(name: string): string[] {
    const out = [name];
    for (let i = 0; i < out.length; i++) {
      for (const [n, w] of this.windows) if (w.parent === out[i] && !out.includes(n)) out.push(n);
    }
    return out;
  }
}

/**
 * A call cut off by the kill. CwmClient reports a connection that closed under a pending call as code INTERNAL with
 * a "CONNECTION_LOST: ..." message (json-rpc-2.0 wraps it; mcp-shim/link.ts matches the message the same way).
 */
export function isCut(err: unknown): boolean {
  if (!isCwmError(err)) return false;
  if (err.code === 'CONNECTION_LOST' || err.code === 'NOT_RUNNING') return true;
  return err.message.startsWith('CONNECTION_LOST') || err.message === 'the connection to cwmd is closed';
}

function sameTokens(a: readonly number[] | undefined, b: readonly number[]): boolean {
  if (!a || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

async function exists(c: CwmClient, name: string): Promise<boolean> {
  try {
    await c.call('window.get', { name });
    return true;
  } catch (err) {
    if (isCwmError(err) && err.code === 'WINDOW_NOT_FOUND') return false;
    throw err;
  }
}

async function sessionPrompt(c: CwmClient, id: string): Promise<number[] | null> {
  try {
    const s = await c.call('session.get', { session: id, messages: true });
    return Array.isArray(s.prompt) ? s.prompt : [];
  } catch (err) {
    if (isCwmError(err) && err.code === 'SESSION_NOT_FOUND') return null;
    throw err;
  }
}

export async function runCrash(opts: CrashOptions): Promise<CrashReport> {
  const t0 = Date.now();
  const log = opts.log ?? (() => {});
  const rand = rng(opts.seed);
  const bases = Array.from({ length: 3 }, () => Array.from({ length: 1024 }, () => Math.floor(rand() * 128_000)));
  const workers = Array.from({ length: opts.workers }, (_, i) => new Worker(i, rng(opts.seed * 7919 + i), bases));
  const report: CrashReport = {
    seed: opts.seed,
    kills: 0,
    restarts: 0,
    opsAttempted: 0,
    opsAcknowledged: 0,
    opsCutOff: 0,
    cutOffApplied: 0,
    cutOffNotApplied: 0,
    maxInFlightAtKill: 0,
    killsMidCall: 0,
    killsAtCommit: 0,
    byOp: {},
    windowsAtEnd: 0,
    sessionsAtEnd: 0,
    chunksAtEnd: 0,
    lostRecords: 0,
    startupRepairs: 0,
    faultedRequests: 0,
    engineRefusals: 0,
    problems: [],
    seconds: 0,
  };
  const count = (op: string, k: 'ok' | 'cut' | 'failed') => {
    report.byOp[op] ??= { ok: 0, cut: 0, failed: 0 };
    report.byOp[op][k]++;
  };
  const problem = (msg: string) => {
    report.problems.push(msg);
    log(`PROBLEM: ${msg}`);
  };

  let d: DaemonHandle = await startDaemon({
    engineUrl: opts.sim.url,
    env: { CWM_LMCACHE_URL: opts.sim.lmcacheUrl, CWM_AUTOFREEZE: 'false' },
  });
  let logOffset = 0;
  // The simulator counts every request it receives: hook that to see a freeze's last engine call.
  let pinHook: (() => void) | null = null;
  const origCount = opts.sim.state.count.bind(opts.sim.state);
  opts.sim.state.count = (server, path) => {
    origCount(server, path);
    if (pinHook && server === 'lmcache' && path === '/pin') pinHook();
  };
  let verifyRound = 0;

  /** The daemon's start-up check must have found nothing: a repair there would hide a torn write. */
  const checkStartupLog = () => {
    let text = '';
    try {
      text = fs.readFileSync(d.logFile, 'utf8');
    } catch {
      return;
    }
    const fresh = text.slice(logOffset);
    logOffset = text.length;
    for (const line of fresh.split('\n')) {
      if (line.includes('registry check found problems')) {
        report.startupRepairs++;
        problem(`start-up registry check had to repair: ${line.slice(0, 2000)}`);
      }
    }
  };

  const reconcile = async (c: CwmClient, w: Worker) => {
    const p = w.pending;
    if (!p) return;
    w.pending = null;
    let applied = false;
    switch (p.op) {
      case 'record': {
        const actual = await sessionPrompt(c, p.session);
        const before = w.sessions.get(p.session);
        if (sameTokens(actual ?? undefined, p.ids)) applied = true;
        else if (actual === null ? !p.existed : before !== undefined && sameTokens(actual, before)) applied = false;
        else problem(`record ${p.session}: the session holds neither the old nor the new context`);
        if (applied) w.sessions.set(p.session, p.ids);
        break;
      }
      case 'freeze': {
        applied = await exists(c, p.name);
        if (applied) {
          const tokens = w.sessions.get(p.session) as number[];
          w.windows.set(p.name, { tokens, parent: null });
        }
        break;
      }
      case 'clone': {
        applied = await exists(c, p.name);
        const src = w.windows.get(p.src);
        if (applied && src) w.windows.set(p.name, { tokens: src.tokens, parent: p.src });
        break;
      }
      case 'delete': {
        const present = await Promise.all(p.doomed.map((n) => exists(c, n)));
        if (present.every((x) => !x)) {
          applied = true;
          for (const n of p.doomed) w.windows.delete(n);
        } else if (!present.every((x) => x)) {
          problem(`delete ${p.name} (cascade ${p.cascade}) was torn: present ${JSON.stringify(present)}`);
        }
        break;
      }
      case 'thaw': {
        const actual = await sessionPrompt(c, p.session);
        applied = actual !== null;
        const win = w.windows.get(p.name);
        if (applied && win) w.sessions.set(p.session, win.tokens);
        break;
      }
    }
    if (applied) report.cutOffApplied++;
    else report.cutOffNotApplied++;
  };

  /** Every window and session the model holds is there with its exact tokens; nothing else of this worker is. */
  const verify = async (c: CwmClient, full: boolean) => {
    verifyRound++;
    const check = await c.call('registry.check', { repair: false });
    if (!check.ok)
      problem(`registry.check after restart ${report.restarts}: ${JSON.stringify(check.problems.slice(0, 5))}`);
    const listed = new Set<string>();
    for (let offset = 0; ; offset += 1000) {
      const page = await c.call('window.list', { sort: 'name', order: 'asc', limit: 1000, offset });
      for (const x of page.windows) listed.add(x.name);
      if (page.windows.length < 1000) break;
    }
    const expected = new Set<string>();
    for (const w of workers) for (const n of w.windows.keys()) expected.add(n);
    for (const n of expected) {
      if (!listed.has(n)) {
        report.lostRecords++;
        problem(`acknowledged window ${n} is missing`);
      }
    }
    for (const n of listed)
      if (!expected.has(n)) problem(`window ${n} exists but was never acknowledged or reconciled`);
    for (const w of workers) {
      const names = [...w.windows.keys()];
      const sample = full ? names : names.filter((_, i) => (i + verifyRound) % 4 === 0);
      for (const n of sample) {
        const model = w.windows.get(n) as WinModel;
        if (!listed.has(n)) continue;
        const got = await c.call('window.get', { name: n, tokens: true });
        if (!sameTokens(got.tokenIds, model.tokens)) {
          report.lostRecords++;
          problem(
            `window ${n}: tokens differ from the acknowledged freeze (${got.tokenIds?.length} vs ${model.tokens.length})`,
          );
        }
        if (got.parent !== model.parent) problem(`window ${n}: parent ${got.parent}, expected ${model.parent}`);
      }
      for (const [id, tokens] of w.sessions) {
        if (!full && (id.length + verifyRound) % 3 !== 0) continue;
        const s = await c.call('session.get', { session: id }).catch((err: unknown) => {
          report.lostRecords++;
          problem(`acknowledged session ${id} is missing: ${(err as Error).message}`);
          return null;
        });
        if (s && s.tokens !== tokens.length) {
          report.lostRecords++;
          problem(`session ${id}: ${s.tokens} tokens, expected ${tokens.length}`);
        }
      }
    }
  };

  const step = async (c: CwmClient, w: Worker): Promise<void> => {
    const r = w.rand();
    const winNames = [...w.windows.keys()];
    const sessIds = [...w.sessions.keys()];
    let p: Pending;
    if (sessIds.length === 0 || (r < 0.3 && sessIds.length < 8)) {
      const session = sessIds.length >= 6 ? (w.pick(sessIds) as string) : w.fresh('s');
      p = { op: 'record', session, ids: w.prompt(), existed: w.sessions.has(session) };
    } else if (r < 0.45) {
      p = { op: 'record', session: w.pick(sessIds) as string, ids: w.prompt(), existed: true };
    } else if (r < 0.65 || winNames.length === 0) {
      p = { op: 'freeze', session: w.pick(sessIds) as string, name: w.fresh('f') };
    } else if (r < 0.77 && winNames.length < 24) {
      p = { op: 'clone', src: w.pick(winNames) as string, name: w.fresh('c') };
    } else if (r < 0.9 || winNames.length >= 24) {
      const name = w.pick(winNames) as string;
      const cascade = w.rand() < 0.4;
      p = { op: 'delete', name, cascade, doomed: cascade ? w.descendants(name) : [name] };
    } else {
      p = { op: 'thaw', name: w.pick(winNames) as string, session: w.fresh('t') };
    }
    w.pending = p;
    report.opsAttempted++;
    try {
      switch (p.op) {
        case 'record':
          await c.call('session.record', { session: p.session, model: MODEL, prompt: p.ids });
          w.sessions.set(p.session, p.ids);
          break;
        case 'freeze': {
          const r2 = await c.call('window.freeze', { session: p.session, name: p.name });
          const tokens = w.sessions.get(p.session) as number[];
          if (r2.tokens !== tokens.length) problem(`freeze ${p.name}: ${r2.tokens} tokens, expected ${tokens.length}`);
          w.windows.set(p.name, { tokens, parent: null });
          break;
        }
        case 'clone': {
          await c.call('window.clone', { name: p.src, newName: p.name });
          w.windows.set(p.name, { tokens: (w.windows.get(p.src) as WinModel).tokens, parent: p.src });
          break;
        }
        case 'delete': {
          const r2 = await c.call('window.delete', { name: p.name, cascade: p.cascade });
          if ([...r2.deleted].sort().join() !== [...p.doomed].sort().join())
            problem(`delete ${p.name}: deleted ${r2.deleted.join()}, expected ${p.doomed.join()}`);
          // Surviving clones keep their parent's name (marked deleted in the registry).
          for (const n of p.doomed) w.windows.delete(n);
          break;
        }
        case 'thaw': {
          const r2 = await c.call('window.thaw', { name: p.name, newSession: p.session });
          const win = w.windows.get(p.name) as WinModel;
          if (r2.tokens !== win.tokens.length) problem(`thaw ${p.name}: ${r2.tokens} tokens`);
          w.sessions.set(p.session, win.tokens);
          break;
        }
      }
      w.pending = null;
      report.opsAcknowledged++;
      count(p.op, 'ok');
    } catch (err) {
      if (isCut(err)) {
        report.opsCutOff++;
        count(p.op, 'cut');
        throw err;
      }
      w.pending = null;
      count(p.op, 'failed');
      if (opts.engineFaults && p.op === 'thaw' && isCwmError(err) && err.retryable && err.code.startsWith('ENGINE')) {
        // a thaw the engine could not serve: it must have left no session behind
        report.engineRefusals++;
        if ((await sessionPrompt(c, p.session)) !== null)
          problem(`thaw ${p.name} failed but left session ${p.session}`);
        return;
      }
      problem(`${p.op} failed with a non-crash error: ${(err as Error).message}`);
    }
  };

  const FAULTS: Parameters<Simulator['setFaults']>[0][] = [
    { mode: '503', count: 3 },
    { mode: 'drop', count: 2 },
    { mode: 'reset-mid-stream', count: 2, paths: ['/v1/completions'] },
    { mode: 'slow', delayMs: 150, count: 5 },
    { mode: '503', count: 4, target: 'lmcache' },
    { mode: 'down', target: 'lmcache', count: 20 },
  ];
  const harvestFaults = () => {
    for (const target of ['vllm', 'lmcache'] as const)
      report.faultedRequests += opts.sim.state.faults[target].status().affected;
    opts.sim.setFaults({ mode: 'none' });
    opts.sim.setFaults({ mode: 'none', target: 'lmcache' });
  };

  try {
    let c = await d.client();
    while (report.kills < opts.kills || report.opsAttempted < opts.minOps) {
      const clients = await Promise.all(workers.map(() => d.client()));
      if (opts.engineFaults) opts.sim.setFaults(FAULTS[Math.floor(rand() * FAULTS.length)] as (typeof FAULTS)[number]);
      let stop = false;
      let inFlight = 0;
      const loops = workers.map(async (w, i) => {
        const wc = clients[i] as CwmClient;
        while (!stop) {
          inFlight++;
          try {
            await step(wc, w);
          } catch {
            return;
          } finally {
            inFlight--;
          }
        }
      });
      const [lo, hi] = opts.runMs;
      await new Promise((r) => setTimeout(r, lo + rand() * (hi - lo)));
      if (rand() < 0.5) {
        // Aim at a commit: a freeze pins its chunks in LMCache (/pin) just before its registry batch, so kill
        // 0-3 ms after the next /pin the simulator sees (or give up after 500 ms and kill anyway).
        const hit = await new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(false), 500);
          pinHook = () => {
            pinHook = null;
            clearTimeout(timer);
            setTimeout(() => resolve(true), rand() * 3);
          };
        });
        pinHook = null;
        if (hit) report.killsAtCommit++;
      }
      // Stop starting new calls, then kill at once: the calls already sent are cut off mid-flight.
      stop = true;
      const atKill = inFlight;
      await d.kill('SIGKILL');
      report.kills++;
      if (atKill > 0) report.killsMidCall++;
      report.maxInFlightAtKill = Math.max(report.maxInFlightAtKill, atKill);
      if (opts.engineFaults) harvestFaults();
      await Promise.all(loops);
      for (const x of clients) x.close();
      c.close();
      d = await d.restart();
      report.restarts++;
      checkStartupLog();
      c = await d.client();
      for (const w of workers) await reconcile(c, w);
      await verify(c, !!opts.fullVerifyEachRestart);
      log(
        `kill ${report.kills}: ${atKill} calls in flight; ops ${report.opsAttempted} (${report.opsAcknowledged} acknowledged), problems ${report.problems.length}`,
      );
      if (report.problems.length > 20) break;
    }
    await verify(c, true);
    const st = await c.call('daemon.status');
    report.windowsAtEnd = st.counts.windows;
    report.sessionsAtEnd = st.counts.sessions;
    report.chunksAtEnd = st.counts.chunks;
    c.close();
  } finally {
    opts.sim.state.count = origCount;
    await d.stop();
    report.seconds = (Date.now() - t0) / 1000;
  }
  checkStartupLog();
  return report;
}
