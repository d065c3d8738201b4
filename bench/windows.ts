/**
 * bench/windows: freeze and thaw at 1K/8K/32K/128K tokens against the simulator (daemon time separated from engine
 * time), bytes stored per token, and window.list pages over 100,000 windows: index-driven pages, and the queries
 * no single index answers (search, two tags, tag + model), which filter the in-memory window summary; plus the
 * summary's one-time build and its heap cost per window (measured in this process, with gc).
 * Targets: daemon-side freeze at 8K < 50 ms; thaw overhead beyond the engine < 20 ms; <= 2 bytes per token;
 * a filtered list page over 100k windows < 20 ms (index-driven and summary-driven).
 * Run: npm run build && npx tsx bench/windows.ts   (BENCH_LIST_WINDOWS=N to change the 100,000)
 */
import fs from 'node:fs';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { matchesSearch } from '../daemon/services/window-summary.js';
import { conversation } from '../test/helpers/conversation.js';
import { startDaemon, tempDir } from '../test/helpers/daemon.js';
import { openOffline } from '../test/helpers/offline-backend.js';
import { startSimulator } from '../test/sim/index.js';
import { hr, median, printTable, stats, writeResults } from './lib.js';

const MODEL = 'sim/llama-3-8b-instruct';
const SIZES = [1024, 8192, 32768, 131072];
const REPS = Number(process.env.BENCH_REPS ?? 5);
const LIST_WINDOWS = Number(process.env.BENCH_LIST_WINDOWS ?? 100_000);

async function freezeThaw() {
  const sim = await startSimulator({
    maxModelLen: 262_144,
    gpuBlocks: 40_000,
    lmcacheCpuChunks: 4096,
    lmcacheDiskChunks: 4096,
  });
  const d = await startDaemon({ engineUrl: sim.url, env: { CWM_LMCACHE_URL: sim.lmcacheUrl, CWM_LOG_LEVEL: 'warn' } });
  const c = await d.client();
  const rows: Record<string, unknown>[] = [];
  try {
    for (const size of SIZES) {
      const freeze: { total: number; engine: number; daemon: number }[] = [];
      const thaw: { total: number; engine: number; overhead: number; cached: number; recomputed: number }[] = [];
      let tokens = 0;
      let bytes = 0;
      for (let rep = 0; rep < REPS; rep++) {
        const session = `s${size}-${rep}`;
        // distinct text per rep, so every freeze stores and prefills new content
        const rec = await c.call(
          'session.record',
          { session, model: MODEL, messages: conversation(size, size + rep) },
          { timeoutMs: 120_000 },
        );
        tokens = rec.tokens;
        const f = await c.call('window.freeze', { session, name: `w${size}-${rep}` }, { timeoutMs: 120_000 });
        freeze.push({ total: f.durationMs, engine: f.engineMs, daemon: f.durationMs - f.engineMs });
        bytes = f.bytesStored;
        sim.evictGpu();
        const t0 = process.hrtime.bigint();
        const t = await c.call('window.thaw', { name: `w${size}-${rep}` }, { timeoutMs: 120_000 });
        const clientMs = hr(t0);
        thaw.push({
          total: clientMs,
          engine: t.engineMs,
          overhead: clientMs - t.engineMs,
          cached: t.cachedTokens,
          recomputed: t.recomputedTokens,
        });
      }
      rows.push({
        tokens,
        freezeTotalMs: median(freeze.map((x) => x.total)),
        freezeEngineMs: median(freeze.map((x) => x.engine)),
        freezeDaemonMs: median(freeze.map((x) => x.daemon)),
        thawTotalMs: median(thaw.map((x) => x.total)),
        thawEngineMs: median(thaw.map((x) => x.engine)),
        thawOverheadMs: median(thaw.map((x) => x.overhead)),
        cachedTokens: median(thaw.map((x) => x.cached)),
        recomputedTokens: median(thaw.map((x) => x.recomputed)),
        bytesPerToken: bytes / tokens,
      });
    }
  } finally {
    c.close();
    await d.stop();
    await sim.close();
  }
  return rows;
}

