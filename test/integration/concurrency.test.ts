import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { CwmClient } from '../../client/rpc-client.js';
import { isCwmError } from '../../daemon/protocol/index.js';
import { type DaemonHandle, startDaemon } from '../helpers/daemon.js';
import { type Simulator, startSimulator } from '../sim/index.js';
import { rng } from '../soak/crash-harness.js';

const MODEL = 'sim/llama-3-8b-instruct';
const CLIENTS = 50;
const OPS = 200;
const RACES = 20;

/**
 * 50 clients x 200 operations at once, on shared data: records to one shared session, freezes racing for the same
 * names, clones of each other's windows, deletes and thaws of windows others are cloning. Afterwards the registry is
 * what some serial order of the acknowledged operations gives: no lost write, one winner per name, refcounts equal
 * to references, every thawed session with its exact context, every destructive action in the audit log.
 */
describe('50 concurrent clients', () => {
  let sim: Simulator;
  let d: DaemonHandle;
  before(async () => {
    sim = await startSimulator({ requestLogSize: 0, prefillUsPerToken: 1 });
    d = await startDaemon({ engineUrl: sim.url, env: { CWM_AUTOFREEZE: 'false' } });
  });
  after(async () => {
    await d?.stop();
    await sim?.close();
  });

  it('50 x 200 operations: no lost writes, unique names, no deadlock, a consistent final state', async (t) => {
    const seed = Number(process.env.CWM_CONCURRENCY_SEED ?? Math.floor(Math.random() * 2 ** 31));
    const rand = rng(seed);
    const bases = Array.from({ length: 4 }, () => Array.from({ length: 768 }, () => Math.floor(rand() * 128_000)));
    // the acknowledged world
    const windows = new Map<string, number[]>();
    const parents = new Map<string, string>();
    const sessions = new Map<string, number[]>();
    const thawed = new Map<string, number[]>();
    const raceWinners = new Map<string, string[]>();
    let sharedRecords = 0;
    const acked: Record<string, number> = {};
    const refused: Record<string, number> = {};
    const unexpected: string[] = [];
    const ack = (op: string) => {
      acked[op] = (acked[op] ?? 0) + 1;
    };
    const refuse = (op: string, err: unknown, allowed: string[]) => {
      if (isCwmError(err) && allowed.includes(err.code))
        refused[`${op}:${err.code}`] = (refused[`${op}:${err.code}`] ?? 0) + 1;
      else unexpected.push(`${op}: ${(err as Error).message}`);
    };
    const shared = Array.from({ length: 64 }, (_, i) => i + 1);
    await (async () => {
      const c = await d.client();
      await c.call('session.record', { session: 'shared', model: MODEL, prompt: shared });
      sharedRecords = 1;
      c.close();
    })();

    const client = async (ci: number) => {
      const r = rng(seed * 31 + ci);
      const pick = <T>(xs: T[]): T | undefined => xs[Math.floor(r() * xs.length)];
      const c: CwmClient = await d.client();
      const own: string[] = [];
      let n = 0;
      const prompt = () => {
        const base = pick(bases) as number[];
        const out = base.slice(0, 256 * Math.floor(r() * 4));
        for (let i = 0, len = 1 + Math.floor(r() * 300); i < len; i++) out.push(Math.floor(r() * 128_000));
        return out;
      };
      try {
        for (let k = 0; k < OPS; k++) {
          const x = r();
          const mySession = `c${ci}-s${k % 3}`;
          if (x < 0.2 || !sessions.has(mySession)) {
            const p = prompt();
            await c.call('session.record', { session: mySession, model: MODEL, prompt: p });
            sessions.set(mySession, p);
            ack('record');
          } else if (x < 0.3) {
            await c.call('session.record', { session: 'shared', model: MODEL, prompt: shared });
            sharedRecords++;
            ack('record-shared');
          } else if (x < 0.5) {
            const name = `c${ci}-f${n++}`;
            await c.call('window.freeze', { session: mySession, name, prefill: r() < 0.2 });
            windows.set(name, sessions.get(mySession) as number[]);
            own.push(name);
            ack('freeze');
          } else if (x < 0.58) {
            // every client races for the same names at about the same point of its run
            const name = `race-${Math.floor((k * RACES) / OPS)}`;
            try {
              await c.call('window.freeze', { session: mySession, name, prefill: false });
              windows.set(name, sessions.get(mySession) as number[]);
              raceWinners.set(name, [...(raceWinners.get(name) ?? []), `c${ci}`]);
              ack('freeze-race');
            } catch (err) {
              refuse('freeze-race', err, ['WINDOW_EXISTS']);
            }
          } else if (x < 0.73) {
            const src = pick([...windows.keys()]);
            if (!src) continue;
            const name = `c${ci}-c${n++}`;
            try {
              await c.call('window.clone', { name: src, newName: name });
              windows.set(name, windows.get(src) as number[]);
              parents.set(name, src);
              own.push(name);
              ack('clone');
            } catch (err) {
              refuse('clone', err, ['WINDOW_NOT_FOUND']); // its owner deleted it meanwhile
            }
          } else if (x < 0.83) {
            const victim = pick(own);
            if (!victim) continue;
            own.splice(own.indexOf(victim), 1);
            const res = await c.call('window.delete', { name: victim });
            assert.deepEqual(res.deleted, [victim]);
            windows.delete(victim);
            ack('delete');
          } else if (x < 0.93) {
            const src = pick([...windows.keys()]);
            if (!src) continue;
            const session = `c${ci}-t${n++}`;
            const tokens = windows.get(src) as number[];
            try {
              await c.call('window.thaw', { name: src, newSession: session, warm: r() < 0.2 });
              thawed.set(session, tokens);
              ack('thaw');
            } catch (err) {
              refuse('thaw', err, ['WINDOW_NOT_FOUND']); // deleted by its owner meanwhile
            }
          } else {
            const l = await c.call('window.list', { limit: 50, sort: r() < 0.5 ? 'tokens' : 'created' });
            assert.ok(l.total >= l.windows.length);
            ack('list');
          }
        }
      } finally {
        c.close();
      }
    };

    // No deadlock: everything finishes (the watchdog fails the test instead of hanging it).
    let watchdog: NodeJS.Timeout | undefined;
    const t0 = Date.now();
    await Promise.race([
      Promise.all(Array.from({ length: CLIENTS }, (_, i) => client(i))),
      new Promise((_, reject) => {
        watchdog = setTimeout(() => reject(new Error('no progress within 180 s: deadlock?')), 180_000);
      }),
    ]);
    clearTimeout(watchdog);
    const seconds = (Date.now() - t0) / 1000;
    const total = Object.values(acked).reduce((a, b) => a + b, 0);
    t.diagnostic(
      `seed ${seed}: ${total} acknowledged operations in ${seconds.toFixed(1)} s ${JSON.stringify(acked)}, refused ${JSON.stringify(refused)}`,
    );
    assert.deepEqual(unexpected, []);

    const c = await d.client();
    try {
      // invariants: refcounts = references, counters, indexes, lineage
      const check = await c.call('registry.check', {});
      assert.deepEqual(check.problems, [], `seed ${seed}`);
      // no lost write: the shared session's turns count every acknowledged record
      const sh = await c.call('session.get', { session: 'shared' });
      assert.equal(sh.turns, sharedRecords, 'every record of the shared session counted once');
      // one winner per contested name, holding the winner's context
      for (const [name, winners] of raceWinners) assert.equal(winners.length, 1, `${name}: ${winners.join()}`);
      assert.ok(raceWinners.size > 0);
      // the set of windows is exactly the acknowledged one, each with its exact tokens and lineage
      const names: string[] = [];
      for (let offset = 0; ; offset += 1000) {
        const page = await c.call('window.list', { sort: 'name', order: 'asc', limit: 1000, offset });
        names.push(...page.windows.map((w) => w.name));
        if (page.windows.length < 1000) break;
      }
      assert.deepEqual(names.sort(), [...windows.keys()].sort());
      for (const [name, tokens] of windows) {
        const w = await c.call('window.get', { name, tokens: true });
        assert.deepEqual(w.tokenIds, tokens, name);
        assert.equal(w.parent, parents.get(name) ?? null, name);
      }
      for (const [id, tokens] of sessions) {
        const s = await c.call('session.get', { session: id, messages: true });
        assert.deepEqual(s.prompt, tokens, id);
      }
      // thawed sessions keep their exact context even when their window was deleted afterwards
      for (const [id, tokens] of thawed) {
        const s = await c.call('session.get', { session: id, messages: true });
        assert.equal(s.tokens, tokens.length, id);
        assert.deepEqual(s.prompt, tokens, id);
      }
      // every destructive action is in the audit trail, in the same batch as the change it describes
      const audit = await c.call('audit.list', { limit: 10_000 });
      const count = (action: string) => audit.events.filter((e) => e.action === action && e.outcome === 'ok').length;
      assert.equal(count('window.delete'), acked.delete ?? 0);
      assert.equal(count('window.freeze'), (acked.freeze ?? 0) + (acked['freeze-race'] ?? 0));
      assert.equal(count('window.clone'), acked.clone ?? 0);
      assert.equal(count('window.thaw'), acked.thaw ?? 0);
      const st = await c.call('daemon.status');
      assert.equal(st.counts.windows, windows.size);
    } finally {
      c.close();
    }
  });
});
