/**
 * The lossless proof end to end: the real cwmd (engine.kind llamacpp), the real llama-server (tiny random-weight
 * model, 2 slots) and the real `cwm` CLI.
 *
 * A conversation runs through the daemon's gateway (X-CWM-Session), is frozen with `cwm freeze` (the slot is saved
 * to <window-id>.bin), continued warm from the in-memory cache (the oracle), llama-server is killed and restarted,
 * the window is thawed with `cwm thaw` (restored into a slot, nothing evaluated), and the same next turn through the
 * gateway must equal the warm one bit for bit: token ids and every top-k logprob at every step. A cold recompute must
 * give the same greedy tokens. Then: missing, truncated, corrupt and foreign-model state files (thaw warns and
 * replays, both processes stay up), clone/delete refcounting of the shared state file, and slot eviction by
 * swapping an idle session out and back in.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { CwmClient } from '../../client/rpc-client.js';
import { swapFileName } from '../../daemon/backends/llamacpp/backend.js';
import { conversation } from '../helpers/conversation.js';
import { cwm, type DaemonHandle, startDaemon } from '../helpers/daemon.js';
import { ensureModel, getJson, type LlamaServer, metrics, postJson, startLlamaServer } from './harness.js';

const MODEL = 'tiny';
const STEPS = 16;
const TOP = 5;

type Msg = { role: string; content: string };
interface TopLogprob {
  id?: number;
  token: string;
  logprob: number;
}
interface ChatBody {
  choices: {
    message: { role: string; content: string };
    logprobs?: { content: (TopLogprob & { top_logprobs: TopLogprob[] })[] };
  }[];
  usage: { prompt_tokens: number; completion_tokens: number };
  timings: { cache_n: number; prompt_n: number; predicted_n: number };
  error?: { message: string };
}
type Json = Record<string, unknown>;

let server: LlamaServer;
let d: DaemonHandle;
let c: CwmClient;
let gw: string;
const daemonOpts = (engineUrl: string, dir?: string) => ({
  engineUrl,
  gateway: '127.0.0.1:0',
  ...(dir ? { dir } : {}),
  env: { CWM_ENGINE: 'llamacpp', CWM_SLOT_DIR: server.slotDir },
  config: { autoFreeze: { enabled: false } },
});

async function connect(handle: DaemonHandle): Promise<void> {
  d = handle;
  c = await d.client();
  const st = await c.call('daemon.status');
  assert.equal(st.engine.kind, 'llamacpp');
  gw = st.gateway?.url as string;
  assert.ok(gw, 'gateway listening');
}

async function chat(session: string | null, messages: Msg[], extra: Json = {}): Promise<ChatBody> {
  const res = await fetch(`${gw}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(session ? { 'x-cwm-session': session } : {}) },
    body: JSON.stringify({ model: MODEL, messages, max_tokens: 24, temperature: 0, ...extra }),
  });
  const body = (await res.json()) as ChatBody;
  assert.equal(res.status, 200, JSON.stringify(body));
  return body;
}

const oracleExtra = { max_tokens: STEPS, logprobs: true, top_logprobs: TOP };

async function waitFor<T>(what: string, fn: () => Promise<T | null>, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const v = await fn();
    if (v !== null) return v;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

const recorded = (id: string, turns: number) =>
  waitFor(`session ${id} to record turn ${turns}`, async () => {
    const s = await c.call('session.get', { session: id }).catch(() => null);
    return s && s.turns >= turns ? s : null;
  });

async function cli(args: string[]): Promise<Json> {
  const r = await cwm(d, ['--json', ...args]);
  assert.equal(r.code, 0, `cwm ${args.join(' ')}: ${r.stderr}${r.stdout}`);
  return JSON.parse(r.stdout) as Json;
}

const stateFile = (windowId: string) => path.join(server.slotDir, `${windowId}.bin`);
const sha256 = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');
const promptTokensTotal = async (url = server.url) => (await metrics(url)).get('llamacpp:prompt_tokens_total') ?? 0;

async function bothUp(): Promise<void> {
  const h = await getJson(`${server.url}/health`);
  assert.equal(h.status, 200, 'llama-server is up');
  assert.equal(d.proc.exitCode, null, 'cwmd is up');
  const st = await c.call('daemon.status');
  assert.equal(st.engine.kind, 'llamacpp');
}

/** Packed token list of a state file (ggsq v3 header). */
function fileTokens(file: string): number[] {
  const b = fs.readFileSync(file);
  const n = b.readInt32LE(20);
  return Array.from({ length: n }, (_, i) => b.readInt32LE(24 + 4 * i));
}

