import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import type { BatchOp, Registry } from '../../daemon/registry/db.js';
import type { WindowRecord } from '../../daemon/registry/records.js';
import { BundleService } from '../../daemon/services/bundles.js';
import { createdKey, indexOps } from '../../daemon/services/indexes.js';
import { type ListParams, smallest, toWindowInfo } from '../../daemon/services/windows.js';
import { tempDir } from '../helpers/daemon.js';
import { OFFLINE_MODEL, type OfflineServices, openOffline } from '../helpers/offline-backend.js';

/**
 * window.list against a brute-force reading of every record: the index-driven fast path and the in-memory summary
 * (slow path) must both give exactly what filtering and sorting all windows gives, through freezes, clones,
 * deletes, record updates, bundle import, a failed batch, a reopen, and writes that land while the summary builds.
 */

const OTHER_MODEL = 'sim/other';
const TAGS = ['alpha', 'beta', 'gamma', 'delta', 'rare'];
const SESSIONS = 12;
const ids = (n: number, seed: number) => Array.from({ length: n }, (_, i) => (i * 7919 + seed * 31) % 128_000);

const dirs: string[] = [];
after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function newDir(): string {
  const d = tempDir('cwm-wlist');
  dirs.push(d);
  return d;
}

/** Deterministic pseudo-random numbers, so a failure reproduces. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const DESCRIPTIONS = [
  (i: number) => `window ${i}`,
  (i: number) => `Milestone ${i} of the PROJECT`,
  (i: number) => `notes on café ${i}\nsecond line mentions Zebra`,
  () => '',
  (i: number) => `ÜNÏCODE Straße ${i % 7}`,
  (i: number) => `refactor: parser ${i % 13} milestone`,
];

async function allRecords(reg: Registry): Promise<WindowRecord[]> {
  const out: WindowRecord[] = [];
  for await (const v of reg.windows.values()) out.push(v as WindowRecord);
  return out;
}

/** The specification of window.list, computed from every record. */
function brute(all: WindowRecord[], p: ListParams) {
  const search = p.search?.toLowerCase();
  const matched = all.filter(
    (w) =>
      (p.model === undefined || w.model === p.model) &&
      (p.session === undefined || w.session === p.session) &&
      (p.tags ?? []).every((t) => w.tags.includes(t)) &&
      (!search || w.name.toLowerCase().includes(search) || w.description.toLowerCase().includes(search)),
  );
  const byName = (a: WindowRecord, b: WindowRecord) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  const cmp = (a: WindowRecord, b: WindowRecord) => {
    if (p.sort === 'tokens') return a.tokens - b.tokens || byName(a, b);
    if (p.sort === 'created') {
      const ca = createdKey(a.createdAt);
      const cb = createdKey(b.createdAt);
      return ca < cb ? -1 : ca > cb ? 1 : byName(a, b);
    }
    return byName(a, b);
  };
  matched.sort((a, b) => (p.order === 'desc' ? -cmp(a, b) : cmp(a, b)));
  return {
    windows: matched.slice(p.offset, p.offset + p.limit).map(toWindowInfo),
    total: matched.length,
    limit: p.limit,
    offset: p.offset,
  };
}

type Filter = Pick<ListParams, 'tags' | 'model' | 'session' | 'search'>;

function filters(): Filter[] {
  return [
    {},
    { tags: ['alpha'] },
    { tags: ['rare'] },
    { tags: ['alpha', 'beta'] },
    { tags: ['beta', 'alpha', 'gamma'] },
    { tags: ['nope'] },
    { model: OTHER_MODEL },
    { model: OFFLINE_MODEL, tags: ['gamma'] },
    { model: 'no/such-model' },
    { session: 's3' },
    { session: 's3', model: OTHER_MODEL },
    { session: 's5', tags: ['delta'] },
    { search: 'milestone' },
    { search: 'MILESTONE 1' },
    { search: 'café' },
    { search: 'straße' },
    { search: 'üNï' },
    { search: 'zebra' },
    { search: '\nsecond' },
    { search: 'w-01' },
    { search: 'clone of' },
    { search: '' },
    { search: 'matches nothing at all' },
    { tags: ['alpha'], search: 'window' },
    { model: OTHER_MODEL, search: 'e', tags: ['beta'] },
  ];
}

