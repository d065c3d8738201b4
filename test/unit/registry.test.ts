import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { isCwmError } from '../../daemon/protocol/index.js';
import { checkRegistry } from '../../daemon/registry/check.js';
import { Registry, SCHEMA_VERSION } from '../../daemon/registry/db.js';
import { tempDir } from '../helpers/daemon.js';
import { OFFLINE_MODEL, openOffline } from '../helpers/offline-backend.js';

const ids = (n: number, seed = 0) => Array.from({ length: n }, (_, i) => (i * 7919 + seed) % 128_000);

describe('registry', () => {
  it('stores sessions and windows, shares chunks between windows, and counts references', async () => {
    const dir = tempDir();
    const o = await openOffline(dir);
    try {
      await o.sessions.record({
        session: 'a',
        model: OFFLINE_MODEL,
        messages: [{ role: 'user', content: 'x' }],
        tokenIds: ids(1000),
      });
      const f1 = await o.windows.freeze({ session: 'a', name: 'w1', tags: ['t'], prefill: false });
      assert.equal(f1.result.chunks, 4);
      assert.equal(f1.result.newChunks, 4);
      // the same tokens again: no new chunks, refcounts 2
      const f2 = await o.windows.freeze({ session: 'a', name: 'w2', prefill: false });
      assert.equal(f2.result.newChunks, 0);
      const w1 = await o.windows.get('w1');
      for (const h of w1.chunkHashes) assert.equal(((await o.reg.refs.get(h)) as { n: number }).n, 2);
      assert.equal(await o.reg.count('chunks'), 4);
      assert.equal(await o.reg.count('c!'), 2);
      assert.equal(await o.reg.count('t!t!'), 1);
      assert.deepEqual(await o.windows.tokensOf(w1), ids(1000));
      // a clone adds references, not chunks
      await o.windows.clone({ name: 'w1', newName: 'w1c' });
      for (const h of w1.chunkHashes) assert.equal(((await o.reg.refs.get(h)) as { n: number }).n, 3);
      assert.equal(await o.reg.count('chunks'), 4);
      assert.deepEqual((await checkRegistry(o.reg, false)).problems, []);
      // deletes drop references; chunks go at zero
      await o.windows.delete({ name: 'w1', cascade: false });
      await o.windows.delete({ name: 'w2', cascade: false });
      assert.equal(await o.reg.count('chunks'), 4, 'the clone still holds them');
      const lineage = await o.windows.lineage(await o.windows.get('w1c'));
      assert.equal(lineage.missingParent, 'w1');
      const r = await o.windows.delete({ name: 'w1c', cascade: false });
      assert.equal(r.chunksFreed, 4);
      assert.equal(await o.reg.count('chunks'), 0);
      for (const h of w1.chunkHashes) assert.equal(await o.reg.chunks.get(h), undefined);
      assert.deepEqual((await checkRegistry(o.reg, false)).problems, []);
    } finally {
      await o.close();
    }
  });

  it('keeps indexes and counters consistent with the windows across reopen', async () => {
    const dir = tempDir();
    let o = await openOffline(dir);
    for (let i = 0; i < 30; i++) {
      await o.sessions.record({
        session: `s${i % 3}`,
        model: OFFLINE_MODEL,
        messages: [{ role: 'user', content: `${i}` }],
        tokenIds: ids(300, i),
      });
      await o.windows.freeze({ session: `s${i % 3}`, name: `w${i}`, tags: [`tag${i % 2}`], prefill: false });
    }
    await o.windows.delete({ name: 'w3', cascade: false });
    await o.close();
    o = await openOffline(dir);
    try {
      const page = await o.windows.list({ tags: ['tag1'], sort: 'created', order: 'desc', limit: 5, offset: 0 });
      assert.equal(page.total, 14);
      assert.equal(page.windows[0]?.name, 'w29');
      const bySession = await o.windows.list({ session: 's0', sort: 'name', order: 'asc', limit: 100, offset: 0 });
      assert.equal(bySession.total, 9);
      const check = await checkRegistry(o.reg, false);
      assert.equal(check.ok, true, JSON.stringify(check.problems));
      assert.equal(check.checked.windows, 29);
    } finally {
      await o.close();
    }
  });

  it('finds broken invariants and repairs what can be derived', async () => {
    const dir = tempDir();
    let o = await openOffline(dir);
    try {
      await o.sessions.record({
        session: 'a',
        model: OFFLINE_MODEL,
        messages: [{ role: 'user', content: 'x' }],
        tokenIds: ids(600),
      });
      await o.windows.freeze({ session: 'a', name: 'w', tags: ['x'], prefill: false });
      const w = await o.windows.get('w');
      await o.reg.batch([
        { type: 'put', sublevel: o.reg.refs, key: w.chunkHashes[0] as string, value: { n: 7, bytes: 1, tokens: 256 } },
        { type: 'put', sublevel: o.reg.idx, key: 't!x!zz!ghost', value: '' },
        { type: 'put', sublevel: o.reg.chunks, key: 'orphan', value: Buffer.from([1, 1, 2, 3]) },
      ]);
      const bad = await checkRegistry(o.reg, false);
      assert.deepEqual([...new Set(bad.problems.map((p) => p.kind))].sort(), [
        'chunk-orphan',
        'count',
        'index-stale',
        'ref-mismatch',
      ]);
      const fixed = await checkRegistry(o.reg, true);
      assert.equal(fixed.repaired, bad.problems.length);
      assert.deepEqual((await checkRegistry(o.reg, false)).problems, []);
      // a missing chunk cannot be derived: it is reported, and reading the window fails clearly
      await o.reg.batch([{ type: 'del', sublevel: o.reg.chunks, key: w.chunkHashes[1] as string }]);
      const missing = await checkRegistry(o.reg, false);
      assert.ok(missing.problems.some((p) => p.kind === 'chunk-missing' && p.key === 'w'));
      // a fresh daemon (no decoded chunks in memory) cannot read the window, and says why
      await o.close();
      o = await openOffline(dir);
      await assert.rejects(o.windows.tokensOf(w), (e: unknown) => isCwmError(e) && e.code === 'REGISTRY_CORRUPT');
    } finally {
      await o.close();
    }
  });

  it('writes a multi-key change atomically in one batch', async () => {
    const dir = tempDir();
    const o = await openOffline(dir);
    try {
      await assert.rejects(
        o.reg.batch([
          { type: 'put', sublevel: o.reg.meta, key: 'a', value: 1 },
          // an undefined key makes the whole batch fail before anything is written
          { type: 'put', sublevel: o.reg.meta, key: undefined as unknown as string, value: 2 },
        ]),
      );
      assert.equal(await o.reg.meta.get('a'), undefined);
    } finally {
      await o.close();
    }
  });

  it('refuses a registry written by a newer cwm', async () => {
    const dir = tempDir();
    const o = await openOffline(dir);
    await o.reg.meta.put('schemaVersion', SCHEMA_VERSION + 1);
    await o.close();
    const { pino } = await import('pino');
    await assert.rejects(
      Registry.open(path.join(dir, 'registry'), pino({ level: 'silent' })),
      (e: unknown) => isCwmError(e) && e.code === 'REGISTRY_CORRUPT' && /newer than this cwmd/.test(e.message),
    );
  });

  it('reuses a free-space reading only while there is plenty of room, and counts what was written since', async (t) => {
    const dir = tempDir();
    const reg = await Registry.open(path.join(dir, 'registry'), pino({ level: 'silent' }));
    const MiB = 1024 * 1024;
    let free = 8 * MiB + 256 * MiB + 10 * MiB; // reserve + margin + 10 MiB
    let calls = 0;
    // Below the unit: the volume's answer is made up, the registry's writes are real.
    t.mock.method(fs.promises, 'statfs', async () => {
      calls++;
      return { bavail: free / 4096, bsize: 4096 } as fs.StatsFs;
    });
    const put = async (key: string, bytes: number) => {
      await reg.batch([{ type: 'put', sublevel: reg.meta, key, value: 'x'.repeat(bytes) }]);
      free -= bytes; // as the volume would see it
    };
    try {
      await put('a', 4 * MiB);
      assert.equal(calls, 1, 'the first write reads the free space');
      await put('b', 4 * MiB);
      assert.equal(calls, 1, 'plenty of room left: the reading is reused');
      await put('c', 4 * MiB);
      assert.equal(calls, 2, 'the writes since would eat into the margin: read again');
      free = 8 * MiB + 1024; // the volume filled up meanwhile
      await put('d', 4 * MiB).then(
        () => assert.fail('a write into the reserve must be refused'),
        (e: unknown) => assert.ok(isCwmError(e) && e.code === 'DISK_FULL', String(e)),
      );
      assert.equal(calls, 3);
      assert.equal(await reg.meta.get('d'), undefined, 'nothing written');
    } finally {
      await reg.close();
    }
  });

  it('passes syncWrites to LevelDB with every batch', async (t) => {
    const reg = await Registry.open(path.join(tempDir(), 'registry'), pino({ level: 'silent' }));
    // Below the unit: LevelDB's own batch, to see the options the registry hands it.
    const db = (reg as unknown as { db: { batch: (ops: unknown, o: { sync?: boolean }) => Promise<void> } }).db;
    const seen: (boolean | undefined)[] = [];
    const real = db.batch.bind(db);
    t.mock.method(db, 'batch', (ops: unknown, o: { sync?: boolean }) => {
      seen.push(o.sync);
      return real(ops, o);
    });
    try {
      await reg.batch([{ type: 'put', sublevel: reg.meta, key: 'a', value: '1' }]);
      reg.syncWrites = true;
      await reg.batch([{ type: 'put', sublevel: reg.meta, key: 'b', value: '2' }]);
      assert.deepEqual(seen, [false, true]);
      assert.equal(await reg.meta.get('b'), '2');
    } finally {
      await reg.close();
    }
  });
});
