/**
 * bench/rpc: daemon.hello round trips through the real client and the real daemon, side by side with a raw NDJSON
 * echo server on the same kind of socket, in the same run. Targets: p50 within 2x of the echo, throughput >= 0.5x.
 * Run: npm run build && npx tsx bench/rpc.ts
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CwmClient } from '../client/rpc-client.js';
import { PROTOCOL_VERSION } from '../daemon/protocol/index.js';
import { startDaemon, tempDir } from '../test/helpers/daemon.js';
import { hr, printTable, stats, writeResults } from './lib.js';

const SEQUENTIAL = Number(process.env.BENCH_SEQ ?? 5000);
const CONCURRENT = 100;
const PER_CALLER = Number(process.env.BENCH_PER_CALLER ?? 200);

async function startEcho(socket: string): Promise<() => void> {
  const tsx = fileURLToPath(new URL('../node_modules/.bin/tsx', import.meta.url));
  const p = spawn(tsx, [fileURLToPath(new URL('./echo-server.ts', import.meta.url)), socket], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve) => p.stdout.once('data', () => resolve()));
  return () => p.kill('SIGTERM');
}

async function measure(socket: string, hello: boolean) {
  const params = { protocolVersion: PROTOCOL_VERSION };
  const c = await CwmClient.connect({ socket, hello });
  for (let i = 0; i < 500; i++) await c.call('daemon.hello', params);
  const seq: number[] = [];
  for (let i = 0; i < SEQUENTIAL; i++) {
    const t0 = process.hrtime.bigint();
    await c.call('daemon.hello', params);
    seq.push(hr(t0));
  }
  // 100 concurrent callers on one connection (as one busy client multiplexes)
  let t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: CONCURRENT }, async () => {
      for (let i = 0; i < PER_CALLER; i++) await c.call('daemon.hello', params);
    }),
  );
  const oneConnMs = hr(t0);
  c.close();
  // 100 concurrent callers, each with its own connection (as many CLI/MCP clients would)
  const clients = await Promise.all(Array.from({ length: CONCURRENT }, () => CwmClient.connect({ socket, hello })));
  t0 = process.hrtime.bigint();
  await Promise.all(
    clients.map(async (cl) => {
      for (let i = 0; i < PER_CALLER; i++) await cl.call('daemon.hello', params);
    }),
  );
  const manyConnMs = hr(t0);
  for (const cl of clients) cl.close();
  const total = CONCURRENT * PER_CALLER;
  return {
    sequential: stats(seq),
    callsPerSecOneConnection: (total / oneConnMs) * 1000,
    callsPerSecManyConnections: (total / manyConnMs) * 1000,
  };
}

const dir = tempDir('cwm-bench');
const daemon = await startDaemon({ dir, env: { CWM_LOG_LEVEL: 'warn' } });
const stopEcho = await startEcho(path.join(dir, 'echo.sock'));
try {
  // alternate to spread machine noise over both
  const echo1 = await measure(path.join(dir, 'echo.sock'), false);
  const cwmd1 = await measure(daemon.socket, true);
  const echo2 = await measure(path.join(dir, 'echo.sock'), false);
  const cwmd2 = await measure(daemon.socket, true);
  const best = (a: typeof echo1, b: typeof echo1) => ({
    sequential: a.sequential.p50 <= b.sequential.p50 ? a.sequential : b.sequential,
    callsPerSecOneConnection: Math.max(a.callsPerSecOneConnection, b.callsPerSecOneConnection),
    callsPerSecManyConnections: Math.max(a.callsPerSecManyConnections, b.callsPerSecManyConnections),
  });
  const echo = best(echo1, echo2);
  const cwmd = best(cwmd1, cwmd2);
  const ratios = {
    p50: cwmd.sequential.p50 / echo.sequential.p50,
    p99: cwmd.sequential.p99 / echo.sequential.p99,
    throughputOneConnection: cwmd.callsPerSecOneConnection / echo.callsPerSecOneConnection,
    throughputManyConnections: cwmd.callsPerSecManyConnections / echo.callsPerSecManyConnections,
  };
  printTable(
    `daemon.hello round trips (${SEQUENTIAL} sequential; ${CONCURRENT} concurrent callers x ${PER_CALLER})`,
    ['metric', 'cwmd', 'raw echo', 'ratio', 'target'],
    [
      ['sequential p50 (ms)', cwmd.sequential.p50, echo.sequential.p50, ratios.p50, '<= 2.0'],
      ['sequential p99 (ms)', cwmd.sequential.p99, echo.sequential.p99, ratios.p99, '-'],
      [
        'sequential mean (ms)',
        cwmd.sequential.mean,
        echo.sequential.mean,
        cwmd.sequential.mean / echo.sequential.mean,
        '-',
      ],
      [
        'calls/s, 100 callers, 1 connection',
        cwmd.callsPerSecOneConnection,
        echo.callsPerSecOneConnection,
        ratios.throughputOneConnection,
        '>= 0.5',
      ],
      [
        'calls/s, 100 callers, 100 connections',
        cwmd.callsPerSecManyConnections,
        echo.callsPerSecManyConnections,
        ratios.throughputManyConnections,
        '>= 0.5',
      ],
    ],
  );
  const pass = ratios.p50 <= 2 && ratios.throughputOneConnection >= 0.5 && ratios.throughputManyConnections >= 0.5;
  process.stdout.write(`\ntargets ${pass ? 'met' : 'MISSED'}\n`);
  writeResults('rpc', {
    config: { sequential: SEQUENTIAL, concurrent: CONCURRENT, perCaller: PER_CALLER },
    cwmd,
    echo,
    ratios,
    targetsMet: pass,
  });
} finally {
  stopEcho();
  await daemon.stop();
}
