/**
 * What `daemon.syncWrites` (fsync every registry batch) costs, side by side in one run: the same operations
 * against a daemon with it off and one with it on, interleaved in rounds so drift hits both alike.
 *
 *   npm run build && npx tsx bench/sync-writes.ts [--quick]
 *
 * Operations: session.record of a small prompt given as token ids (one batch) and window.freeze of a 2,048-token context with
 * prefill off (one batch: window, 8 new chunks, indexes, audit). The registry lives in the OS temp dir; fsync
 * cost is the disk's, so the ratio, not the milliseconds, is the figure to compare across machines.
 */
import os from 'node:os';
import type { CwmClient } from '../client/rpc-client.js';
import { type DaemonHandle, startDaemon } from '../test/helpers/daemon.js';
import { startSimulator } from '../test/sim/index.js';
import { fmt, printTable, stats, writeResults } from './lib.js';

const QUICK = process.argv.includes('--quick');
const ROUNDS = QUICK ? 2 : 5;
const RECORDS_PER_ROUND = QUICK ? 40 : 200;
const FREEZES_PER_ROUND = QUICK ? 10 : 40;
const FREEZE_TOKENS = 2048;

type Mode = 'off' | 'on';
const MODES: Mode[] = ['off', 'on'];

const sim = await startSimulator({ requestLogSize: 0 });
const model = sim.options.model;
const daemons = {} as Record<Mode, { d: DaemonHandle; c: CwmClient }>;
for (const m of MODES) {
  const d = await startDaemon({
    engineUrl: sim.url,
    env: { CWM_LOG_LEVEL: 'warn', CWM_AUTOFREEZE: 'false', CWM_SYNC_WRITES: m === 'on' ? 'true' : 'false' },
  });
  daemons[m] = { d, c: await d.client() };
}

const record: Record<Mode, number[]> = { off: [], on: [] };
const freeze: Record<Mode, number[]> = { off: [], on: [] };
let seq = 0;
for (let round = 0; round < ROUNDS; round++) {
  for (const m of round % 2 === 0 ? MODES : [...MODES].reverse()) {
    const { c } = daemons[m];
    for (let i = 0; i < RECORDS_PER_ROUND; i++) {
      const t0 = performance.now();
      await c.call('session.record', {
        session: `r-${i % 16}`,
        model,
        prompt: [1, 2, 3, i],
      });
      record[m].push(performance.now() - t0);
    }
    for (let i = 0; i < FREEZES_PER_ROUND; i++) {
      const s = ++seq;
      // distinct ids per freeze, so every chunk is new and written
      const tokenIds = Array.from({ length: FREEZE_TOKENS }, (_, k) => (s * 7919 + k * 31) % 128_000);
      await c.call('session.record', { session: `f-${s}`, model, prompt: tokenIds });
      const t0 = performance.now();
      await c.call('window.freeze', { session: `f-${s}`, name: `w-${s}`, prefill: false });
      freeze[m].push(performance.now() - t0);
    }
  }
}

const R = { off: stats(record.off), on: stats(record.on) };
const F = { off: stats(freeze.off), on: stats(freeze.on) };
printTable(
  `daemon.syncWrites: off vs on (${ROUNDS} interleaved rounds, load average ${os.loadavg()[0]?.toFixed(2)})`,
  ['operation', 'off p50 ms', 'off p99 ms', 'on p50 ms', 'on p99 ms', 'on/off p50'],
  [
    ['session.record (small)', R.off.p50, R.off.p99, R.on.p50, R.on.p99, `${fmt(R.on.p50 / R.off.p50, 2)}x`],
    [
      `window.freeze (${FREEZE_TOKENS} tokens, no prefill)`,
      F.off.p50,
      F.off.p99,
      F.on.p50,
      F.on.p99,
      `${fmt(F.on.p50 / F.off.p50, 2)}x`,
    ],
  ],
);
writeResults('sync-writes', {
  command: 'npm run build && npx tsx bench/sync-writes.ts',
  parameters: {
    quick: QUICK,
    rounds: ROUNDS,
    recordsPerRound: RECORDS_PER_ROUND,
    freezesPerRound: FREEZES_PER_ROUND,
    freezeTokens: FREEZE_TOKENS,
    registryDir: os.tmpdir(),
  },
  results: { sessionRecordMs: R, windowFreezeMs: F },
  ratios: { sessionRecordP50: R.on.p50 / R.off.p50, windowFreezeP50: F.on.p50 / F.off.p50 },
});
for (const m of MODES) {
  daemons[m].c.close();
  await daemons[m].d.stop();
}
await sim.close();
