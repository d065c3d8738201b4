import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { CwmClient } from '../../client/rpc-client.js';
import { type CwmError, isCwmError } from '../../daemon/protocol/index.js';
import { cwm, type DaemonHandle, startDaemon } from '../helpers/daemon.js';
import { type Simulator, startSimulator } from '../sim/index.js';

const MODEL = 'sim/llama-3-8b-instruct';
const TIMEOUT_MS = 800;

/** Requests the simulator saw so far on both ports (vLLM paths and LMCache controller paths). */
function seen(sim: Simulator, path?: string): number {
  const c = sim.counters();
  const sum = (o: Record<string, number>) =>
    Object.entries(o)
      .filter(([p]) => !p.startsWith('/admin/') && (path === undefined || p === path))
      .reduce((a, [, n]) => a + n, 0);
  return sum(c.requests) + (path === undefined ? sum(c.lmcacheRequests) : 0);
}

function ids(n: number, seed: number): number[] {
  return Array.from({ length: n }, (_, i) => (i * 7919 + seed * 104729) % 128_000);
}

function expectRetryable(code: string, re?: RegExp) {
  return (e: unknown) => {
    assert.ok(isCwmError(e), String(e));
    assert.equal(e.code, code, e.message);
    assert.equal(e.retryable, true);
    assert.ok(e.hint && e.hint.length > 0, 'a hint says what to do');
    if (re) assert.match(e.message, re);
    return true;
  };
}

/**
 * Engine faults from the simulator's knobs: 503s, dropped and reset connections, slow answers, timeouts, an engine
 * that is down, an LMCache controller that is down. Calls fail with structured, retryable errors or recover by
 * retrying; the circuit breaker stops the daemon from hammering a dead engine; freezing still keeps the exact
 * tokens; nothing in the registry is lost.
 */
