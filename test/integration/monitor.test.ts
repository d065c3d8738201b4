import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import { cwm, startDaemon } from '../helpers/daemon.js';
import { waitFor } from '../helpers/wait.js';
import { type Simulator, startSimulator } from '../sim/index.js';

type Json = Record<string, unknown>;
type Msg = { role: 'user' | 'assistant' | 'system'; content: string };

const VOCAB = ['alpha', 'river', 'stone', 'cloud', 'ember', 'maple', 'quartz', 'harbor', 'violet', 'summit'];
const words = (n: number, seed: number) =>
  Array.from({ length: n }, (_, i) => VOCAB[(i * 7 + seed * 3) % 10]).join(' ');

/** Everything one test daemon needs: the simulator, the daemon with its gateway, an RPC client. */
async function setup(config: Json, simOpts: Parameters<typeof startSimulator>[0] = {}) {
  const sim = await startSimulator({ decodeUsPerToken: 0, prefillUsPerToken: 0, loadUsPerToken: 0, ...simOpts });
  const d = await startDaemon({
    engineUrl: sim.url,
    gateway: '127.0.0.1:0',
    env: { CWM_LMCACHE_URL: sim.lmcacheUrl },
    config,
  });
  const c = await d.client();
  const gw = (await c.call('daemon.status')).gateway?.url as string;
  const openai = (session: string) =>
    new OpenAI({ baseURL: `${gw}/v1`, apiKey: 'x', maxRetries: 0, defaultHeaders: { 'X-CWM-Session': session } });
  /** Resolves after the monitor finished `n` more runs. */
  const runs = async (n: number) => {
    let last = (await c.call('autofreeze.get')).lastRunAt;
    for (let i = 0; i < n; i++) {
      last = await waitFor('a monitor run', async () => {
        const now = (await c.call('autofreeze.get')).lastRunAt;
        return now !== last ? now : null;
      });
    }
  };
  const windowsOf = async (session: string) =>
    (await c.call('window.list', { session, limit: 100 })).windows.filter((w) => w.tags.includes('auto'));
  const recorded = (id: string, turns: number) =>
    waitFor(`session ${id} turn ${turns}`, async () => {
      const s = await c.call('session.get', { session: id, messages: true }).catch(() => null);
      return s && s.turns >= turns ? s : null;
    });
  const close = async () => {
    c.close();
    await d.stop();
    await sim.close();
  };
  return { sim, d, c, gw, openai, runs, windowsOf, recorded, close };
}

async function engineTokens(sim: Simulator, messages: unknown[]): Promise<number> {
  const r = await fetch(`${sim.url}/tokenize`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: sim.options.model, messages, add_generation_prompt: false }),
  });
  return ((await r.json()) as { count: number }).count;
}

const quietHost = { hostAvailableMin: 0, hostAvailableOk: 0.01 };

