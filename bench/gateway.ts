/**
 * Gateway overhead, side by side in one run: direct to the simulator vs through the daemon's gateway
 * (passthrough without a session, and with a session: salt injection, usage capture, recording).
 *
 *   npm run build && npx tsx bench/gateway.ts [--quick]
 *
 * Prints a table and writes bench/results/gateway.json. Targets: at most 1 ms added at p50, and at least
 * 0.9x the direct requests/s at 64 concurrent streams. The simulator runs in this process with zero
 * prefill/decode latency so that only transport overhead shows; that throughput figure is CPU-bound (this
 * process, the simulator and the daemon share the machine's cores, so it depends on how busy the machine is:
 * the load average is recorded). A second throughput run paces the simulator at PACED_US_PER_TOKEN, still a
 * faster-than-real engine, to show the overhead when the engine rather than the CPU sets the pace.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'undici';
import { startDaemon } from '../test/helpers/daemon.js';
import { startSimulator } from '../test/sim/index.js';

const QUICK = process.argv.includes('--quick');
/**
 * On Linux with 2+ CPUs the bench process (client + simulator, one thread doing the work) runs on CPU 0 and the
 * daemon on CPU 1, all their threads, with taskset: the scheduler no longer moves them onto one core at random
 * moments, which made the zero-latency figure swing by +-15% between runs. Both modes get the same CPU 0 for the
 * client and the engine; the gateway gets a core of its own, as it would next to a real engine. --no-pin to compare.
 */
const PIN_REQUESTED = !process.argv.includes('--no-pin');

/** Pin every thread of `pid` to `cpu`; false when taskset is missing or refuses. */
function pin(pid: number, cpu: number): boolean {
  const r = spawnSync('taskset', ['-a', '-p', '-c', String(cpu), String(pid)], { stdio: 'ignore' });
  return r.status === 0;
}
const LATENCY_N = QUICK ? 400 : 3000;
const TTFB_N = QUICK ? 300 : 1500;
const WARMUP_N = QUICK ? 100 : 400;
const CONCURRENCY = 64;
const THROUGHPUT_MS = QUICK ? 750 : 2000;
const ROUNDS = 4;
const PACED_US_PER_TOKEN = 2000;
const PACED_MAX_TOKENS = 64;
const PACED_MS = QUICK ? 750 : 1500;

type Mode = 'direct' | 'gateway' | 'session';
const MODES: Mode[] = ['direct', 'gateway', 'session'];
type Counts = Record<Mode, { requests: number; ms: number; benchCpuMs: number; daemonCpuMs: number }>;

/** CPU time (ms) a process has used so far, from /proc (Linux; USER_HZ is 100); null elsewhere. */
function procCpuMs(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    const fields = (fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1] ?? '').split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return null;
  }
}

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * (sorted.length - 1)))] as number;
}

function summary(samples: number[]) {
  const s = [...samples].sort((a, b) => a - b);
  return {
    n: s.length,
    p50: pct(s, 0.5),
    p90: pct(s, 0.9),
    p99: pct(s, 0.99),
    mean: s.reduce((a, b) => a + b, 0) / s.length,
  };
}

const agent = new Agent({ connections: 256, pipelining: 1, keepAliveTimeout: 60_000 });

/** One request, the body read to the end; ttfb = first body chunk. */
async function once(base: string, body: string, session: string | null) {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (session) headers['x-cwm-session'] = session;
  const t0 = performance.now();
  const r = await request(`${base}/v1/chat/completions`, { method: 'POST', body, headers, dispatcher: agent });
  let ttfb: number | null = null;
  for await (const _chunk of r.body) ttfb ??= performance.now() - t0;
  const ms = performance.now() - t0;
  if (r.statusCode !== 200) throw new Error(`${base} answered ${r.statusCode}`);
  return { ms, ttfb: ttfb ?? ms };
}