async function fillRegistry(dataDir: string, n: number): Promise<number> {
  const { sessions, windows, close } = await openOffline(dataDir);
  const t0 = process.hrtime.bigint();
  const SESSIONS = 200;
  for (let s = 0; s < SESSIONS; s++) {
    const ids = Array.from({ length: 300 + (s % 50) }, (_, i) => (i * 7919 + s) % 128_000);
    await sessions.record({
      session: `bench-${s}`,
      model: s % 3 === 0 ? 'sim/other' : MODEL,
      messages: [{ role: 'user', content: `s${s}` }],
      tokenIds: ids,
    });
  }
  const CONCURRENCY = 16;
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      for (;;) {
        const i = next++;
        if (i >= n) return;
        await windows.freeze({
          session: `bench-${i % SESSIONS}`,
          name: `win-${i.toString().padStart(6, '0')}`,
          description: i % 1000 === 0 ? `milestone ${i}` : `window ${i}`,
          tags: [`tag-${i % 10}`, ...(i % 100 === 0 ? ['rare'] : [])],
          prefill: false,
        });
      }
    }),
  );
  const ms = hr(t0);
  await close();
  return ms;
}

/** Build the window summary in this process over the filled registry: build time and heap bytes per window. */
async function summaryCost(dataDir: string) {
  v8.setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const { reg, close } = await openOffline(dataDir);
  try {
    const heap = () => {
      gc();
      gc();
      return process.memoryUsage().heapUsed;
    };
    const before = heap();
    const t0 = process.hrtime.bigint();
    const summary = await reg.windowSummary.get();
    const buildMs = hr(t0);
    // One search first, as in the daemon: V8 flattens each concatenated search text the first time it is searched.
    let hits = 0;
    for (const e of summary.values()) if (matchesSearch(e, 'milestone')) hits++;
    const heapBytes = heap() - before;
    if (hits === 0) throw new Error('the bench registry has milestone windows');
    return { buildMs, windows: summary.size, heapBytes, bytesPerWindow: heapBytes / summary.size };
  } finally {
    await close();
  }
}

/** The last figures before the summary (bench/results/windows.json of 2026-11-25, commit 10c9b7a), for reference. */
const BEFORE_SUMMARY = {
  note: 'slow path loaded and JSON-decoded every candidate record from LevelDB, then filtered and sorted',
  'two tags': { p50Ms: 116.3, p99Ms: 127.7 },
  'search text': { p50Ms: 930.3, p99Ms: 1183.7 },
};

