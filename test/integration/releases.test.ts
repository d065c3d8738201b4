import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { CwmClient } from '../../client/rpc-client.js';
import { isCwmError } from '../../daemon/protocol/index.js';
import { conversation } from '../helpers/conversation.js';
import { type DaemonHandle, startDaemon } from '../helpers/daemon.js';
import { waitFor } from '../helpers/wait.js';
import { type Simulator, startSimulator } from '../sim/index.js';

const MODEL = 'sim/llama-3-8b-instruct';

/**
 * Engine state no window owns must not outlive the operation that took it: a freeze that fails after the engine
 * pinned its KV, or a delete whose LMCache cleanup could not run, is released now or journaled and released later.
 */
describe('engine release journal: no LMCache pin outlives its window', () => {
  let sim: Simulator;
  let d: DaemonHandle;
  let c: CwmClient;
  const pinned = () => sim.counters().lmcache.pinnedChunks;

  before(async () => {
    // Prefill slow enough that two freezes of one name are both past their name check before either commits.
    sim = await startSimulator({ lmcacheCpuChunks: 512, prefillUsPerToken: 20 });
    d = await startDaemon({ engineUrl: sim.url, env: { CWM_LMCACHE_URL: sim.lmcacheUrl, CWM_AUTOFREEZE: 'false' } });
    c = await d.client();
  });
  after(async () => {
    c?.close();
    await d?.stop();
    await sim?.close();
  });

  it('a freeze that loses a name race gives its pin back; only the winner stays pinned', async () => {
    const before = pinned();
    for (const [id, seed] of [
      ['race-a', 11],
      ['race-b', 29],
    ] as const) {
      await c.call('session.record', { session: id, model: MODEL, messages: conversation(2048, seed) });
    }
    const results = await Promise.allSettled([
      c.call('window.freeze', { session: 'race-a', name: 'race' }),
      c.call('window.freeze', { session: 'race-b', name: 'race' }),
    ]);
    const won = results.filter((r) => r.status === 'fulfilled');
    const lost = results.filter((r) => r.status === 'rejected');
    assert.equal(won.length, 1);
    assert.equal(lost.length, 1);
    const reason = (lost[0] as PromiseRejectedResult).reason as unknown;
    assert.ok(isCwmError(reason) && reason.code === 'WINDOW_EXISTS', String(reason));
    const w = await c.call('window.get', { name: 'race' });
    assert.equal(w.pinned, true);
    const winnerChunks = Math.floor(w.tokens / 256);
    assert.equal(pinned() - before, winnerChunks, "the loser's chunks are unpinned again");
    await c.call('window.delete', { name: 'race' });
    assert.equal(pinned(), before, 'and the winner gives its own back at delete');
  });

  it('a delete while LMCache is unreachable keeps the release in a journal and completes it once it is back', async () => {
    const before = pinned();
    await c.call('session.record', { session: 'gone', model: MODEL, messages: conversation(3000, 5) });
    const f = await c.call('window.freeze', { session: 'gone', name: 'gone' });
    assert.equal(f.pinned, true);
    const held = pinned() - before;
    assert.ok(held >= 10, `pinned ${held} chunks`);
    sim.setFaults({ mode: 'down', target: 'lmcache' });
    let del: Awaited<ReturnType<typeof c.call<'window.delete'>>>;
    try {
      del = await c.call('window.delete', { name: 'gone' });
    } finally {
      sim.setFaults({ mode: 'none', target: 'lmcache' });
    }
    assert.deepEqual(del.deleted, ['gone'], 'the registry change does not wait for the engine');
    assert.ok(
      del.warnings.some((x) => /not cleaned up yet \(cwmd retries\)/.test(x)),
      JSON.stringify(del.warnings),
    );
    assert.equal(pinned() - before, held, 'still pinned: the engine could not be told');
    // A restart (as after a crash) reads the journal and releases what it holds.
    c.close();
    await d.stop();
    d = await d.restart();
    c = await d.client();
    await waitFor('the journaled release to reach LMCache', async () => pinned() === before);
    assert.deepEqual((await c.call('registry.check', {})).problems, []);
  });
});