async function main() {
  const loadavgAtStart = os.loadavg();
  const sim = await startSimulator({
    prefillUsPerToken: 0,
    loadUsPerToken: 0,
    decodeUsPerToken: 0,
    requestLogSize: 0,
    gpuBlocks: 65536,
  });
  const d = await startDaemon({
    engineUrl: sim.url,
    gateway: '127.0.0.1:0',
    env: { CWM_LMCACHE_URL: sim.lmcacheUrl, CWM_LOG_LEVEL: 'warn' },
    config: { autoFreeze: { enabled: false } },
  });
  const pinned =
    PIN_REQUESTED &&
    process.platform === 'linux' &&
    os.cpus().length >= 2 &&
    d.proc.pid !== undefined &&
    pin(process.pid, 0) &&
    pin(d.proc.pid, 1);
  const c = await d.client();
  const gw = (await c.call('daemon.status')).gateway?.url as string;
  c.close();
  const base: Record<Mode, string> = { direct: sim.url, gateway: gw, session: gw };
  const model = sim.options.model;
  const chat = (stream: boolean, maxTokens: number) =>
    JSON.stringify({
      model,
      messages: [
        { role: 'system', content: 'You are a benchmark.' },
        { role: 'user', content: 'Say something short about rivers and stones.' },
      ],
      max_tokens: maxTokens,
      ignore_eos: true,
      stream,
    });
  const nonStream = chat(false, 16);
  const stream = chat(true, 32);
  const sessionFor = (m: Mode, i: number) => (m === 'session' ? `bench-${i % CONCURRENCY}` : null);

  console.error(`simulator ${sim.url}, gateway ${gw}; warming up`);
  for (let i = 0; i < WARMUP_N; i++) {
    for (const m of MODES) {
      await once(base[m], nonStream, sessionFor(m, i));
      await once(base[m], stream, sessionFor(m, i));
    }
  }

  // Sequential latency, the modes interleaved request by request so drift hits all of them alike.
  console.error('non-streaming latency');
  const latency: Record<Mode, number[]> = { direct: [], gateway: [], session: [] };
  for (let i = 0; i < LATENCY_N; i++) {
    for (const m of MODES) latency[m].push((await once(base[m], nonStream, sessionFor(m, i))).ms);
  }
  console.error('streaming time to first byte');
  const ttfb: Record<Mode, number[]> = { direct: [], gateway: [], session: [] };
  for (let i = 0; i < TTFB_N; i++) {
    for (const m of MODES) ttfb[m].push((await once(base[m], stream, sessionFor(m, i))).ttfb);
  }

  // Throughput: 64 workers each running streams back to back for a fixed time; rounds alternate the order.
  const throughput = async (body: string, msPerMode: number): Promise<Counts> => {
    const zero = () => ({ requests: 0, ms: 0, benchCpuMs: 0, daemonCpuMs: 0 });
    const done: Counts = { direct: zero(), gateway: zero(), session: zero() };
    for (let round = 0; round < ROUNDS; round++) {
      for (const m of round % 2 === 0 ? MODES : [...MODES].reverse()) {
        const t0 = performance.now();
        const cpu0 = process.cpuUsage();
        const d0 = procCpuMs(d.proc.pid);
        const end = t0 + msPerMode;
        let n = 0;
        await Promise.all(
          Array.from({ length: CONCURRENCY }, async (_, w) => {
            while (performance.now() < end) {
              await once(base[m], body, sessionFor(m, w));
              n++;
            }
          }),
        );
        done[m].requests += n;
        done[m].ms += performance.now() - t0;
        const cpu = process.cpuUsage(cpu0);
        done[m].benchCpuMs += (cpu.user + cpu.system) / 1000;
        const d1 = procCpuMs(d.proc.pid);
        done[m].daemonCpuMs += d0 !== null && d1 !== null ? d1 - d0 : Number.NaN;
      }
    }
    return done;
  };
  console.error(`throughput at ${CONCURRENCY} concurrent streams, engine latency 0`);
  const sat = await throughput(stream, THROUGHPUT_MS);
  console.error(`throughput at ${CONCURRENCY} concurrent streams, engine ${PACED_US_PER_TOKEN / 1000} ms/token`);
  const opts = sim.state.options as { decodeUsPerToken: number };
  opts.decodeUsPerToken = PACED_US_PER_TOKEN;
  const paced = await throughput(chat(true, PACED_MAX_TOKENS), PACED_MS);
  opts.decodeUsPerToken = 0;

  const rps = (k: Counts, m: Mode) => (k[m].requests / k[m].ms) * 1000;
  const L = Object.fromEntries(MODES.map((m) => [m, summary(latency[m])])) as Record<Mode, ReturnType<typeof summary>>;
  const T = Object.fromEntries(MODES.map((m) => [m, summary(ttfb[m])])) as Record<Mode, ReturnType<typeof summary>>;
  const added = (m: Mode) => L[m].p50 - L.direct.p50;
  const ratio = (k: Counts, m: Mode) => rps(k, m) / rps(k, 'direct');
  const cpuPerReq = (k: Counts, m: Mode, which: 'benchCpuMs' | 'daemonCpuMs') => (k[m][which] * 1000) / k[m].requests;
  const met = {
    gatewayAddedP50: added('gateway') <= 1,
    sessionAddedP50: added('session') <= 1,
    gatewayThroughput: ratio(sat, 'gateway') >= 0.9,
    sessionThroughput: ratio(sat, 'session') >= 0.9,
    gatewayPacedThroughput: ratio(paced, 'gateway') >= 0.9,
    sessionPacedThroughput: ratio(paced, 'session') >= 0.9,
  };

  const f = (v: number, digits = 3) => v.toFixed(digits);
  const pacedLabel = `${PACED_US_PER_TOKEN / 1000} ms/token`;
  const rows: string[][] = [
    ['', 'direct', 'gateway (no session)', 'gateway (session)'],
    ['non-streaming p50 ms', f(L.direct.p50), f(L.gateway.p50), f(L.session.p50)],
    ['non-streaming p99 ms', f(L.direct.p99), f(L.gateway.p99), f(L.session.p99)],
    ['streaming TTFB p50 ms', f(T.direct.p50), f(T.gateway.p50), f(T.session.p50)],
    ['streaming TTFB p99 ms', f(T.direct.p99), f(T.gateway.p99), f(T.session.p99)],
    [`req/s, ${CONCURRENCY} streams, engine 0 ms`, ...MODES.map((m) => f(rps(sat, m), 0))],
    [`req/s, ${CONCURRENCY} streams, engine ${pacedLabel}`, ...MODES.map((m) => f(rps(paced, m), 0))],
    ['CPU us/request: bench process (client + simulator)', ...MODES.map((m) => f(cpuPerReq(sat, m, 'benchCpuMs'), 0))],
    [
      'CPU us/request: daemon (gateway)',
      '-',
      f(cpuPerReq(sat, 'gateway', 'daemonCpuMs'), 0),
      f(cpuPerReq(sat, 'session', 'daemonCpuMs'), 0),
    ],
    ['added p50 ms (target <= 1)', '-', f(added('gateway')), f(added('session'))],
    [
      'throughput x direct, engine 0 ms (target >= 0.9)',
      '1.00',
      f(ratio(sat, 'gateway'), 2),
      f(ratio(sat, 'session'), 2),
    ],
    [`throughput x direct, engine ${pacedLabel}`, '1.00', f(ratio(paced, 'gateway'), 2), f(ratio(paced, 'session'), 2)],
  ];
  const widths = (rows[0] as string[]).map((_, i) => Math.max(...rows.map((r) => r[i]?.length ?? 0)));
  for (const r of rows) {
    console.log(r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join('  '));
  }
  const yes = (a: boolean, b: boolean) => (a && b ? 'met' : 'MISSED');
  console.log(
    `targets: added p50 ${yes(met.gatewayAddedP50, met.sessionAddedP50)}; ` +
      `throughput ${yes(met.gatewayThroughput, met.sessionThroughput)} (engine 0 ms), ` +
      `${yes(met.gatewayPacedThroughput, met.sessionPacedThroughput)} (engine ${pacedLabel}); ` +
      `load average ${os.loadavg()[0]?.toFixed(2)} on ${os.cpus().length} CPUs; ` +
      (pinned ? 'bench on CPU 0, daemon on CPU 1' : 'not pinned'),
  );

  const out = {
    bench: 'gateway',
    date: new Date().toISOString(),
    command: 'npm run build && npx tsx bench/gateway.ts',
    environment: {
      node: process.version,
      platform: `${os.platform()} ${os.arch()}`,
      cpus: os.cpus().length,
      cpu: os.cpus()[0]?.model,
      loadavgAtStart,
      loadavgAtEnd: os.loadavg(),
    },
    parameters: {
      quick: QUICK,
      pinned: pinned ? 'bench process (client + simulator) on CPU 0, daemon on CPU 1 (taskset -a)' : false,
      latencySamples: LATENCY_N,
      ttfbSamples: TTFB_N,
      concurrency: CONCURRENCY,
      throughputMsPerMode: THROUGHPUT_MS * ROUNDS,
      pacedMsPerMode: PACED_MS * ROUNDS,
      nonStreaming: 'chat, 2 messages, max_tokens 16',
      streaming: 'chat, 2 messages, max_tokens 32 (34 SSE events)',
      paced: `chat stream, max_tokens ${PACED_MAX_TOKENS}, simulator decode ${PACED_US_PER_TOKEN} us/token`,
      simulator: 'in-process; prefill, load and decode latency 0 except in the paced run',
      sessions: `session mode uses ${CONCURRENCY} sessions (bench-0..), recorded after each response`,
    },
    results: Object.fromEntries(
      MODES.map((m) => [
        m,
        {
          nonStreamingMs: L[m],
          streamingTtfbMs: T[m],
          throughput: {
            requests: sat[m].requests,
            seconds: sat[m].ms / 1000,
            requestsPerSecond: rps(sat, m),
            benchCpuUsPerRequest: cpuPerReq(sat, m, 'benchCpuMs'),
            daemonCpuUsPerRequest: cpuPerReq(sat, m, 'daemonCpuMs'),
          },
          pacedThroughput: {
            requests: paced[m].requests,
            seconds: paced[m].ms / 1000,
            requestsPerSecond: rps(paced, m),
            benchCpuUsPerRequest: cpuPerReq(paced, m, 'benchCpuMs'),
            daemonCpuUsPerRequest: cpuPerReq(paced, m, 'daemonCpuMs'),
          },
        },
      ]),
    ),
    comparison: Object.fromEntries(
      (['gateway', 'session'] as const).map((m) => [
        m,
        {
          addedP50Ms: added(m),
          addedP99Ms: L[m].p99 - L.direct.p99,
          addedTtfbP50Ms: T[m].p50 - T.direct.p50,
          throughputRatio: ratio(sat, m),
          pacedThroughputRatio: ratio(paced, m),
        },
      ]),
    ),
    targets: { addedP50MsMax: 1, throughputRatioMin: 0.9, met },
  };
  const file = path.join(path.dirname(fileURLToPath(import.meta.url)), 'results', 'gateway.json');
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, `${JSON.stringify(out, null, 2)}\n`);
  console.error(`wrote ${path.relative(process.cwd(), file)}`);

  await d.stop();
  await agent.close();
  await sim.close();
}

await main();