describe('engine faults', () => {
  let sim: Simulator;
  let d: DaemonHandle;
  let c: CwmClient;
  const frozen = new Map<string, number[]>();
  /** Requests the simulator actually faulted, by server and mode (counted before each change of fault). */
  const injected: Record<string, number> = {};
  const modes = new Map<string, string>();
  const inject = (spec: Parameters<Simulator['setFaults']>[0]) => {
    harvestTarget(spec.target ?? 'vllm');
    modes.set(spec.target ?? 'vllm', spec.mode);
    sim.setFaults(spec);
  };
  /** A fault with a count resets its mode to 'none' when used up, so remember the mode that was set. */
  const harvestTarget = (target: 'vllm' | 'lmcache') => {
    const st = sim.state.faults[target].status();
    const mode = modes.get(target) ?? st.mode;
    if (st.affected > 0) injected[`${target}:${mode}`] = (injected[`${target}:${mode}`] ?? 0) + st.affected;
  };
  const clear = () => {
    harvestTarget('vllm');
    harvestTarget('lmcache');
    modes.clear();
    sim.setFaults({ mode: 'none' });
    sim.setFaults({ mode: 'none', target: 'lmcache' });
  };

  before(async () => {
    sim = await startSimulator({ lmcacheCpuChunks: 512, lmcacheDiskChunks: 1024, prefillUsPerToken: 2 });
    d = await startDaemon({
      engineUrl: sim.url,
      env: { CWM_LMCACHE_URL: sim.lmcacheUrl, CWM_AUTOFREEZE: 'false' },
      config: { engine: { timeoutMs: TIMEOUT_MS, retries: 3 } },
    });
    c = await d.client();
    for (let i = 0; i < 40; i++) {
      await c.call('session.record', { session: `s${i}`, model: MODEL, prompt: ids(600 + 37 * i, i) });
    }
  });

  after(async () => {
    clear();
    const total = Object.values(injected).reduce((a, n) => a + n, 0);
    process.stdout.write(`# ${total} requests faulted by the simulator: ${JSON.stringify(injected)}\n`);
    c?.close();
    await d?.stop();
    await sim?.close();
  });

  it('retries transient 503s, dropped connections and bodies reset mid-stream; the operations succeed', async () => {
    let before = seen(sim, '/v1/completions');
    inject({ mode: '503', count: 2, paths: ['/v1/completions'] });
    const f = await c.call('window.freeze', { session: 's0', name: 'w0' });
    frozen.set('w0', ids(600, 0));
    assert.equal(f.pinned, true, 'the retried prefill made the KV, and it was pinned');
    assert.deepEqual(f.warnings, []);
    assert.equal(seen(sim, '/v1/completions') - before, 3, 'two 503s, then the answer');

    before = seen(sim, '/v1/completions');
    inject({ mode: 'reset-mid-stream', count: 1, paths: ['/v1/completions'] });
    const t = await c.call('window.thaw', { name: 'w0', newSession: 'w0-a' });
    assert.equal(t.tokens, 600);
    assert.equal(seen(sim, '/v1/completions') - before, 2, 'the reset body, then the answer');

    before = seen(sim, '/v1/completions');
    inject({ mode: 'drop', count: 2, paths: ['/v1/completions'] });
    const t2 = await c.call('window.thaw', { name: 'w0', newSession: 'w0-b' });
    assert.ok(t2.cachedTokens > 0);
    assert.equal(seen(sim, '/v1/completions') - before, 3);

    inject({ mode: '503', count: 2, target: 'lmcache', paths: ['/lookup'] });
    const f2 = await c.call('window.freeze', { session: 's1', name: 'w1' });
    frozen.set('w1', ids(637, 1));
    assert.equal(f2.pinned, true);
    clear();
  });

  it('very slow answers within the timeout only take longer', async () => {
    inject({ mode: 'slow', delayMs: TIMEOUT_MS / 2, count: 3 });
    const t = await c.call('window.thaw', { name: 'w1', newSession: 'w1-slow' });
    assert.equal(t.tokens, 637);
    assert.deepEqual(t.warnings, []);
    clear();
  });

  it('timeouts: a thaw fails with ENGINE_TIMEOUT and changes nothing; a freeze keeps the exact tokens unpinned', async () => {
    const counts = (await c.call('daemon.status')).counts;
    const before = seen(sim, '/v1/completions');
    inject({ mode: 'slow', delayMs: TIMEOUT_MS * 4, paths: ['/v1/completions'] });
    await assert.rejects(
      c.call('window.thaw', { name: 'w0', newSession: 'w0-timeout' }),
      expectRetryable('ENGINE_TIMEOUT', /did not answer \/v1\/completions within 800 ms/),
    );
    assert.equal(seen(sim, '/v1/completions') - before, 1, 'a timed-out completion is not sent again');
    assert.deepEqual((await c.call('daemon.status')).counts, counts, 'a failed thaw changes nothing');
    await assert.rejects(c.call('session.get', { session: 'w0-timeout' }), /no session/);
    const f = await c.call('window.freeze', { session: 's2', name: 'w2' });
    frozen.set('w2', ids(674, 2));
    assert.equal(f.pinned, false);
    assert.ok(
      f.warnings.some((w) => /exact tokens were frozen, the KV cache was not pinned/.test(w)),
      f.warnings.join(),
    );
    clear();
  });

  it('engine down: retryable errors, the breaker stops hammering it, freezes keep the exact tokens', async (t) => {
    inject({ mode: 'down' });
    inject({ mode: 'down', target: 'lmcache' });
    const before = seen(sim);
    await assert.rejects(
      c.call('window.thaw', { name: 'w0', newSession: 'down-1' }),
      expectRetryable('ENGINE_UNAVAILABLE'),
    );
    // 30 freezes at once while it is down: every one keeps its exact tokens
    const results = await Promise.all(
      Array.from({ length: 30 }, (_, i) => c.call('window.freeze', { session: `s${i + 3}`, name: `down-${i}` })),
    );
    results.forEach((r, i) => {
      frozen.set(`down-${i}`, ids(600 + 37 * (i + 3), i + 3));
      assert.equal(r.pinned, false);
      assert.equal(r.tokens, 600 + 37 * (i + 3));
      assert.ok(r.warnings.some((w) => /engine is unavailable/.test(w)));
    });
    // one more thaw trips the vLLM breaker too (each endpoint has its own: vLLM and the LMCache controller)
    await assert.rejects(
      c.call('window.thaw', { name: 'w1', newSession: 'down-2' }),
      expectRetryable('ENGINE_UNAVAILABLE'),
    );
    const duringBurst = seen(sim) - before;
    // then 200 more calls while it stays down: the breakers are open, nothing reaches the engine but, once a
    // cooldown (5 s) has passed, a single probe per breaker
    const quiet = seen(sim);
    for (let i = 0; i < 100; i++) {
      await assert.rejects(
        c.call('window.thaw', { name: 'w1', newSession: `down-t${i}` }),
        expectRetryable('ENGINE_UNAVAILABLE'),
      );
      await c.call('window.freeze', { session: 's35', name: `down-x${i}` });
      frozen.set(`down-x${i}`, ids(600 + 37 * 35, 35));
    }
    const afterQuiet = seen(sim) - quiet;
    t.diagnostic(`requests to the dead engine: ${duringBurst} for the first 32 calls, ${afterQuiet} for the next 200`);
    assert.ok(duringBurst <= 32 + 2 * 8, `${duringBurst} requests for 32 calls: the breakers capped the retries`);
    assert.ok(afterQuiet <= 2, `${afterQuiet} requests reached the dead engine while the breakers were open`);

    // the CLI shows the error with its hint, and --json says it is retryable
    const r = await cwm(d, ['thaw', 'w1']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error: vLLM .* is failing; not retrying for now/m);
    assert.match(r.stderr, /^hint: .*cwm doctor/m);
    const j = await cwm(d, ['--json', 'thaw', 'w1']);
    const err = JSON.parse(j.stderr).error as CwmError & { code: string };
    assert.equal(err.code, 'ENGINE_UNAVAILABLE');
    assert.equal(err.retryable, true);

    // back up: after the cooldown one probe closes each breaker and calls work again
    clear();
    const deadline = Date.now() + 30_000;
    let thawed = null;
    while (!thawed && Date.now() < deadline) {
      thawed = await c.call('window.thaw', { name: 'down-0', newSession: 'back-up' }).catch(() => null);
      if (!thawed) await new Promise((r2) => setTimeout(r2, 250));
    }
    assert.ok(thawed, 'calls succeed again once the engine is back');
    assert.equal(thawed.tokens, frozen.get('down-0')?.length);
  });

  it('LMCache down alone: freeze keeps the tokens unpinned, thaw works and says residency is unknown', async () => {
    // let the LMCache breaker close first (it may still be open from the outage above)
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      const probe = await c.call('window.freeze', { session: 's36', name: 'probe-lm' });
      await c.call('window.delete', { name: 'probe-lm' });
      if (probe.pinned) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    inject({ mode: 'down', target: 'lmcache' });
    const f = await c.call('window.freeze', { session: 's37', name: 'lm-down' });
    frozen.set('lm-down', ids(600 + 37 * 37, 37));
    assert.equal(f.pinned, false);
    assert.ok(
      f.warnings.some((w) => /LMCache/.test(w)),
      f.warnings.join(),
    );
    const t = await c.call('window.thaw', { name: 'lm-down', newSession: 'lm-down-s' });
    assert.equal(t.tokens, 600 + 37 * 37);
    assert.ok(
      t.warnings.some((w) => /LMCache residency unknown/.test(w)),
      t.warnings.join(),
    );
    // deleting a pinned window while LMCache is down: the window goes, the warning says LMCache was not cleaned
    const del = await c.call('window.delete', { name: 'w0' });
    frozen.delete('w0');
    assert.deepEqual(del.deleted, ['w0']);
    assert.ok(
      del.warnings.some((w) => /LMCache/.test(w)),
      del.warnings.join(),
    );
    clear();
  });

  it('nothing in the registry was lost: every window has its exact tokens and every invariant holds', async (t) => {
    const check = await c.call('registry.check', {});
    assert.deepEqual(check.problems, []);
    for (const [name, tokens] of frozen) {
      const w = await c.call('window.get', { name, tokens: true });
      assert.deepEqual(w.tokenIds, tokens, name);
    }
    const list = await c.call('window.list', { limit: 1000 });
    assert.equal(list.total, frozen.size);
    t.diagnostic(`${frozen.size} windows verified token for token after the faults`);
  });
});
