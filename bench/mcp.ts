/**
 * bench/mcp: what the MCP shim costs on top of the daemon, in one run against one real cwmd.
 *  - start-to-first-result: spawn cwm-mcp → MCP initialize → the first tools/call result (daemon already running);
 *  - per-call overhead: the same request as an MCP tool call through the shim (stdio) and as a direct RPC with
 *    CwmClient, alternated in blocks so both see the same machine state. Target: p50 overhead under 1 ms.
 * Run: npm run build && npx tsx bench/mcp.ts      (BENCH_CALLS, BENCH_STARTS to change the counts)
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import type { CwmClient } from '../client/rpc-client.js';
import type { MethodName, ParamsOf } from '../daemon/protocol/index.js';
import { conversation } from '../test/helpers/conversation.js';
import { CWM_MCP, startDaemon } from '../test/helpers/daemon.js';
import { startSimulator } from '../test/sim/index.js';

const CALLS = Number(process.env.BENCH_CALLS ?? 2000);
const STARTS = Number(process.env.BENCH_STARTS ?? 15);
const WINDOWS = 12;
const BLOCK = 100;
const MODEL = 'sim/llama-3-8b-instruct';

interface Stats {
  n: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  min: number;
  max: number;
}

function stats(samples: number[]): Stats {
  const s = [...samples].sort((a, b) => a - b);
  const at = (p: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? Number.NaN;
  return {
    n: s.length,
    mean: s.reduce((a, b) => a + b, 0) / Math.max(1, s.length),
    p50: at(50),
    p90: at(90),
    p99: at(99),
    min: s[0] ?? Number.NaN,
    max: s.at(-1) ?? Number.NaN,
  };
}

function ms(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

function f(n: number): string {
  return n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(3);
}

function table(title: string, header: string[], rows: string[][]): void {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(w[i] ?? 0) : c.padStart(w[i] ?? 0))).join('  ');
  process.stdout.write(`\n${title}\n${line(header)}\n${w.map((n) => '-'.repeat(n)).join('  ')}\n`);
  for (const r of rows) process.stdout.write(`${line(r)}\n`);
}

async function shim(env: Record<string, string>): Promise<Client> {
  const transport = new StdioClientTransport({ command: process.execPath, args: [CWM_MCP], env, stderr: 'ignore' });
  const client = new Client({ name: 'bench', version: '0' });
  await client.connect(transport);
  return client;
}

interface Pair<M extends MethodName> {
  name: string;
  tool: string;
  args: Record<string, unknown>;
  method: M;
  params: ParamsOf<M>;
}

/** Alternate blocks of MCP and direct calls so drift (GC, CPU frequency, other load) hits both the same. */
async function compare<M extends MethodName>(mcp: Client, direct: CwmClient, p: Pair<M>) {
  const viaMcp: number[] = [];
  const viaRpc: number[] = [];
  for (let i = 0; i < 200; i++) {
    await mcp.callTool({ name: p.tool, arguments: p.args });
    await direct.call(p.method, p.params);
  }
  for (let done = 0; done < CALLS; done += BLOCK) {
    for (let i = 0; i < BLOCK; i++) {
      const t0 = process.hrtime.bigint();
      const r = await mcp.callTool({ name: p.tool, arguments: p.args });
      viaMcp.push(ms(t0));
      if (r.isError) throw new Error(`${p.tool} failed: ${JSON.stringify(r.content)}`);
    }
    for (let i = 0; i < BLOCK; i++) {
      const t0 = process.hrtime.bigint();
      await direct.call(p.method, p.params);
      viaRpc.push(ms(t0));
    }
  }
  const m = stats(viaMcp);
  const d = stats(viaRpc);
  return { name: p.name, mcp: m, direct: d, overheadP50Ms: m.p50 - d.p50, overheadMeanMs: m.mean - d.mean };
}