async function listBench() {
  const dir = tempDir('cwm-list');
  try {
    return await listBenchIn(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function listBenchIn(dir: string) {
  const fillMs = await fillRegistry(`${dir}/data`, LIST_WINDOWS);
  process.stdout.write(`filled ${LIST_WINDOWS} windows in ${(fillMs / 1000).toFixed(1)} s\n`);
  const summary = await summaryCost(`${dir}/data`);
  process.stdout.write(
    `summary: built in ${summary.buildMs.toFixed(0)} ms, ${(summary.heapBytes / 2 ** 20).toFixed(1)} MiB heap, ` +
      `${summary.bytesPerWindow.toFixed(0)} bytes per window\n`,
  );
  const d = await startDaemon({ dir, env: { CWM_LOG_LEVEL: 'warn' } });
  const c = await d.client();
  type ListParams = Parameters<typeof c.call<'window.list'>>[1];
  const cases: [string, ListParams][] = [
    ['newest page, no filter', { limit: 20 }],
    ['filter tag (10% of windows)', { tags: ['tag-3'], limit: 20 }],
    ['filter tag (1%), page 3', { tags: ['rare'], limit: 20, offset: 40 }],
    ['filter model', { model: MODEL, limit: 20 }],
    ['filter session', { session: 'bench-7', limit: 20 }],
    ['sort by name, offset 1000', { sort: 'name', order: 'asc', limit: 20, offset: 1000 }],
    ['two tags (summary)', { tags: ['tag-0', 'rare'], limit: 20 }],
    ['search text (summary)', { search: 'milestone 5', limit: 20 }],
    ['tag + model, by tokens (summary)', { tags: ['tag-3'], model: MODEL, sort: 'tokens', limit: 20 }],
    ['search matching all, by name (summary)', { search: 'win', sort: 'name', order: 'asc', limit: 20 }],
  ];
  const rows: Record<string, unknown>[] = [];
  let coldMs = 0;
  try {
    // The first query that needs the summary builds it inside the daemon (one scan of the windows sublevel).
    const t0 = process.hrtime.bigint();
    await c.call('window.list', { search: 'milestone 5', limit: 20 }, { timeoutMs: 120_000 });
    coldMs = hr(t0);
    for (const [label, params] of cases) {
      const runs = 50;
      const samples: number[] = [];
      let total = 0;
      for (let i = 0; i < runs + 3; i++) {
        const t1 = process.hrtime.bigint();
        const r = await c.call('window.list', params, { timeoutMs: 120_000 });
        if (i >= 3) samples.push(hr(t1));
        total = r.total;
      }
      const s = stats(samples);
      rows.push({ case: label, total, p50Ms: s.p50, p99Ms: s.p99 });
    }
  } finally {
    c.close();
    await d.stop();
  }
  return { fillMs, summary: { ...summary, firstQueryInDaemonMs: coldMs }, rows };
}

const ft = await freezeThaw();
printTable(
  `freeze / thaw against the simulator (median of ${REPS}; thaw after GPU eviction, KV loaded from LMCache)`,
  [
    'tokens',
    'freeze ms',
    'engine ms',
    'daemon ms',
    'thaw ms',
    'engine ms',
    'overhead ms',
    'cached',
    'recomputed',
    'bytes/token',
  ],
  ft.map((r) => [
    String(r.tokens),
    r.freezeTotalMs as number,
    r.freezeEngineMs as number,
    r.freezeDaemonMs as number,
    r.thawTotalMs as number,
    r.thawEngineMs as number,
    r.thawOverheadMs as number,
    String(r.cachedTokens),
    String(r.recomputedTokens),
    r.bytesPerToken as number,
  ]),
);
const list = await listBench();
printTable(
  `window.list over ${LIST_WINDOWS} windows (client round trip)`,
  ['case', 'total', 'p50 ms', 'p99 ms'],
  list.rows.map((r) => [r.case as string, String(r.total), r.p50Ms as number, r.p99Ms as number]),
);
printTable(
  'window summary (one-time build, then kept in step by every registry batch)',
  ['measure', 'value'],
  [
    ['build in-process, ms', list.summary.buildMs],
    ['first summary query in the daemon (includes the build), ms', list.summary.firstQueryInDaemonMs],
    ['heap, MiB', list.summary.heapBytes / 2 ** 20],
    ['heap per window, bytes', list.summary.bytesPerWindow],
  ],
);
const at8k = ft.find((r) => (r.tokens as number) >= 8000 && (r.tokens as number) < 9000) ?? ft[1];
const filtered = list.rows.filter((r) => (r.case as string).startsWith('filter'));
const summarised = list.rows.filter((r) => /^(two tags|search text) /.test(r.case as string));
const targets = {
  freezeDaemonMsAt8k: { value: at8k?.freezeDaemonMs, target: '< 50', met: (at8k?.freezeDaemonMs as number) < 50 },
  thawOverheadMsMax: {
    value: Math.max(...ft.map((r) => r.thawOverheadMs as number)),
    target: '< 20',
    met: ft.every((r) => (r.thawOverheadMs as number) < 20),
  },
  bytesPerTokenMax: {
    value: Math.max(...ft.map((r) => r.bytesPerToken as number)),
    target: '<= 2',
    met: ft.every((r) => (r.bytesPerToken as number) <= 2),
  },
  filteredListP50MsMax: {
    value: Math.max(...filtered.map((r) => r.p50Ms as number)),
    target: '< 20',
    met: filtered.every((r) => (r.p50Ms as number) < 20),
  },
  searchAndTwoTagListP50MsMax: {
    value: Math.max(...summarised.map((r) => r.p50Ms as number)),
    target: '< 20',
    met: summarised.every((r) => (r.p50Ms as number) < 20),
  },
};
printTable(
  'targets',
  ['target', 'value', 'goal', 'met'],
  Object.entries(targets).map(([k, v]) => [k, v.value as number, v.target, v.met ? 'yes' : 'NO']),
);
writeResults('windows', {
  freezeThaw: ft,
  list: {
    windows: LIST_WINDOWS,
    fillMs: list.fillMs,
    summary: list.summary,
    cases: list.rows,
    beforeSummary: BEFORE_SUMMARY,
  },
  targets,
});
