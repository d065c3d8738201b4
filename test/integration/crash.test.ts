import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { cwm, startDaemon } from '../helpers/daemon.js';
import { type Simulator, startSimulator } from '../sim/index.js';
import { runCrash } from '../soak/crash-harness.js';

/**
 * SIGKILL at random moments during a stream of mixed operations (record, freeze, clone, delete, thaw) from 8
 * concurrent clients: after every restart, nothing acknowledged is lost and every invariant holds.
 * The longer version is `npm run soak` (test/soak/soak.ts). CWM_CRASH_SEED replays a run.
 */
describe('crash consistency under SIGKILL', () => {
  let sim: Simulator;
  before(async () => {
    sim = await startSimulator({
      lmcacheCpuChunks: 256,
      lmcacheDiskChunks: 1024,
      requestLogSize: 0,
      prefillUsPerToken: 2,
      decodeUsPerToken: 20,
    });
  });
  after(async () => {
    await sim?.close();
  });

  it('survives 22 kills across 1,000+ operations with nothing acknowledged lost and a clean registry', async (t) => {
    const seed = Number(process.env.CWM_CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31));
    const r = await runCrash({ sim, kills: 22, minOps: 1000, workers: 8, runMs: [60, 450], seed });
    const summary = JSON.stringify({ ...r, problems: r.problems.slice(0, 10) }, null, 1);
    t.diagnostic(
      `seed ${seed}: ${r.opsAttempted} ops (${r.opsAcknowledged} acknowledged, ${r.opsCutOff} cut off by a kill: ` +
        `${r.cutOffApplied} had committed), ${r.kills} kills (${r.killsMidCall} with calls in flight, ${r.killsAtCommit} aimed at a commit), ` +
        `${r.lostRecords} lost, ${r.startupRepairs} start-up repairs`,
    );
    assert.deepEqual(r.problems, [], `seed ${seed}: ${summary}`);
    assert.ok(r.kills >= 20, summary);
    assert.ok(r.opsAttempted >= 1000, summary);
    assert.equal(r.lostRecords, 0, summary);
    assert.equal(r.startupRepairs, 0, summary);
    assert.ok(r.killsMidCall >= r.kills / 2, `most kills hit calls in flight: ${summary}`);
    for (const op of ['record', 'freeze', 'clone', 'delete', 'thaw']) assert.ok((r.byOp[op]?.ok ?? 0) > 0, op);
  });

  it('a thawed session keeps its exact context when its window is deleted, and across a kill', async () => {
    const d = await startDaemon({ engineUrl: sim.url, env: { CWM_LMCACHE_URL: sim.lmcacheUrl } });
    try {
      const c = await d.client();
      const ids = Array.from({ length: 1500 }, (_, i) => (i * 17) % 128_000);
      await c.call('session.record', { session: 'src', model: 'sim/llama-3-8b-instruct', prompt: ids });
      await c.call('window.freeze', { session: 'src', name: 'gone' });
      await c.call('window.thaw', { name: 'gone', newSession: 'thawed' });
      await c.call('window.delete', { name: 'gone' });
      // a new window under the old name must not become the thawed session's context
      await c.call('session.record', { session: 'other', model: 'sim/llama-3-8b-instruct', prompt: [1, 2, 3] });
      await c.call('window.freeze', { session: 'other', name: 'gone' });
      assert.deepEqual((await c.call('session.get', { session: 'thawed', messages: true })).prompt, ids);
      await d.kill('SIGKILL');
      c.close();
      const d2 = await d.restart();
      try {
        const c2 = await d2.client();
        const f = await c2.call('window.freeze', { session: 'thawed', name: 'again' });
        assert.equal(f.tokens, ids.length);
        assert.deepEqual((await c2.call('window.get', { name: 'again', tokens: true })).tokenIds, ids);
        assert.deepEqual((await c2.call('registry.check', {})).problems, []);
        c2.close();
      } finally {
        await d2.stop();
      }
    } finally {
      await d.stop();
    }
  });

  it('cwm doctor --registry agrees after a kill in the middle of a freeze', async () => {
    const d = await startDaemon({ engineUrl: sim.url, env: { CWM_LMCACHE_URL: sim.lmcacheUrl } });
    try {
      const c = await d.client();
      const ids = Array.from({ length: 3000 }, (_, i) => (i * 31) % 128_000);
      await c.call('session.record', { session: 'k', model: 'sim/llama-3-8b-instruct', prompt: ids });
      sim.setFaults({ mode: 'slow', delayMs: 400, paths: ['/v1/completions'], count: 1 });
      const p = c.call('window.freeze', { session: 'k', name: 'k-1' }).catch((e: unknown) => e);
      await new Promise((r) => setTimeout(r, 100));
      await d.kill('SIGKILL');
      assert.ok(await p, 'the freeze was cut off');
      c.close();
      const d2 = await d.restart();
      try {
        const doc = await cwm(d2, ['doctor', '--registry']);
        assert.match(doc.stdout, /ok\s+registry: all invariants hold/, doc.stdout);
        const c2 = await d2.client();
        await assert.rejects(c2.call('window.get', { name: 'k-1' }), /no window "k-1"/);
        assert.equal((await c2.call('session.get', { session: 'k' })).tokens, 3000);
        c2.close();
      } finally {
        await d2.stop();
      }
    } finally {
      sim.setFaults({ mode: 'none' });
      await d.stop();
    }
  });
});