before(async () => {
  server = await startLlamaServer({ ctx: 4096, slots: 2, extraArgs: ['--alias', MODEL] });
  await connect(await startDaemon(daemonOpts(server.url)));
});

after(async () => {
  c?.close();
  await d?.stop();
  await server?.dispose();
  if (d && process.env.CWM_KEEP_TMP !== '1') fs.rmSync(d.dir, { recursive: true, force: true });
});

describe('llama.cpp backend: freeze/thaw through the daemon is lossless', () => {
  // ~700 tokens of history, then two live turns through the gateway.
  const history = conversation(300, 7, 60) as Msg[];
  let m2: Msg[] = [];
  let next: Msg[] = [];
  let windowTokens: number[] = [];
  let windowId = '';
  let warm: ChatBody;

  it('a conversation through the gateway stays in one slot and is recorded with the tokens the server evaluated', async () => {
    const m1 = [...history, { role: 'user', content: 'what is the context window of the model' }];
    const r1 = await chat('conv', m1);
    await recorded('conv', 1);
    m2 = [...m1, r1.choices[0]?.message as Msg, { role: 'user', content: 'and how does the cache save memory' }];
    const r2 = await chat('conv', m2);
    // The second turn reused all the first left in the slot (prompt + completion − 1): the session has its slot.
    assert.equal(r2.timings.cache_n, r1.usage.prompt_tokens + r1.usage.completion_tokens - 1);
    const s = await recorded('conv', 2);
    assert.equal(typeof s.slot, 'number', 'the session is bound to a slot');
    // The recorded context re-tokenizes to the slot's tokens plus the last sampled one.
    assert.equal(s.tokens, r2.usage.prompt_tokens + r2.usage.completion_tokens);
    next = [...m2, r2.choices[0]?.message as Msg, { role: 'user', content: 'thank you, now save the window' }];
  });

  it('cwm freeze saves the slot to <window-id>.bin, checksummed, holding exactly the window tokens', async () => {
    const before = await promptTokensTotal();
    const r = await cli(['freeze', 'conv', 'w1', '--tag', 'llama']);
    assert.deepEqual(r.warnings, []);
    assert.equal(r.pinned, true);
    // The slot already held every token but the last sampled one: freeze computed exactly one token.
    assert.equal((await promptTokensTotal()) - before, 1);
    const w = await c.call('window.get', { name: 'w1', tokens: true });
    windowId = w.id;
    windowTokens = w.tokenIds ?? [];
    assert.equal(windowTokens.length, w.tokens);
    const file = stateFile(w.id);
    assert.ok(w.stateFile, 'the window records its state file');
    assert.equal(w.stateFile.size, fs.statSync(file).size);
    assert.equal(w.stateFile.sha256, sha256(file));
    assert.deepEqual(fileTokens(file), windowTokens, 'the state file holds exactly the window tokens');
    assert.equal(w.residency, 'ready');
  });

  it('the thawed window continues bit for bit like the warm in-memory cache, after a llama-server restart', async () => {
    // Oracle: the next turn, warm, in the frozen session's own slot.
    warm = await chat('conv', next, oracleExtra);
    assert.equal(warm.timings.cache_n, windowTokens.length, 'the warm turn reused the whole window');
    assert.equal(warm.choices[0]?.logprobs?.content.length, STEPS);
    assert.equal(warm.choices[0]?.logprobs?.content[0]?.top_logprobs.length, TOP);

    await server.restart({ signal: 'SIGKILL' });
    const th = await cli(['thaw', 'w1', '--session', 'conv-thawed']);
    assert.deepEqual(th.warnings, []);
    assert.equal(th.cachedTokens, windowTokens.length);
    assert.equal(th.recomputedTokens, 0);
    assert.equal(th.residency, 'ready');
    const s = await c.call('session.get', { session: 'conv-thawed' });
    assert.equal(typeof s.slot, 'number');

    const before = await promptTokensTotal();
    const thawed = await chat('conv-thawed', next, oracleExtra);
    // Restored, not replayed: the server computed only the new turn's tokens.
    assert.equal((await promptTokensTotal()) - before, warm.timings.prompt_n);
    assert.equal(thawed.timings.cache_n, warm.timings.cache_n);
    assert.equal(thawed.timings.prompt_n, warm.timings.prompt_n);
    // Bit for bit: every token and every top-k logprob at every step.
    assert.deepEqual(thawed.choices[0]?.logprobs, warm.choices[0]?.logprobs);
    assert.equal(thawed.choices[0]?.message.content, warm.choices[0]?.message.content);
    await recorded('conv-thawed', 1);
  });

  it('the greedy tokens equal a cold recompute of the whole context', async () => {
    const cold = (
      await postJson<ChatBody>(`${server.url}/v1/chat/completions`, {
        messages: next,
        ...oracleExtra,
        temperature: 0,
        id_slot: 0,
        cache_prompt: false,
      })
    ).body;
    assert.equal(cold.timings.cache_n, 0, 'cold: nothing reused');
    const ids = (b: ChatBody) => b.choices[0]?.logprobs?.content.map((t) => t.id ?? t.token);
    assert.deepEqual(ids(cold), ids(warm));
    assert.equal(cold.choices[0]?.message.content, warm.choices[0]?.message.content);
  });

  it('clone shares the state file; it survives the parent delete and goes with the last reference', async () => {
    const cl = await cli(['clone', 'w1', 'w1-clone']);
    assert.equal(cl.pinned, true);
    assert.deepEqual(cl.stateFile, (await c.call('window.get', { name: 'w1' })).stateFile);
    await cli(['delete', 'w1', '--yes']);
    assert.ok(fs.existsSync(stateFile(windowId)), 'the clone still references the state file');
    const th = await cli(['thaw', 'w1-clone', '--session', 'conv-clone']);
    assert.deepEqual(th.warnings, []);
    assert.equal(th.cachedTokens, windowTokens.length);
    const r = await chat('conv-clone', next, oracleExtra);
    assert.deepEqual(r.choices[0]?.logprobs, warm.choices[0]?.logprobs, 'the clone thaws bit for bit too');
    const del = await cli(['delete', 'w1-clone', '--yes']);
    assert.deepEqual(del.warnings, []);
    assert.ok(!fs.existsSync(stateFile(windowId)), 'the last delete removed the state file');
  });

  describe('bad state files: thaw warns and replays the exact tokens; both processes stay up', () => {
    const damage: [string, (file: string) => void, RegExp][] = [
      ['missing', (f) => fs.rmSync(f), /missing/],
      ['truncated', (f) => fs.truncateSync(f, Math.floor(fs.statSync(f).size / 2)), /truncated/],
      [
        'corrupt',
        (f) => {
          const fd = fs.openSync(f, 'r+');
          const at = Math.floor(fs.statSync(f).size * 0.75);
          const b = Buffer.alloc(1);
          fs.readSync(fd, b, 0, 1, at);
          b[0] = (b[0] ?? 0) ^ 0xff;
          fs.writeSync(fd, b, 0, 1, at);
          fs.closeSync(fd);
        },
        /corrupt.*sha256/,
      ],
    ];
    for (const [kind, hurt, warning] of damage) {
      it(`${kind} state file`, async () => {
        const fr = await cli(['freeze', 'conv-thawed', `bad-${kind}`]);
        assert.equal(fr.pinned, true);
        const w = await c.call('window.get', { name: `bad-${kind}` });
        hurt(stateFile(w.id));
        const th = await cli(['thaw', `bad-${kind}`, '--session', `s-${kind}`]);
        const warnings = (th.warnings as string[]).join('\n');
        assert.match(warnings, warning);
        assert.match(warnings, /replayed the exact/);
        assert.equal(th.recomputedTokens, w.tokens);
        assert.equal(th.residency, 'lost');
        await bothUp();
        // Replayed, the slot holds the exact context: the oracle's prompt is all cached but the one token the
        // server always evaluates, and the greedy answer is the oracle's.
        const r = await chat(`s-${kind}`, next, oracleExtra);
        assert.equal(r.timings.prompt_n, 1);
        assert.equal(r.choices[0]?.message.content, warm.choices[0]?.message.content);
      });
    }

    it('foreign-model state file: the server refuses it, thaw replays, both stay up', async () => {
      await cli(['freeze', 'conv-thawed', 'bad-foreign']);
      const w = await c.call('window.get', { name: 'bad-foreign' });
      // The engine now runs a differently shaped model under the same name, on the same slot directory.
      const foreignModel = await ensureModel({ size: 'tiny', spec: { layers: 2 } });
      const foreign = await startLlamaServer({
        model: foreignModel,
        ctx: 4096,
        slots: 2,
        slotDir: server.slotDir,
        extraArgs: ['--alias', MODEL],
      });
      const home = d;
      try {
        c.close();
        await home.stop();
        await connect(await startDaemon(daemonOpts(foreign.url, home.dir)));
        const th = await cli(['thaw', 'bad-foreign', '--session', 's-foreign']);
        const warnings = (th.warnings as string[]).join('\n');
        assert.match(warnings, /refused state file .*same model/);
        assert.match(warnings, /replayed the exact/);
        assert.equal(th.recomputedTokens, w.tokens);
        assert.equal((await getJson(`${foreign.url}/health`)).status, 200, 'the foreign server is up');
        assert.equal(d.proc.exitCode, null, 'cwmd is up');
        assert.ok(fs.existsSync(stateFile(w.id)), 'a refused file is kept (it is fine for its own model)');
      } finally {
        c.close();
        await d.stop();
        await foreign.dispose();
        await connect(await startDaemon(daemonOpts(server.url, home.dir)));
      }
      // Back on the right model the same file restores.
      const th = await cli(['thaw', 'bad-foreign', '--session', 's-foreign-home']);
      assert.deepEqual(th.warnings, []);
      assert.equal(th.cachedTokens, w.tokens);
      await bothUp();
    });
  });

  it('with every slot taken, a thaw swaps the least recently used idle session out and back in losslessly', async () => {
    const short = (n: number): Msg[] => [{ role: 'user', content: `session ${n}: ${conversation(80, n)[1]?.content}` }];
    const a1 = await chat('ev-a', short(1));
    const b1 = await chat('ev-b', short(2));
    await recorded('ev-b', 1);
    const slots = await c.call('session.get', { session: 'ev-b' });
    assert.equal(typeof slots.slot, 'number');
    // Both slots are held by ev-a and ev-b; ev-a is the least recently used.
    const fr = await cli(['freeze', 'conv', 'ev-window']);
    assert.equal(fr.pinned, true);
    const th = await cli(['thaw', 'ev-window', '--session', 'ev-c']);
    assert.deepEqual(th.warnings, []);
    const swapped = (session: string) => fs.existsSync(path.join(server.slotDir, swapFileName(session)));
    assert.ok(swapped('ev-a') && swapped('ev-b'), 'ev-a and ev-b were swapped out to files');
    // ev-a and ev-b come back: each gets a slot again, its KV swapped back in from the swap file.
    const b2 = await chat('ev-b', [...short(2), b1.choices[0]?.message as Msg, { role: 'user', content: 'more' }]);
    // (Re-tokenizing a random model's reply text may split its last words differently, so at least the whole
    // first prompt is reused, not necessarily every reply token.)
    assert.ok(b2.timings.cache_n >= b1.usage.prompt_tokens, `ev-b kept its KV: cache_n ${b2.timings.cache_n}`);
    const a2 = await chat('ev-a', [...short(1), a1.choices[0]?.message as Msg, { role: 'user', content: 'more' }]);
    assert.ok(a2.timings.cache_n >= a1.usage.prompt_tokens, `ev-a kept its KV: cache_n ${a2.timings.cache_n}`);
    assert.ok(!swapped('ev-a') && !swapped('ev-b'), 'swap files are removed once restored');
    await bothUp();
  });
});