const PAGES: [number, number][] = [
  [0, 20],
  [3, 7],
  [0, 1000],
  [150, 40],
  [5000, 5],
];

/** Every filter x sort x order x page against the brute-force answer; returns the number of cases checked. */
async function compareAll(o: OfflineServices, label: string, quick = false): Promise<number> {
  const all = await allRecords(o.reg);
  let n = 0;
  for (const f of filters()) {
    for (const sort of ['created', 'name', 'tokens'] as const) {
      for (const order of ['asc', 'desc'] as const) {
        for (const [offset, limit] of quick ? PAGES.slice(0, 2) : PAGES) {
          const p: ListParams = { ...f, sort, order, offset, limit };
          const got = await o.windows.list(p);
          assert.deepEqual(got, brute(all, p), `${label}: ${JSON.stringify(p)}`);
          n++;
        }
      }
    }
  }
  return n;
}

async function addSessions(o: OfflineServices): Promise<void> {
  for (let s = 0; s < SESSIONS; s++) {
    await o.sessions.record({
      session: `s${s}`,
      model: s % 3 === 0 ? OTHER_MODEL : OFFLINE_MODEL,
      messages: [{ role: 'user', content: `s${s}` }],
      tokenIds: ids(200 + 37 * s, s),
    });
  }
}

async function freezeMany(o: OfflineServices, from: number, count: number, seed: number): Promise<void> {
  const r = rng(seed);
  let next = from;
  // Concurrent freezes: many windows share a created millisecond, so the name tie-break is exercised.
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      for (;;) {
        const i = next++;
        if (i >= from + count) return;
        const tags = TAGS.filter((t) => r() < (t === 'rare' ? 0.05 : 0.35));
        const describe = DESCRIPTIONS[Math.floor(r() * DESCRIPTIONS.length)] as (i: number) => string;
        const desc = describe(i);
        // mixed-case names, so name order (code units) differs from case-insensitive order
        const name = `${r() < 0.2 ? 'W' : 'w'}-${i.toString().padStart(3, '0')}`;
        await o.windows.freeze({
          session: `s${Math.floor(r() * SESSIONS)}`,
          name,
          ...(desc === '' && r() < 0.5 ? {} : { description: desc }),
          tags,
          prefill: false,
        });
      }
    }),
  );
}

/** A record update the way a service would write one: index entries, counters and record in one batch. */
async function update(o: OfflineServices, name: string, change: { tags?: string[]; description?: string }) {
  await o.reg.mutex.run(async () => {
    const w = await o.reg.getWindow(name);
    assert.ok(w, name);
    const ops: BatchOp[] = [];
    const deltas = new Map<string, number>();
    indexOps(o.reg, w, -1, ops, deltas);
    const nw: WindowRecord = {
      ...w,
      tags: change.tags ? [...new Set(change.tags)].sort() : w.tags,
      description: change.description ?? w.description,
    };
    indexOps(o.reg, nw, 1, ops, deltas);
    ops.push({ type: 'put', sublevel: o.reg.windows, key: name, value: nw });
    const next = await o.reg.countOps(deltas, ops);
    await o.reg.batch(ops);
    o.reg.commitCounts(next);
  });
}