describe('monitor: a conversation through the gateway, auto-frozen at the threshold, thawed, continued from cache', () => {
  let t: Awaited<ReturnType<typeof setup>>;
  before(async () => {
    t = await setup(
      { autoFreeze: { threshold: 0.5, intervalSeconds: 0.2, cooldownSeconds: 0 }, pressure: quietHost },
      { maxModelLen: 2048 },
    );
  });
  after(async () => t?.close());

  it('tracks every turn token-exactly, freezes once at the crossing, and the thawed session hits the cache', async () => {
    const { sim, c, openai } = t;
    const model = sim.options.model;
    const limit = 0.5 * 2048;
    const messages: Msg[] = [{ role: 'system', content: 'You are terse.' }];
    let tokens = 0;
    let turn = 0;
    let convSalt: unknown;
    while (tokens < limit) {
      turn++;
      messages.push({ role: 'user', content: `Turn ${turn}: ${words(110, turn)}` });
      const r = await openai('conv').chat.completions.create({ model, messages, max_tokens: 40 });
      messages.push({ role: 'assistant', content: r.choices[0]?.message.content ?? '' });
      convSalt ??= (sim.requests(1, { path: '/v1/chat/completions' })[0]?.body as Json | undefined)?.cache_salt;
      const s = await t.recorded('conv', turn);
      assert.deepEqual(s.messages, messages, `turn ${turn}: the exact conversation is recorded`);
      tokens = s.tokens;
      assert.equal(tokens, await engineTokens(sim, messages), `turn ${turn}: tokens = the engine's own count`);
      if (tokens < limit) assert.deepEqual(await t.windowsOf('conv'), [], 'nothing frozen below the threshold');
    }
    assert.ok(turn >= 3, 'the conversation took several turns to cross');

    const [w] = await waitFor('the automatic freeze', async () => {
      const ws = await t.windowsOf('conv');
      return ws.length > 0 ? ws : null;
    });
    assert.ok(w);
    assert.match(w.name, /^auto-conv-\d{8}T\d{6}$/);
    assert.ok(w.tags.includes('auto') && w.tags.includes('threshold'));
    assert.equal(w.tokens, tokens);
    assert.equal((await c.call('session.get', { session: 'conv' })).state, 'frozen');

    const audit = await c.call('audit.list', { action: 'autofreeze.freeze' });
    assert.equal(audit.events[0]?.target, w.name);
    assert.equal(audit.events[0]?.reason, 'threshold');
    assert.equal(audit.events[0]?.actor, 'monitor');
    const cli = await cwm(t.d, ['audit', '--action', 'autofreeze.freeze']);
    assert.equal(cli.code, 0);
    assert.ok(cli.stdout.includes(w.name) && cli.stdout.includes('threshold'), cli.stdout);
    const freezeAudit = await c.call('audit.list', { action: 'window.freeze' });
    assert.equal(freezeAudit.events[0]?.actor, 'monitor');

    // The session goes on growing above the threshold: no new crossing, no second freeze.
    messages.push({ role: 'user', content: `One more: ${words(40, 99)}` });
    const more = await openai('conv').chat.completions.create({ model, messages, max_tokens: 20 });
    messages.push({ role: 'assistant', content: more.choices[0]?.message.content ?? '' });
    await t.recorded('conv', turn + 1);
    await t.runs(3);
    assert.equal((await t.windowsOf('conv')).length, 1, 'once per crossing');
    const metrics = await (await fetch(`${t.gw}/metrics`)).text();
    assert.match(metrics, /^cwm_auto_freezes_total\{reason="threshold"\} 1$/m);

    // Thaw it with the CLI after the GPU cache is gone: the pinned LMCache copy brings it back.
    sim.evictGpu();
    const thaw = await cwm(t.d, ['thaw', w.name, '--session', 'conv2']);
    assert.equal(thaw.code, 0, thaw.stderr);
    const s2 = await c.call('session.get', { session: 'conv2', messages: true });
    assert.equal(s2.state, 'thawed');
    assert.equal(s2.tokens, w.tokens);

    const next = [...(s2.messages as Msg[]), { role: 'user' as const, content: 'And then?' }];
    const r = await openai('conv2').chat.completions.create({ model, messages: next, max_tokens: 16 });
    const usage = r.usage;
    assert.ok(usage?.prompt_tokens_details, 'the engine reports cached tokens');
    const cached = usage.prompt_tokens_details.cached_tokens ?? 0;
    assert.ok(cached / usage.prompt_tokens >= 0.9, `served mostly from cache: ${cached} of ${usage.prompt_tokens}`);
    const sent = sim.requests(1, { path: '/v1/chat/completions' })[0]?.body as Json;
    assert.equal(sent.cache_salt, convSalt, 'the thawed session continues under its lineage salt');
    const after2 = await t.recorded('conv2', 1);
    assert.equal(after2.state, 'active');
    assert.equal(after2.tokens, await engineTokens(sim, after2.messages ?? []));
  });
});

