import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import type { CwmClient } from '../../client/rpc-client.js';
import { SESSION_ID_RULE } from '../../daemon/protocol/index.js';
import { cwm, type DaemonHandle, startDaemon } from '../helpers/daemon.js';
import { waitFor } from '../helpers/wait.js';
import { type Simulator, startSimulator } from '../sim/index.js';

type Json = Record<string, unknown>;

/** The engine's per-request id and timestamp are the only bytes two identical requests may differ in. */
function normalize(body: string): string {
  return body.replace(/"id":"(chatcmpl|cmpl)-[0-9a-f]+"/g, '"id":"ID"').replace(/"created":\d+/g, '"created":0');
}

async function post(url: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

const words = (n: number, seed: number) =>
  Array.from(
    { length: n },
    (_, i) => ['alpha', 'river', 'stone', 'cloud', 'ember', 'maple', 'quartz'][(i * 7 + seed) % 7],
  ).join(' ');

describe('gateway: OpenAI passthrough with sessions', () => {
  let sim: Simulator;
  let d: DaemonHandle;
  let c: CwmClient;
  let gw: string;
  let model: string;
  const openai = (session: string | null, extra: Partial<ConstructorParameters<typeof OpenAI>[0]> = {}) =>
    new OpenAI({
      baseURL: `${gw}/v1`,
      apiKey: 'x',
      maxRetries: 0,
      ...(session ? { defaultHeaders: { 'X-CWM-Session': session } } : {}),
      ...extra,
    });
  const lastBody = (path = '/v1/chat/completions') => sim.requests(1, { path })[0]?.body as Json;
  const session = (id: string) => c.call('session.get', { session: id, messages: true });
  const recorded = (id: string, turns: number) =>
    waitFor(`session ${id} to record turn ${turns}`, async () => {
      const s = await session(id).catch(() => null);
      return s && s.turns >= turns ? s : null;
    });

  before(async () => {
    sim = await startSimulator({ decodeUsPerToken: 0, prefillUsPerToken: 0, loadUsPerToken: 0 });
    model = sim.options.model;
    d = await startDaemon({
      engineUrl: sim.url,
      gateway: '127.0.0.1:0',
      env: { CWM_LMCACHE_URL: sim.lmcacheUrl },
      config: { autoFreeze: { enabled: false }, pressure: { hostAvailableMin: 0, hostAvailableOk: 0.01 } },
    });
    c = await d.client();
    const st = await c.call('daemon.status');
    assert.ok(st.gateway?.listening);
    gw = st.gateway.url;
  });
  after(async () => {
    c?.close();
    await d?.stop();
    await sim?.close();
  });

  it('reports the bound address (port 0 resolved) in daemon.status', async () => {
    assert.match(gw, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.notEqual(gw, 'http://127.0.0.1:0');
  });

  it('chat, non-streaming: injects the session salt and records messages + reply + usage', async () => {
    const messages = [{ role: 'user' as const, content: 'Tell me about rivers.' }];
    const r = await openai('chat-a').chat.completions.create({ model, messages, max_tokens: 24 });
    const reply = r.choices[0]?.message.content ?? '';
    assert.ok(reply.length > 0);
    const sent = lastBody();
    assert.equal(typeof sent.cache_salt, 'string', 'top-level cache_salt injected');
    const { cache_salt: saltA, ...rest } = sent;
    assert.deepEqual(rest, { model, messages, max_tokens: 24 }, 'nothing else in the body changed');

    const s = await recorded('chat-a', 1);
    assert.equal(s.model, model);
    assert.equal(s.state, 'active');
    assert.equal(s.kind, 'chat');
    assert.deepEqual(s.messages, [...messages, { role: 'assistant', content: reply }]);
    assert.deepEqual(s.lastUsage, r.usage);
    const tok = (await post(`${sim.url}/tokenize`, { model, messages: s.messages, add_generation_prompt: false })).text;
    assert.equal(s.tokens, (JSON.parse(tok) as { count: number }).count, 'tokens = the engine tokenizer count');

    // the same session keeps its salt; another session gets another one; no session gets none
    await openai('chat-a').chat.completions.create({ model, messages, max_tokens: 4 });
    assert.equal(lastBody().cache_salt, saltA);
    await openai('chat-b').chat.completions.create({ model, messages, max_tokens: 4 });
    assert.notEqual(lastBody().cache_salt, saltA);
    await openai(null).chat.completions.create({ model, messages, max_tokens: 4 });
    assert.equal(lastBody().cache_salt, undefined);
  });

  it('chat, streaming: forces include_usage for the engine, strips it for the client, records usage', async () => {
    const messages = [{ role: 'user' as const, content: 'Stream a story.' }];
    const stream = await openai('chat-s').chat.completions.create({ model, messages, max_tokens: 30, stream: true });
    let text = '';
    let usageChunks = 0;
    for await (const ch of stream) {
      text += ch.choices[0]?.delta?.content ?? '';
      if (ch.usage) usageChunks++;
    }
    assert.equal(usageChunks, 0, 'the client did not ask for usage and saw none');
    const sent = lastBody();
    assert.deepEqual(sent.stream_options, { include_usage: true });
    const s = await recorded('chat-s', 1);
    assert.equal(s.lastUsage?.completion_tokens, 30);
    assert.deepEqual(s.messages?.at(-1), { role: 'assistant', content: text });

    // a client that asks for usage gets it
    const withUsage = await openai('chat-s').chat.completions.create({
      model,
      messages,
      max_tokens: 5,
      stream: true,
      stream_options: { include_usage: true },
    });
    let usage: unknown = null;
    for await (const ch of withUsage) if (ch.usage) usage = ch.usage;
    assert.ok(usage, 'usage chunk delivered when requested');
  });

  it('completions, streaming and not: records prompt + completion', async () => {
    const oa = openai('comp-1');
    const prompt = `Once upon a time ${words(20, 1)}`;
    const r = await oa.completions.create({ model, prompt, max_tokens: 12 });
    const text = r.choices[0]?.text ?? '';
    assert.equal(typeof lastBody('/v1/completions').cache_salt, 'string');
    let s = await recorded('comp-1', 1);
    assert.equal(s.kind, 'completion');
    assert.equal(s.prompt, prompt);
    const tok = JSON.parse((await post(`${sim.url}/tokenize`, { model, prompt: prompt + text })).text) as Json;
    assert.equal(s.tokens, tok.count);

    const st = await oa.completions.create({ model, prompt, max_tokens: 12, stream: true });
    let streamed = '';
    let usageSeen = false;
    for await (const ch of st) {
      streamed += ch.choices[0]?.text ?? '';
      if (ch.usage) usageSeen = true;
    }
    assert.equal(usageSeen, false);
    assert.equal(streamed, text, 'the deterministic engine answers the same');
    s = await recorded('comp-1', 2);
    assert.equal(s.lastUsage?.completion_tokens, 12);
  });

  it('streams byte-identically to the engine (no session; session with include_usage; session with the chunk stripped)', async () => {
    const body = {
      model,
      messages: [{ role: 'user', content: `Compare ${words(30, 2)}` }],
      max_tokens: 40,
      stream: true,
    };
    const withUsage = { ...body, stream_options: { include_usage: true } };
    const direct = async (b: unknown) => {
      sim.reset();
      return post(`${sim.url}/v1/chat/completions`, b);
    };
    const viaGw = async (b: unknown, headers: Record<string, string> = {}) => {
      sim.reset();
      return post(`${gw}/v1/chat/completions`, b, headers);
    };
    for (const b of [body, withUsage]) {
      const a = await direct(b);
      const g = await viaGw(b);
      assert.equal(g.status, 200);
      assert.equal(g.headers.get('content-type'), a.headers.get('content-type'));
      assert.equal(normalize(g.text), normalize(a.text), 'passthrough without a session');
      assert.ok(a.text.includes('data: [DONE]'));
    }
    // With a session and include_usage asked for: only the salt differs upstream, the client bytes are the engine's.
    const a = await direct(withUsage);
    const g = await viaGw(withUsage, { 'x-cwm-session': 'bytes-1' });
    assert.equal(normalize(g.text), normalize(a.text), 'session, client asked for usage');
    // With a session and no include_usage: the engine was asked for usage; the client gets the usage-less stream.
    const plain = await direct(body);
    const stripped = await viaGw(body, { 'x-cwm-session': 'bytes-1' });
    assert.ok(!plain.text.includes('"usage"'));
    assert.equal(normalize(stripped.text), normalize(plain.text), 'session, usage chunk stripped');
  });

  it('reads its own writes: a turn is in the session, and in a freeze, the moment its response has ended', async () => {
    // Turns are written behind (once the session is quiet); every reader flushes first, so no polling here.
    const messages = [{ role: 'user' as const, content: `Remember ${words(20, 5)}` }];
    const r1 = await openai('ryw').chat.completions.create({ model, messages, max_tokens: 6 });
    const turn2 = [
      ...messages,
      r1.choices[0]?.message ?? { role: 'assistant' },
      { role: 'user' as const, content: 'And?' },
    ];
    const r2 = await openai('ryw').chat.completions.create({ model, messages: turn2, max_tokens: 6 });
    const s = await session('ryw');
    assert.equal(s.turns, 2);
    assert.deepEqual(s.messages?.at(-1), { role: 'assistant', content: r2.choices[0]?.message.content });
    const listed = await c.call('session.list', {});
    assert.equal(listed.sessions.find((x) => x.id === 'ryw')?.turns, 2);
    // a brand-new session is counted the moment its first answer has ended
    const sessionsBefore = (await c.call('daemon.status')).counts.sessions;
    await openai('ryw-new').chat.completions.create({ model, messages, max_tokens: 2 });
    assert.equal((await c.call('daemon.status')).counts.sessions, sessionsBefore + 1);

    const r3 = await openai('ryw').chat.completions.create({
      model,
      messages: [
        ...turn2,
        r2.choices[0]?.message ?? { role: 'assistant' },
        { role: 'user' as const, content: 'More.' },
      ],
      max_tokens: 6,
    });
    const frozen = JSON.parse((await cwm(d, ['freeze', 'ryw', 'ryw-win', '--json'])).stdout) as { tokens: number };
    const all = [...turn2, r2.choices[0]?.message, { role: 'user', content: 'More.' }, r3.choices[0]?.message];
    const tok = (await post(`${sim.url}/tokenize`, { model, messages: all, add_generation_prompt: false })).text;
    assert.equal(frozen.tokens, (JSON.parse(tok) as { count: number }).count, 'the freeze holds the third turn');
    assert.equal((await session('ryw')).turns, 3);
  });

  it('non-streaming responses pass through byte for byte', async () => {
    const body = { model, prompt: 'The weather today', max_tokens: 10 };
    sim.reset();
    const a = await post(`${sim.url}/v1/completions`, body);
    sim.reset();
    const g = await post(`${gw}/v1/completions`, body, { 'x-cwm-session': 'bytes-2' });
    assert.equal(normalize(g.text), normalize(a.text));
  });

  it('streams as the engine generates (not buffered) and aborts the engine when the client goes away', async () => {
    sim.reset();
    // slow decoding for this test only: 300 tokens at 10 ms
    sim.state.options.decodeUsPerToken = 10_000;
    try {
      const res = await fetch(`${gw}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-cwm-session': 'abort-1' },
        body: JSON.stringify({
          model,
          messages: [{ role: 'user', content: 'long' }],
          max_tokens: 300,
          ignore_eos: true,
          stream: true,
        }),
      });
      const reader = (res.body as ReadableStream<Uint8Array>).getReader();
      const first = await reader.read();
      assert.ok(first.value && first.value.length > 0);
      assert.equal(sim.counters().running, 1, 'the first chunk arrived while the engine was still generating');
      await reader.cancel();
      const fin = await waitFor('the engine request to end', async () => {
        const f = sim.counters().finished;
        return f.abort + f.stop + f.length > 0 ? f : null;
      });
      assert.deepEqual(fin, { stop: 0, length: 0, abort: 1 }, 'the upstream request was aborted');
    } finally {
      sim.state.options.decodeUsPerToken = 0;
    }
    // an aborted stream is not recorded
    await assert.rejects(session('abort-1'), /no session/);
  });

  it('passes other endpoints through untouched, with or without a session', async () => {
    const models = (await openai('chat-a').models.list()).data;
    assert.equal(models[0]?.id, model);
    const health = await fetch(`${gw}/health`);
    assert.equal(health.status, 200);
    const tok = await post(`${gw}/s/chat-a/tokenize`, { model, prompt: 'hello world' });
    assert.equal(tok.status, 200);
    assert.deepEqual(sim.requests(1, { path: '/tokenize' })[0]?.body, { model, prompt: 'hello world' });
    // without a session the body goes as it came, client salt included
    const raw = `{"model":"${model}","prompt":"x","max_tokens":2,   "cache_salt":"client-salt"}`;
    const r = await post(`${gw}/v1/completions`, raw);
    assert.equal(r.status, 200);
    assert.equal((lastBody('/v1/completions') as Json).cache_salt, 'client-salt');
  });

  it('replaces a client cache_salt by default, and rejects it when gateway.clientSalt is "reject" (applied live)', async () => {
    await openai('salty').completions.create({ model, prompt: 'x', max_tokens: 2, cache_salt: 'mine' } as never);
    const used = lastBody('/v1/completions').cache_salt;
    assert.equal(typeof used, 'string');
    assert.notEqual(used, 'mine');

    fs.writeFileSync(
      d.configFile,
      JSON.stringify({
        autoFreeze: { enabled: false },
        pressure: { hostAvailableMin: 0, hostAvailableOk: 0.01 },
        gateway: { clientSalt: 'reject' },
      }),
    );
    await waitFor('clientSalt=reject to apply', async () => {
      const cfg = await c.call('config.show');
      return (cfg.config.gateway as Json).clientSalt === 'reject';
    });
    const r = await post(
      `${gw}/v1/completions`,
      { model, prompt: 'x', max_tokens: 2, cache_salt: 'mine' },
      {
        'x-cwm-session': 'salty',
      },
    );
    assert.equal(r.status, 400);
    const err = (JSON.parse(r.text) as { error: Json }).error;
    assert.equal(err.param, 'cache_salt');
    assert.match(String(err.message), /gateway\.clientSalt/);
    const cfg = await c.call('config.show');
    assert.deepEqual(cfg.pendingRestart, [], 'clientSalt needs no restart');
  });

  it('answers 400 naming the session rule for an invalid session id', async () => {
    for (const [url, headers] of [
      [`${gw}/v1/chat/completions`, { 'x-cwm-session': 'bad id!' }],
      [`${gw}/s/-bad/v1/chat/completions`, {}],
    ] as const) {
      const r = await post(url, { model, messages: [] }, headers);
      assert.equal(r.status, 400);
      const e = (JSON.parse(r.text) as { error: Json }).error;
      assert.equal(e.type, 'BadRequestError');
      assert.ok(String(e.message).includes(SESSION_ID_RULE), String(e.message));
    }
  });

  it('passes engine errors through as they are', async () => {
    const body = { model: 'no-such-model', prompt: 'x' };
    const a = await post(`${sim.url}/v1/completions`, body);
    const g = await post(`${gw}/v1/completions`, body, { 'x-cwm-session': 'err-1' });
    assert.equal(g.status, a.status);
    assert.equal(g.text, a.text);
    await assert.rejects(session('err-1'), /no session/, 'a failed request creates no session');
  });

  it('serves cwm_ metrics on /metrics', async () => {
    const text = await (await fetch(`${gw}/metrics`)).text();
    for (const name of [
      'cwm_windows ',
      'cwm_sessions{state="active"}',
      'cwm_operations_total{op="freeze",outcome="ok"}',
      'cwm_thaw_tokens_total{source="cache"}',
      'cwm_auto_freezes_total{reason="kv_pressure"}',
      'cwm_gateway_requests_total{route="chat",status="2xx"}',
      'cwm_gateway_duration_seconds_bucket',
      'cwm_rpc_duration_seconds_bucket',
      'cwm_gateway_records_total{outcome="ok"}',
      'cwm_engine_errors_total',
    ]) {
      assert.ok(text.includes(name), `missing ${name}`);
    }
    const active = /^cwm_sessions\{state="active"\} (\d+)/m.exec(text);
    assert.ok(Number(active?.[1]) >= 4, 'session gauge is fresh at scrape time');
  });
});

describe('gateway: auth, upstream failure, listen address', () => {
  const token = 'gateway-token-0123456789';
  let sim: Simulator;
  let d: DaemonHandle;
  let gw: string;

  before(async () => {
    sim = await startSimulator({ decodeUsPerToken: 0, prefillUsPerToken: 0 });
    d = await startDaemon({
      engineUrl: sim.url,
      gateway: '127.0.0.1:0',
      config: { gateway: { token }, autoFreeze: { enabled: false } },
    });
    const c = await d.client();
    gw = (await c.call('daemon.status')).gateway?.url as string;
    c.close();
  });
  after(async () => {
    await d?.stop();
    await sim?.close();
  });

  it('requires the bearer token when one is configured', async () => {
    const noToken = await fetch(`${gw}/v1/models`);
    assert.equal(noToken.status, 401);
    assert.equal(noToken.headers.get('www-authenticate'), 'Bearer');
    assert.equal(((await noToken.json()) as { error: Json }).error.type, 'AuthenticationError');
    const wrong = new OpenAI({ baseURL: `${gw}/v1`, apiKey: 'wrong-token', maxRetries: 0 });
    await assert.rejects(wrong.models.list(), (e: { status?: number }) => e.status === 401);
    assert.equal((await fetch(`${gw}/metrics`)).status, 401);

    const ok = new OpenAI({ baseURL: `${gw}/v1`, apiKey: token, maxRetries: 0 });
    const r = await ok.completions.create({ model: sim.options.model, prompt: 'hi', max_tokens: 2 });
    assert.ok(r.choices.length > 0);
    const m = await fetch(`${gw}/metrics`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(m.status, 200);
  });

  it('answers 502 naming the engine when the engine is down', async () => {
    const down = await startDaemon({ gateway: '127.0.0.1:0', config: { autoFreeze: { enabled: false } } });
    try {
      const c = await down.client();
      const url = (await c.call('daemon.status')).gateway?.url as string;
      c.close();
      for (const headers of [{}, { 'x-cwm-session': 'down-1' }]) {
        const r = await post(`${url}/v1/completions`, { model: 'm', prompt: 'x' }, headers);
        assert.equal(r.status, 502);
        const e = (JSON.parse(r.text) as { error: Json }).error;
        assert.equal(e.type, 'BadGatewayError');
        assert.ok(String(e.message).includes('http://127.0.0.1:9'), String(e.message));
      }
      const metrics = await (await fetch(`${url}/metrics`)).text();
      assert.match(metrics, /cwm_engine_errors_total\{code="ENGINE_UNAVAILABLE"\} [1-9]/);
    } finally {
      await down.stop();
    }
  });

  it('runs with the gateway down while its port is taken, and binds it once the port is free', async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
    const port = (blocker.address() as net.AddressInfo).port;
    const d2 = await startDaemon({ gateway: `127.0.0.1:${port}`, config: { autoFreeze: { enabled: false } } });
    try {
      const c = await d2.client();
      assert.deepEqual((await c.call('daemon.status')).gateway, { url: `http://127.0.0.1:${port}`, listening: false });
      const doctor = await cwm(d2, ['doctor']);
      assert.match(doctor.stdout, /FAIL {2}gateway: down/);
      await new Promise<void>((r) => blocker.close(() => r()));
      await waitFor('the gateway to bind', async () => (await c.call('daemon.status')).gateway?.listening, 15_000);
      assert.equal((await fetch(`http://127.0.0.1:${port}/metrics`)).status, 200);
      c.close();
    } finally {
      if (blocker.listening) blocker.close();
      await d2.stop();
    }
  });

  it('refuses a non-loopback listen address at start', async () => {
    await assert.rejects(startDaemon({ gateway: '0.0.0.0:0' }), (e: Error) => {
      assert.match(e.message, /not a loopback address/);
      return true;
    });
  });
});
