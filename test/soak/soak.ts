/**
 * The long soak behind docs/RELIABILITY.md: `npm run soak` (builds first).
 *
 *   1. crash consistency: SIGKILLs at random moments (half aimed at a freeze's commit) during mixed operations from
 *      8 clients, with engine faults injected between kills; every restart checks every invariant and every
 *      acknowledged operation;
 *   2. hostile input: malformed frames over many connections while a client keeps working, RSS sampled.
 *
 * Sizes come from the environment (defaults in brackets): CWM_SOAK_KILLS [200], CWM_SOAK_OPS [20000],
 * CWM_SOAK_FRAMES [1000000], CWM_SOAK_SEED [random]. `--out FILE` also writes the report as JSON.
 * Exit status 1 when anything was lost or any check failed.
 */
import fs from 'node:fs';
import { startDaemon } from '../helpers/daemon.js';
import { startSimulator } from '../sim/index.js';
import { type CrashReport, MODEL, runCrash } from './crash-harness.js';
import { type FuzzReport, runFuzz } from './fuzz-harness.js';

const env = (k: string, d: number) => Number(process.env[k] ?? d);
const kills = env('CWM_SOAK_KILLS', 200);
const ops = env('CWM_SOAK_OPS', 20_000);
const frames = env('CWM_SOAK_FRAMES', 1_000_000);
const seed = env('CWM_SOAK_SEED', Math.floor(Math.random() * 2 ** 31));
const outIdx = process.argv.indexOf('--out');
const out = outIdx > 0 ? process.argv[outIdx + 1] : undefined;

const log = (s: string) => process.stdout.write(`${new Date().toISOString().slice(11, 19)} ${s}\n`);

async function crashPhase(): Promise<CrashReport> {
  const sim = await startSimulator({
    lmcacheCpuChunks: 512,
    lmcacheDiskChunks: 2048,
    requestLogSize: 0,
    prefillUsPerToken: 2,
    decodeUsPerToken: 20,
  });
  try {
    return await runCrash({
      sim,
      kills,
      minOps: ops,
      workers: 8,
      runMs: [60, 600],
      seed,
      engineFaults: true,
      log: (l) => {
        if (/^kill \d*0:|PROBLEM/.test(l)) log(l);
      },
    });
  } finally {
    await sim.close();
  }
}

async function fuzzPhase(): Promise<FuzzReport> {
  const sim = await startSimulator({ requestLogSize: 0, prefillUsPerToken: 2 });
  const d = await startDaemon({
    engineUrl: sim.url,
    env: { CWM_LMCACHE_URL: sim.lmcacheUrl, CWM_AUTOFREEZE: 'false' },
    args: ['--max-line-bytes', '65536'],
  });
  const good = await d.client();
  try {
    const ids = Array.from({ length: 600 }, (_, i) => (i * 13) % 128_000);
    await good.call('session.record', { session: 'warm', model: MODEL, prompt: ids });
    const r = await runFuzz({
      socket: d.socket,
      pid: d.proc.pid as number,
      frames,
      maxLineBytes: 65_536,
      streams: 12,
      seed,
      phases: 10,
      client: good,
      goodOp: async (i) => {
        await good.call('session.record', { session: 'good', model: MODEL, prompt: [...ids, i] });
        await good.call('window.freeze', { session: 'good', name: `good-${i}` });
        const w = await good.call('window.get', { name: `good-${i}`, tokens: true });
        if (w.tokenIds?.[ids.length] !== i) throw new Error(`good-${i} holds the wrong tokens`);
        await good.call('window.delete', { name: `good-${i}` });
      },
    });
    const check = await good.call('registry.check', {});
    if (!check.ok) r.badAnswers.push(`registry.check: ${JSON.stringify(check.problems.slice(0, 3))}`);
    if (d.proc.exitCode !== null) r.badAnswers.push(`the daemon exited with ${d.proc.exitCode}`);
    return r;
  } finally {
    good.close();
    await d.stop();
    await sim.close();
  }
}

log(`soak: seed ${seed}, ${kills} kills / ${ops} operations, ${frames} frames`);
const crash = await crashPhase();
log(
  `crash: ${crash.opsAttempted} operations (${crash.opsAcknowledged} acknowledged, ${crash.opsCutOff} cut off), ` +
    `${crash.kills} kills (${crash.killsMidCall} mid-call, ${crash.killsAtCommit} aimed at a commit), ` +
    `${crash.faultedRequests} engine requests faulted, ${crash.lostRecords} lost, ${crash.problems.length} problems, ${crash.seconds} s`,
);
const fuzz = await fuzzPhase();
log(
  `fuzz: ${fuzz.framesSent} frames over ${fuzz.connections} connections, ${fuzz.badAnswers.length} bad answers, ` +
    `${fuzz.missingAnswers} missing, ${fuzz.goodOps} good operations (${fuzz.goodFailures.length} failed), RSS ` +
    `${fuzz.rssBeforeKiB} KiB before, ${fuzz.rssByPhaseKiB.join('/')} per tenth, max ${fuzz.rssMaxKiB}, ${fuzz.seconds} s`,
);
const ok =
  crash.problems.length === 0 &&
  crash.lostRecords === 0 &&
  crash.startupRepairs === 0 &&
  fuzz.badAnswers.length === 0 &&
  fuzz.missingAnswers === 0 &&
  fuzz.goodFailures.length === 0;
const report = { seed, ok, node: process.version, crash, fuzz };
console.table({
  'operations run': crash.opsAttempted,
  'operations acknowledged': crash.opsAcknowledged,
  'kills survived': crash.kills,
  'engine requests faulted': crash.faultedRequests,
  'lost records': crash.lostRecords,
  'frames fuzzed': fuzz.framesSent,
  'fuzz connections': fuzz.connections,
  'bad answers': fuzz.badAnswers.length,
  'daemon RSS max (MiB)': Math.round(fuzz.rssMaxKiB / 1024),
});
if (out) fs.writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
if (!ok) {
  log(`FAILED: ${JSON.stringify({ crash: crash.problems.slice(0, 10), fuzz: fuzz.badAnswers.slice(0, 10) })}`);
  process.exit(1);
}
log('soak passed');