describe('monitor: live config', () => {
  let t: Awaited<ReturnType<typeof setup>>;
  const base = { autoFreeze: { threshold: 0.9, intervalSeconds: 0.2, cooldownSeconds: 0 }, pressure: quietHost };
  before(async () => {
    t = await setup(base, { maxModelLen: 2048 });
  });
  after(async () => t?.close());

  it('a threshold edit applies without a restart', async () => {
    const model = t.sim.options.model;
    await t.openai('live').chat.completions.create({
      model,
      messages: [{ role: 'user', content: words(420, 5) }],
      max_tokens: 16,
    });
    const s = await t.recorded('live', 1);
    assert.ok(s.tokens > 0.2 * 2048 && s.tokens < 0.9 * 2048, `${s.tokens}`);
    await t.runs(2);
    assert.deepEqual(await t.windowsOf('live'), []);

    fs.writeFileSync(t.d.configFile, JSON.stringify({ ...base, autoFreeze: { ...base.autoFreeze, threshold: 0.2 } }));
    await waitFor('the freeze under the new threshold', async () => (await t.windowsOf('live')).length === 1);
    const show = await cwm(t.d, ['autofreeze', 'show']);
    assert.match(show.stdout, /threshold:\s+0\.2 of max_model_len \(file\)/);
    assert.equal((await t.c.call('daemon.status')).pid, t.d.proc.pid, 'same daemon process');
  });

  it('an invalid edit is rejected, reported with the key, and the last good config stays', async () => {
    fs.writeFileSync(t.d.configFile, JSON.stringify({ ...base, autoFreeze: { ...base.autoFreeze, threshold: 5 } }));
    const cfg = await waitFor('the rejection', async () => {
      const r = await t.c.call('config.show');
      return r.lastError ? r : null;
    });
    assert.match(cfg.lastError ?? '', /autoFreeze\.threshold/);
    assert.equal((await t.c.call('autofreeze.get')).policy.threshold, 0.2, 'still the last good value');
    const show = await cwm(t.d, ['config', 'show']);
    assert.match(show.stdout, /last config error \(still using the previous config\): .*autoFreeze\.threshold/);
    const doctor = await cwm(t.d, ['doctor']);
    assert.equal(doctor.code, 1);
    assert.match(doctor.stdout, /FAIL {2}config \(daemon\): .*autoFreeze\.threshold/);
    assert.match(doctor.stdout, /fix: fix the named key/);
    const audit = await t.c.call('audit.list', { action: 'config.reload' });
    assert.equal(audit.events[0]?.outcome, 'error');
    const logLine = fs
      .readFileSync(t.d.logFile, 'utf8')
      .split('\n')
      .find((l) => l.includes('config change rejected'));
    assert.match(logLine ?? '', /autoFreeze\.threshold/, 'the log names the key');
  });

  it('a change that needs a restart says so; policy keys do not', async () => {
    fs.writeFileSync(
      t.d.configFile,
      JSON.stringify({ ...base, autoFreeze: { ...base.autoFreeze, threshold: 0.3 }, engine: { timeoutMs: 5000 } }),
    );
    const cfg = await waitFor('the reload', async () => {
      const r = await t.c.call('config.show');
      return r.lastError === null && (r.config.autoFreeze as Json).threshold === 0.3 ? r : null;
    });
    assert.deepEqual(cfg.pendingRestart, ['engine.timeoutMs']);
    const show = await cwm(t.d, ['config', 'show']);
    assert.match(show.stdout, /applies after a restart: engine\.timeoutMs/);
    assert.match(fs.readFileSync(t.d.logFile, 'utf8'), /engine\.timeoutMs.*these keys apply after a restart/);
  });

  it('a new interval re-arms the loop at once', async () => {
    let r = await cwm(t.d, ['autofreeze', 'set', '--interval', '3600']);
    assert.equal(r.code, 0, r.stderr);
    r = await cwm(t.d, ['autofreeze', 'set', '--interval', '0.2']);
    assert.equal(r.code, 0, r.stderr);
    // Without re-arming, the next run would be an hour away.
    await t.runs(2);
  });
});