const sim = await startSimulator();
const d = await startDaemon({ engineUrl: sim.url, env: { CWM_LMCACHE_URL: sim.lmcacheUrl } });
try {
  const c = await d.client();
  for (let i = 0; i < WINDOWS; i++) {
    await c.call('session.record', { session: `s${i}`, model: MODEL, messages: conversation(400, i + 1) });
    await c.call('window.freeze', {
      session: `s${i}`,
      name: `w${i}`,
      tags: ['bench'],
      description: `bench window ${i}`,
    });
  }
  const env = {
    HOME: d.dir,
    CWM_SOCKET: d.socket,
    CWM_MCP_LOG_LEVEL: 'warn',
  };

  // 1. start to first result, the daemon already running (what an editor sees when it launches the server)
  const starts: { initializeMs: number; firstResultMs: number }[] = [];
  for (let i = 0; i < STARTS; i++) {
    const t0 = process.hrtime.bigint();
    const client = await shim(env);
    const initializeMs = ms(t0);
    const r = await client.callTool({ name: 'window_list', arguments: {} });
    const firstResultMs = ms(t0);
    if (r.isError) throw new Error(JSON.stringify(r.content));
    starts.push({ initializeMs, firstResultMs });
    await client.close();
  }

  // 2. per-call overhead: the same request through the shim and directly
  const mcp = await shim(env);
  const pairs = [
    await compare(mcp, c, {
      name: `window_list (${WINDOWS} windows)`,
      tool: 'window_list',
      args: {},
      method: 'window.list',
      params: {},
    }),
    await compare(mcp, c, {
      name: 'health_check (registry)',
      tool: 'health_check',
      args: { component: 'registry' },
      method: 'health.check',
      params: { component: 'registry' },
    }),
  ];
  await mcp.close();
  c.close();

  const init = stats(starts.map((s) => s.initializeMs));
  const first = stats(starts.map((s) => s.firstResultMs));
  table(
    `cwm-mcp start to first result (${STARTS} cold starts, cwmd already running)`,
    ['phase', 'p50 ms', 'p90 ms', 'min ms', 'max ms'],
    [
      ['spawn → initialized', f(init.p50), f(init.p90), f(init.min), f(init.max)],
      ['spawn → first tools/call result', f(first.p50), f(first.p90), f(first.min), f(first.max)],
    ],
  );
  table(
    `per-call latency, ${CALLS} sequential calls each, MCP (stdio shim) vs direct CwmClient RPC`,
    ['call', 'MCP p50', 'MCP p99', 'RPC p50', 'RPC p99', 'overhead p50', 'overhead mean'],
    pairs.map((p) => [
      p.name,
      f(p.mcp.p50),
      f(p.mcp.p99),
      f(p.direct.p50),
      f(p.direct.p99),
      f(p.overheadP50Ms),
      f(p.overheadMeanMs),
    ]),
  );
  const worst = Math.max(...pairs.map((p) => p.overheadP50Ms));
  process.stdout.write(`\nper-call overhead p50: ${f(worst)} ms (target < 1 ms): ${worst < 1 ? 'met' : 'NOT met'}\n`);

  const out = fileURLToPath(new URL('./results/mcp.json', import.meta.url));
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(
    out,
    `${JSON.stringify(
      {
        benchmark: 'mcp',
        date: new Date().toISOString(),
        machine: {
          node: process.version,
          platform: `${os.platform()} ${os.arch()}`,
          cpus: os.cpus().length,
          cpuModel: os.cpus()[0]?.model ?? 'unknown',
          loadavg: os.loadavg(),
        },
        config: { calls: CALLS, starts: STARTS, windows: WINDOWS, block: BLOCK },
        startToFirstResult: { initializeMs: init, firstResultMs: first },
        perCall: pairs,
        target: { overheadP50Ms: 1, met: worst < 1 },
      },
      null,
      2,
    )}\n`,
  );
  process.stdout.write(`wrote ${path.relative(process.cwd(), out)}\n`);
} finally {
  await d.stop();
  await sim.close();
}