async function populate(o: OfflineServices): Promise<void> {
  await addSessions(o);
  await freezeMany(o, 0, 260, 1);
  // clones: default and explicit descriptions and tags; a clone of a clone
  const [first, second] = await names(o, 1, 2);
  await o.windows.clone({ name: first as string, newName: 'c-001' });
  await o.windows.clone({
    name: second as string,
    newName: 'c-002',
    description: 'Cloned MILESTONE',
    tags: ['rare', 'beta'],
  });
  await o.windows.clone({ name: 'c-001', newName: 'c-001-b', tags: [] });
  for (let i = 10; i < 40; i += 3) {
    const src = (await o.windows.list({ sort: 'name', order: 'asc', offset: i, limit: 1 })).windows[0];
    assert.ok(src);
    await o.windows.clone({ name: src.name, newName: `k-${i}`, tags: i % 2 === 0 ? ['gamma'] : undefined });
  }
}

async function names(o: OfflineServices, offset: number, limit: number): Promise<string[]> {
  return (await o.windows.list({ sort: 'name', order: 'asc', offset, limit })).windows.map((w) => w.name);
}

describe('window.list over the in-memory summary', () => {
  it('matches a brute-force filter for every filter, sort, order and page, through changes and a reopen', async () => {
    const dir = newDir();
    let o = await openOffline(dir);
    try {
      await populate(o);
      assert.equal(o.reg.windowSummary.built, false, 'built lazily');
      assert.equal(await compareAll(o, 'fresh'), 25 * 3 * 2 * PAGES.length);
      assert.equal(o.reg.windowSummary.built, true, 'the slow path built it');

      // deletes: single, one with surviving children (they get parentDeleted), a cascade
      const [parent] = await names(o, 1, 1);
      await o.windows.delete({ name: parent as string, cascade: false });
      await o.windows.delete({ name: 'c-001', cascade: true });
      for (const name of await names(o, 40, 25)) await o.windows.delete({ name, cascade: false });
      // record updates: new tags and descriptions (the summary upserts from the written value)
      const some = await names(o, 0, 30);
      for (const [i, name] of some.entries()) {
        await update(o, name, i % 2 === 0 ? { tags: ['rare', 'alpha'] } : { description: `Renamed MILESTONE ${i}` });
      }
      // more freezes after the build
      await freezeMany(o, 300, 40, 2);
      await compareAll(o, 'after changes');

      // bundle import: a new window under another name, and the original deleted then imported back
      const bundles = new BundleService(o.ctx, o.windows);
      const file = path.join(dir, 'w-010.cwmb');
      const src = (await o.windows.list({ search: '-010', sort: 'name', order: 'asc', offset: 0, limit: 5 })).windows;
      assert.equal(src.length, 1);
      const srcName = (src[0] as { name: string }).name;
      await bundles.export({ name: srcName, file });
      await bundles.import({ file, name: 'imported-copy' });
      await o.windows.delete({ name: srcName, cascade: false });
      await compareAll(o, 'after import and delete', true);
      await bundles.import({ file });
      const back = await o.windows.list({ search: srcName, sort: 'name', order: 'asc', offset: 0, limit: 5 });
      assert.deepEqual(
        back.windows.map((w) => w.name),
        [srcName],
      );
      await compareAll(o, 'after import');

      // reopen: a new registry builds its summary from disk
      await o.close();
      o = await openOffline(dir);
      assert.equal(o.reg.windowSummary.built, false);
      await compareAll(o, 'after reopen');
      assert.equal(o.reg.windowSummary.built, true);
    } finally {
      await o.close();
    }
  });

  it('keeps the writes that land while the summary is being built, and shares one build between queries', async () => {
    const dir = newDir();
    const o = await openOffline(dir);
    try {
      await addSessions(o);
      await freezeMany(o, 0, 200, 3);
      const keys = await names(o, 0, 1000);
      // Pause the build's scan after 50 windows and write meanwhile: windows before and after the scan position.
      const scanned = keys.slice(0, 50);
      const ahead = keys.slice(120);
      const windowsDb = o.reg.windows;
      const scan = windowsDb.iterator.bind(windowsDb);
      let scans = 0;
      let writes = 0;
      let second: Promise<unknown> | null = null;
      const duringBuild = async () => {
        assert.equal(o.reg.windowSummary.built, false);
        // A second query while the build runs waits for the same build.
        second = o.windows.list({ search: 'milestone', sort: 'name', order: 'asc', offset: 0, limit: 20 });
        await o.windows.freeze({ session: 's1', name: 'A-during', description: 'frozen MID-build', prefill: false });
        await o.windows.freeze({ session: 's2', name: 'zz-during', tags: ['rare'], prefill: false });
        await o.windows.delete({ name: scanned[3] as string, cascade: false });
        await o.windows.delete({ name: ahead[5] as string, cascade: false });
        await update(o, scanned[7] as string, { tags: ['alpha', 'beta'], description: 'updated milestone' });
        await update(o, ahead[9] as string, { tags: ['alpha', 'beta'], description: 'updated milestone' });
        // deleted then re-frozen under the same name, still during the build
        await o.windows.delete({ name: ahead[11] as string, cascade: false });
        await o.windows.freeze({ session: 's4', name: ahead[11] as string, tags: ['delta'], prefill: false });
        writes = 8;
        assert.equal(o.reg.windowSummary.built, false, 'still building');
      };
      windowsDb.iterator = (opts) => {
        scans++;
        const it = scan(opts);
        return (async function* () {
          let i = 0;
          for await (const kv of it) {
            yield kv;
            if (++i === 50) await duringBuild();
          }
        })();
      };
      try {
        const first = await o.windows.list({
          tags: ['alpha', 'beta'],
          sort: 'created',
          order: 'desc',
          offset: 0,
          limit: 1000,
        });
        assert.equal(writes, 8);
        assert.equal(scans, 1);
        assert.ok(second);
        await second;
        assert.equal(scans, 1, 'the concurrent query shared the build');
        const all = await allRecords(o.reg);
        assert.deepEqual(
          first,
          brute(all, { tags: ['alpha', 'beta'], sort: 'created', order: 'desc', offset: 0, limit: 1000 }),
        );
        assert.ok(first.windows.some((w) => w.name === ahead[9]));
        await compareAll(o, 'after a build with writes in flight');
        assert.equal(scans, 1);
      } finally {
        windowsDb.iterator = scan;
      }
    } finally {
      await o.close();
    }
  });

  it('drops the summary when a batch fails, and rebuilds it from what was written', async () => {
    const dir = newDir();
    const o = await openOffline(dir);
    try {
      await addSessions(o);
      await freezeMany(o, 0, 60, 4);
      await compareAll(o, 'before', true);
      assert.equal(o.reg.windowSummary.built, true);
      const db = o.reg.db as unknown as { batch: (...args: unknown[]) => Promise<void> };
      const real = db.batch;
      db.batch = async () => {
        throw new Error('injected write failure');
      };
      try {
        await assert.rejects(o.windows.freeze({ session: 's1', name: 'never', prefill: false }), /injected/);
      } finally {
        db.batch = real;
      }
      assert.equal(o.reg.windowSummary.built, false);
      await compareAll(o, 'after the failure', true);
      assert.equal(
        (await o.windows.list({ search: 'never', sort: 'name', order: 'asc', offset: 0, limit: 5 })).total,
        0,
      );
    } finally {
      await o.close();
    }
  });

  it('selects a page with the bounded heap exactly as a full sort does', () => {
    const r = rng(7);
    for (const n of [0, 1, 2, 5, 40, 333]) {
      const items = Array.from({ length: n }, (_, i) => ({ v: Math.floor(r() * 50), i }));
      const cmp = (a: { v: number; i: number }, b: { v: number; i: number }) => a.v - b.v || a.i - b.i;
      const sorted = [...items].sort(cmp);
      for (const k of [0, 1, 2, 3, 7, Math.floor(n / 5), Math.floor(n / 4), n - 1, n, n + 3]) {
        if (k < 0) continue;
        assert.deepEqual(smallest([...items], k, cmp), sorted.slice(0, k), `n=${n} k=${k}`);
      }
    }
  });
});