describe('monitor: KV pressure', () => {
  let t: Awaited<ReturnType<typeof setup>>;
  const ids = ['p1', 'p2', 'p3', 'p4', 'p5', 'p6'];
  before(async () => {
    t = await setup({
      autoFreeze: { threshold: 1, intervalSeconds: 0.2, cooldownSeconds: 0 },
      pressure: { kvHigh: 0.9, kvLow: 0.75, idleSeconds: 0, maxFreezesPerRun: 1, ...quietHost },
    });
  });
  after(async () => t?.close());

  const frozen = async () => {
    const out: string[] = [];
    for (const id of ids) if ((await t.windowsOf(id)).some((w) => w.tags.includes('kv_pressure'))) out.push(id);
    return out;
  };

  it('freezes idle sessions least recently used first and stops under the low watermark', async () => {
    const model = t.sim.options.model;
    for (const [i, id] of ids.entries()) {
      await t.openai(id).chat.completions.create({
        model,
        messages: [{ role: 'user', content: words(30, i) }],
        max_tokens: 8,
      });
      await t.recorded(id, 1);
    }
    await t.runs(1);
    assert.deepEqual(await frozen(), [], 'no pressure, no freezes');

    t.sim.setKvUsage(0.95);
    await waitFor('p1 frozen', async () => (await frozen()).includes('p1'));
    const st = await cwm(t.d, ['autofreeze', 'show']);
    assert.match(st.stdout, /under pressure:\s+yes/);
    assert.match(st.stdout, /kv usage:\s+95\.0%/);
    // Between the watermarks the episode goes on (hysteresis)...
    t.sim.setKvUsage(0.8);
    await waitFor('p2 frozen', async () => (await frozen()).includes('p2'));
    // ...and under the low watermark it ends.
    t.sim.setKvUsage(0.5);
    await waitFor('pressure over', async () => !(await t.c.call('autofreeze.get')).pressure.underPressure);
    const done = await frozen();
    await t.runs(3);
    assert.deepEqual(await frozen(), done, 'no freezes after the episode');
    assert.deepEqual(done, ids.slice(0, done.length), `least recently used first: ${done}`);
    assert.ok(done.length >= 2 && done.length < ids.length, `stopped early: ${done}`);

    const events = (await t.c.call('audit.list', { action: 'autofreeze.pressure' })).events;
    assert.deepEqual(
      events.map((e) => [e.reason, e.details.state]),
      [
        ['kv_pressure', 'leave'],
        ['kv_pressure', 'enter'],
      ],
    );
    const freezes = (await t.c.call('audit.list', { action: 'autofreeze.freeze' })).events;
    assert.equal(freezes.length, done.length);
    assert.ok(freezes.every((e) => e.reason === 'kv_pressure' && e.outcome === 'ok'));
    const metrics = await (await fetch(`${t.gw}/metrics`)).text();
    assert.match(metrics, new RegExp(`^cwm_auto_freezes_total\\{reason="kv_pressure"\\} ${done.length}$`, 'm'));
    assert.match(metrics, /^cwm_under_pressure\{reason="kv_pressure"\} 0$/m);
  });

  it('keeps running while the engine fails', async () => {
    const before = await (await fetch(`${t.gw}/metrics`)).text();
    const errs = (text: string) =>
      [...text.matchAll(/^cwm_engine_errors_total\{[^}]*\} (\d+)/gm)].reduce((a, m) => a + Number(m[1]), 0);
    t.sim.setFaults({ mode: 'down' });
    try {
      await t.runs(2);
      const during = await (await fetch(`${t.gw}/metrics`)).text();
      assert.ok(errs(during) > errs(before), 'engine errors are counted');
      assert.equal((await t.c.call('autofreeze.get')).pressure.kvUsage, null);
    } finally {
      t.sim.setFaults({ mode: 'none' });
    }
    await waitFor('kv usage readable again', async () => (await t.c.call('autofreeze.get')).pressure.kvUsage !== null);
    assert.equal(t.d.proc.exitCode, null, 'the daemon is still running');
  });
});
