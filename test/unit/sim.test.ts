import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, beforeEach, describe, it } from 'node:test';
import { createHasher } from '../sim/hash.js';
import {
  BOS_ID,
  decode,
  EOT_ID,
  encode,
  encodeWithSpecial,
  renderChat,
  type Simulator,
  startSimulator,
} from '../sim/index.js';

type Json = Record<string, unknown>;

interface HttpResult {
  status: number;
  body: Json;
  text: string;
}

async function call(base: string, path: string, body?: unknown, method?: string): Promise<HttpResult> {
  const init: RequestInit = { method: method ?? (body === undefined ? 'GET' : 'POST') };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = { 'content-type': 'application/json' };
  }
  const res = await fetch(base + path, init);
  const text = await res.text();
  let parsed: Json = {};
  if (text.length > 0 && (res.headers.get('content-type') ?? '').includes('json')) parsed = JSON.parse(text) as Json;
  return { status: res.status, body: parsed, text };
}

function obj(v: unknown): Json {
  assert.ok(typeof v === 'object' && v !== null && !Array.isArray(v), `expected an object, got ${JSON.stringify(v)}`);
  return v as Json;
}

function arr(v: unknown): unknown[] {
  assert.ok(Array.isArray(v), `expected an array, got ${JSON.stringify(v)}`);
  return v;
}

function cachedTokens(r: HttpResult): number {
  const usage = obj(r.body.usage);
  const details = obj(usage.prompt_tokens_details);
  return details.cached_tokens as number;
}

/** Deterministic pseudo-random token ids (no special tokens). */
function ids(n: number, seed: number): number[] {
  const out: number[] = [];
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out.push(300 + (x % 100000));
  }
  return out;
}

async function complete(sim: Simulator, prompt: number[] | string, extra: Json = {}): Promise<HttpResult> {
  return call(sim.url, '/v1/completions', { model: sim.options.model, prompt, max_tokens: 1, ...extra });
}

function errorMessage(r: HttpResult): string {
  return obj(r.body.error).message as string;
}

async function sse(
  base: string,
  path: string,
  body: unknown,
): Promise<{ status: number; events: Json[]; done: boolean; error: boolean }> {
  const events: Json[] = [];
  let done = false;
  let error = false;
  let status = 0;
  try {
    const res = await fetch(base + path, {
      method: 'POST',
      body: JSON.stringify(body),
      headers: { 'content-type': 'application/json' },
    });
    status = res.status;
    const text = await res.text();
    for (const block of text.split('\n\n')) {
      if (!block.startsWith('data: ')) continue;
      const data = block.slice(6);
      if (data === '[DONE]') done = true;
      else events.push(JSON.parse(data) as Json);
    }
  } catch {
    error = true;
  }
  return { status, events, done, error };
}

async function metricValue(sim: Simulator, name: string): Promise<number> {
  const m = await call(sim.url, '/metrics');
  const line = m.text.split('\n').find((l) => l.startsWith(`${name}{`));
  assert.ok(line !== undefined, `metric ${name} missing`);
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

describe('sim tokenizer and chat template', () => {
  it('is deterministic with stable ids and atomic special tokens', () => {
    const s = 'Explain the significance of KV cache in language models.';
    const a = encodeWithSpecial(s, true);
    assert.deepEqual(a, encodeWithSpecial(s, true));
    assert.equal(a[0], BOS_ID);
    // ids are part of the contract (same in every process): pin a few
    assert.deepEqual(encode(' the cache'), [33402, 114225]);
    assert.deepEqual(encode('<|eot_id|>'), [EOT_ID]);
    assert.ok(encode('hello world again').length <= 4, 'about one token per short word');
  });

  it('round-trips any string (byte fallback, lone surrogates, special text)', () => {
    const samples = [
      '',
      'plain words and 12345 numbers',
      '  indented\n\n\tcode\r\n',
      'naïve café 日本語 😀',
      'lone \ud800 surrogate \udc00',
      '<|start_header_id|>x<|end_header_id|> <|nope|> <|',
    ];
    let seed = 7;
    for (let k = 0; k < 300; k++) {
      let s = '';
      for (let i = 0; i < 30; i++) {
        seed = (seed * 1103515245 + 12345) >>> 0;
        s += String.fromCharCode(seed % 3 === 0 ? seed % 65536 : 32 + (seed % 95));
      }
      samples.push(s);
    }
    for (const s of samples) assert.equal(decode(encode(s)), s);
  });

  it('renders a prefix-stable chat template', () => {
    const msgs = [
      { role: 'system', content: 'You are terse.' },
      { role: 'user', content: 'Hello there' },
    ];
    const base = renderChat(msgs, { addGenerationPrompt: false, continueFinalMessage: false });
    const withGen = renderChat(msgs, { addGenerationPrompt: true, continueFinalMessage: false });
    const next = renderChat([...msgs, { role: 'assistant', content: 'Hi.' }], {
      addGenerationPrompt: false,
      continueFinalMessage: false,
    });
    assert.deepEqual(withGen.slice(0, base.length), base);
    assert.deepEqual(next.slice(0, base.length), base);
    assert.ok(withGen.length > base.length && next.length > base.length);
  });
});

describe('sim vLLM endpoints', () => {
  let sim: Simulator;
  before(async () => {
    sim = await startSimulator({ maxModelLen: 4096 });
  });
  after(async () => {
    await sim.close();
  });
  beforeEach(() => sim.reset());

  it('serves /health, /version and /v1/models', async () => {
    const h = await call(sim.url, '/health');
    assert.equal(h.status, 200);
    assert.equal(h.text, '');
    assert.deepEqual((await call(sim.url, '/version')).body, { version: '0.12.0' });
    const models = await call(sim.url, '/v1/models');
    const card = obj(arr(models.body.data)[0]);
    assert.equal(card.id, 'sim/llama-3-8b-instruct');
    assert.equal(card.max_model_len, 4096);
    assert.equal(card.owned_by, 'vllm');
  });

  it('tokenizes prompt and chat forms, and rejects overflow', async () => {
    const p = await call(sim.url, '/tokenize', { prompt: 'Hello world', return_token_strs: true });
    assert.equal(p.status, 200);
    assert.deepEqual(p.body.tokens, encodeWithSpecial('Hello world', true));
    assert.equal(p.body.count, (p.body.tokens as number[]).length);
    assert.equal(p.body.max_model_len, 4096);
    assert.deepEqual(p.body.token_strs, ['<|begin_of_text|>', 'Hel', 'lo', ' world']);
    const noSpecial = await call(sim.url, '/tokenize', { prompt: 'Hello world', add_special_tokens: false });
    assert.equal(noSpecial.body.token_strs, null);
    assert.deepEqual(noSpecial.body.tokens, encode('Hello world'));

    const messages = [{ role: 'user', content: 'Hi' }];
    const c0 = await call(sim.url, '/tokenize', { messages, add_generation_prompt: false });
    const c1 = await call(sim.url, '/tokenize', { messages });
    const c2 = await call(sim.url, '/tokenize', {
      messages: [...messages, { role: 'assistant', content: 'Hello!' }, { role: 'user', content: 'More' }],
      add_generation_prompt: false,
    });
    const t0 = c0.body.tokens as number[];
    assert.deepEqual((c1.body.tokens as number[]).slice(0, t0.length), t0);
    assert.deepEqual((c2.body.tokens as number[]).slice(0, t0.length), t0);
    assert.deepEqual(c1.body.tokens, renderChat(messages, { addGenerationPrompt: true, continueFinalMessage: false }));

    const both = await call(sim.url, '/tokenize', {
      messages,
      add_generation_prompt: true,
      continue_final_message: true,
    });
    assert.equal(both.status, 400);
    assert.match(errorMessage(both), /continue_final_message/);

    const over = await call(sim.url, '/tokenize', { prompt: 'word '.repeat(5000) });
    assert.equal(over.status, 400);
    assert.match(errorMessage(over), /maximum context length/);
    const d = await call(sim.url, '/detokenize', { tokens: encode('round trip') });
    assert.deepEqual(d.body, { prompt: 'round trip' });
  });

  it('completes token-id prompts deterministically with vLLM usage fields', async () => {
    const prompt = ids(40, 1);
    const a = await complete(sim, prompt, { max_tokens: 5 });
    const b = await complete(sim, prompt, { max_tokens: 5 });
    assert.equal(a.status, 200);
    assert.equal(a.body.object, 'text_completion');
    assert.match(a.body.id as string, /^cmpl-/);
    const ca = obj(arr(a.body.choices)[0]);
    assert.equal(ca.finish_reason, 'length');
    assert.equal(ca.text, obj(arr(b.body.choices)[0]).text);
    assert.ok((ca.text as string).length > 0);
    const usage = obj(a.body.usage);
    assert.equal(usage.prompt_tokens, 40);
    assert.equal(usage.completion_tokens, 5);
    assert.equal(usage.total_tokens, 45);
    assert.deepEqual(obj(b.body.usage).prompt_tokens_details, { cached_tokens: 32 });

    const chat = await call(sim.url, '/v1/chat/completions', {
      messages: [{ role: 'user', content: 'Say something' }],
      max_completion_tokens: 200,
    });
    const choice = obj(arr(chat.body.choices)[0]);
    assert.equal(chat.body.object, 'chat.completion');
    assert.equal(choice.finish_reason, 'stop');
    assert.equal(obj(choice.message).role, 'assistant');
    const done = obj(chat.body.usage).completion_tokens as number;
    assert.ok(done >= 16 && done < 80);
  });

  it('validates requests with vLLM messages and error shape', async () => {
    const empty = await complete(sim, ids(10, 2), { cache_salt: '' });
    assert.equal(empty.status, 400);
    assert.deepEqual(empty.body, {
      error: {
        message: "Parameter 'cache_salt' must be a non-empty string if provided.",
        type: 'BadRequestError',
        param: 'cache_salt',
        code: 400,
      },
    });
    const rule = "Parameter 'cache_salt' must be at most 128 characters and must not contain '@', '/', '\\', or NUL.";
    for (const salt of ['a@b', 'a/b', 'a\\b', 'a\u0000b', 'x'.repeat(129)]) {
      const r = await complete(sim, ids(10, 2), { cache_salt: salt });
      assert.equal(r.status, 400);
      assert.equal(errorMessage(r), rule);
    }
    assert.equal((await complete(sim, ids(10, 2), { cache_salt: 'x'.repeat(128) })).status, 200);

    const so = await complete(sim, ids(10, 2), { stream_options: { include_usage: true } });
    assert.equal(so.status, 400);
    assert.equal(errorMessage(so), 'Stream options can only be defined when `stream=True`.');
    const plp = await complete(sim, ids(10, 2), { stream: true, prompt_logprobs: 1 });
    assert.equal(plp.status, 400);
    assert.equal(errorMessage(plp), '`prompt_logprobs` are not available when `stream=True`.');
    assert.equal((await complete(sim, [])).status, 400);
    assert.equal((await complete(sim, '')).status, 400);
    const over = await complete(sim, ids(4090, 3), { max_tokens: 16 });
    assert.equal(over.status, 400);
    assert.match(errorMessage(over), /maximum context length is 4096 tokens/);
    const badModel = await complete(sim, ids(10, 2), { model: 'other' });
    assert.equal(badModel.status, 404);
    const extra = await complete(sim, ids(10, 2), { some_unknown_field: { a: 1 }, temperature: 0.7 });
    assert.equal(extra.status, 200);
  });

  it('hits the local prefix cache in whole blocks, capped at floor((n-1)/16)*16', async () => {
    for (const [n, expected] of [
      [100, 96],
      [97, 96],
      [96, 80],
      [17, 16],
      [16, 0],
    ] as const) {
      const prompt = ids(n, 1000 + n);
      assert.equal(cachedTokens(await complete(sim, prompt)), 0);
      assert.equal(cachedTokens(await complete(sim, prompt)), expected, `n=${n}`);
    }
    // a longer prompt sharing a 64-token prefix hits exactly those 4 blocks
    const base = ids(64, 5);
    await complete(sim, base);
    assert.equal(cachedTokens(await complete(sim, [...base, ...ids(50, 6)])), 64);
    const c = sim.counters();
    assert.equal(c.externalHitTokens, 0, 'prompts < 256 tokens never hit LMCache');
  });

  it('caches generated blocks, so the next chat turn hits prompt + reply', async () => {
    const m1 = [
      { role: 'system', content: 'You are a helpful assistant. '.repeat(8) },
      { role: 'user', content: 'Tell me about the river and the light.' },
    ];
    const r1 = await call(sim.url, '/v1/chat/completions', { messages: m1, max_tokens: 40, cache_salt: 'chat' });
    const p1 = obj(r1.body.usage).prompt_tokens as number;
    const g = obj(r1.body.usage).completion_tokens as number;
    const reply = obj(obj(arr(r1.body.choices)[0]).message).content as string;
    const m2 = [...m1, { role: 'assistant', content: reply }, { role: 'user', content: 'And then?' }];
    const p2 = renderChat(m2, { addGenerationPrompt: true, continueFinalMessage: false }).length;
    const r2 = await call(sim.url, '/v1/chat/completions', { messages: m2, max_tokens: 1, cache_salt: 'chat' });
    assert.equal(obj(r2.body.usage).prompt_tokens, p2);
    const expected = Math.floor(Math.min(p1 + g - 1, p2 - 1) / 16) * 16;
    assert.ok(expected > p1 - 16, 'the reply blocks must count');
    assert.equal(cachedTokens(r2), expected);
  });

  it('supports n > 1 and echo', async () => {
    const prompt = ids(24, 77);
    const r = await complete(sim, prompt, { max_tokens: 3, n: 2, echo: true });
    const choices = arr(r.body.choices).map(obj);
    assert.equal(choices.length, 2);
    const echoed = decode(prompt);
    assert.ok(choices.every((c) => (c.text as string).startsWith(echoed)));
    assert.notEqual(choices[0]?.text, choices[1]?.text);
    assert.equal(obj(r.body.usage).completion_tokens, 6);
  });

  it('isolates cache_salt namespaces', async () => {
    const prompt = ids(200, 9);
    await complete(sim, prompt, { cache_salt: 'alpha' });
    assert.equal(cachedTokens(await complete(sim, prompt, { cache_salt: 'beta' })), 0);
    assert.equal(cachedTokens(await complete(sim, prompt)), 0);
    assert.equal(cachedTokens(await complete(sim, prompt, { cache_salt: 'alpha' })), 192);
  });

  it('reloads evicted GPU blocks from LMCache in whole 256-token chunks', async () => {
    const prompt = ids(600, 11);
    await complete(sim, prompt, { cache_salt: 's1' });
    assert.equal(sim.counters().lmcache.cpuChunks, 2, 'two full chunks stored, the 88-token tail is not');
    const ev = await call(sim.url, '/admin/evict-gpu', {});
    assert.ok((obj(ev.body).evictedBlocks as number) >= 37);
    const r = await complete(sim, prompt, { cache_salt: 's1' });
    assert.equal(cachedTokens(r), 512);
    let c = sim.counters();
    assert.equal(c.last?.localHitTokens, 0);
    assert.equal(c.last?.externalHitTokens, 512);
    assert.equal(c.last?.computedTokens, 88);
    // blocks are back on the GPU: next time it is a local hit
    assert.equal(cachedTokens(await complete(sim, prompt, { cache_salt: 's1' })), 592);
    // other salt: nothing in LMCache either
    await call(sim.url, '/admin/evict-gpu', {});
    assert.equal(cachedTokens(await complete(sim, prompt, { cache_salt: 's2' })), 0);
    // a prompt that is exactly whole chunks: the full-prompt hit is reported as n-1
    const exact = ids(512, 12);
    await complete(sim, exact);
    await call(sim.url, '/admin/evict-gpu', {});
    assert.equal(cachedTokens(await complete(sim, exact)), 511);
    c = sim.counters();
    assert.equal(c.externalHitTokens, 512 + 511);
    assert.equal(await metricValue(sim, 'vllm:external_prefix_cache_hits_total'), 512 + 511);
    assert.equal(await metricValue(sim, 'lmcache:num_hit_tokens_total'), 512 + 511);
  });

  it('skips prefix-cache reads for prompt_logprobs requests', async () => {
    const prompt = ids(300, 13);
    await complete(sim, prompt);
    const q0 = await metricValue(sim, 'vllm:prefix_cache_queries_total');
    const r = await complete(sim, prompt, { prompt_logprobs: 0 });
    assert.equal(cachedTokens(r), 0);
    assert.equal(await metricValue(sim, 'vllm:prefix_cache_queries_total'), q0);
    assert.equal(sim.counters().last?.skippedPrefixRead, true);
    const plp = arr(obj(arr(r.body.choices)[0]).prompt_logprobs);
    assert.equal(plp.length, 300);
    assert.equal(plp[0], null);
    assert.equal(cachedTokens(await complete(sim, prompt)), 288);
  });

  it('streams SSE with one chunk per token, with and without include_usage', async () => {
    const body = { prompt: ids(30, 14), max_tokens: 6, stream: true };
    const plain = await sse(sim.url, '/v1/completions', body);
    assert.equal(plain.status, 200);
    assert.ok(plain.done);
    assert.equal(plain.events.length, 6);
    assert.equal(obj(arr(plain.events[5]?.choices)[0]).finish_reason, 'length');
    assert.ok(plain.events.every((e) => e.usage === undefined));

    const withUsage = await sse(sim.url, '/v1/completions', { ...body, stream_options: { include_usage: true } });
    assert.equal(withUsage.events.length, 7);
    const last = withUsage.events[6] as Json;
    assert.deepEqual(last.choices, []);
    assert.equal(obj(last.usage).completion_tokens, 6);
    const text = plain.events.map((e) => obj(arr(e.choices)[0]).text as string).join('');
    const full = await complete(sim, body.prompt, { max_tokens: 6 });
    assert.equal(text, obj(arr(full.body.choices)[0]).text);

    // vllm-0.12: stream_options without include_usage ⇒ no usage chunk
    const noKey = await sse(sim.url, '/v1/completions', { ...body, stream_options: { continuous_usage_stats: false } });
    assert.equal(noKey.events.length, 6);

    const chat = await sse(sim.url, '/v1/chat/completions', {
      messages: [{ role: 'user', content: 'stream please' }],
      max_tokens: 4,
      stream: true,
      stream_options: { include_usage: true },
    });
    assert.equal(chat.events.length, 1 + 4 + 1);
    assert.deepEqual(obj(arr(chat.events[0]?.choices)[0]).delta, { role: 'assistant', content: '' });
    assert.equal(chat.events[1]?.object, 'chat.completion.chunk');
    assert.deepEqual(chat.events[5]?.choices, []);
  });

  it('exposes vLLM and LMCache metrics with real names', async () => {
    await complete(sim, ids(300, 15));
    const m = (await call(sim.url, '/metrics')).text;
    const label = 'engine="0",model_name="sim/llama-3-8b-instruct"';
    assert.match(m, /# TYPE vllm:kv_cache_usage_perc gauge/);
    assert.match(m, new RegExp(`vllm:prefix_cache_queries_total\\{${label}\\} 300\\.0`));
    assert.match(m, /# TYPE vllm:prefix_cache_hits_total counter/);
    assert.match(m, new RegExp(`vllm:external_prefix_cache_queries_total\\{${label}\\} 300\\.0`));
    assert.match(m, new RegExp(`vllm:prompt_tokens_total\\{${label}\\} 300\\.0`));
    assert.match(m, new RegExp(`vllm:generation_tokens_total\\{${label}\\} 1\\.0`));
    assert.match(m, /vllm:request_success_total\{engine="0",finished_reason="length",model_name="[^"]+"\} 1\.0/);
    assert.match(m, /vllm:cache_config_info\{[^}]*block_size="16"[^}]*num_gpu_blocks="4096"/);
    assert.match(m, /vllm:time_to_first_token_seconds_bucket\{engine="0",le="\+Inf",model_name="[^"]+"\} 1\.0/);
    assert.match(m, /vllm:e2e_request_latency_seconds_count\{/);
    assert.match(m, /lmcache:num_store_requests_total\{model_name="[^"]+",worker_id="0"\} 1\.0/);
    assert.match(m, /lmcache:local_cache_usage\{model_name="[^"]+",worker_id="0"\} 33554432\.0/);
    assert.match(m, /lmcache:pinned_memory_objs_count\{/);
    assert.doesNotMatch(m, /gpu_cache_usage_perc|gpu_prefix_cache/);

    await call(sim.url, '/admin/kv-usage', { value: 0.93 });
    assert.equal(await metricValue(sim, 'vllm:kv_cache_usage_perc'), 0.93);
    await call(sim.url, '/admin/kv-usage', { value: null });
    assert.equal(await metricValue(sim, 'vllm:kv_cache_usage_perc'), 0);
  });

  it('logs request bodies for /admin/requests', async () => {
    const prompt = ids(20, 16);
    await complete(sim, prompt, { cache_salt: 'salt-1' });
    const r = await call(sim.url, '/admin/requests?limit=1');
    const entries = r.body as unknown as Json[];
    assert.equal(entries.length, 1);
    const entry = obj(entries[0]);
    assert.equal(entry.path, '/v1/completions');
    assert.equal(typeof entry.time, 'number');
    assert.deepEqual(obj(entry.body).prompt, prompt);
    assert.equal(obj(entry.body).cache_salt, 'salt-1');
    assert.equal(obj(entry.body).max_tokens, 1);
  });
});

describe('sim profile vllm-0.10', () => {
  let sim: Simulator;
  before(async () => {
    sim = await startSimulator({ profile: 'vllm-0.10', promptTokensDetails: true });
  });
  after(async () => {
    await sim.close();
  });

  it('uses the old metric names and defaults', async () => {
    const r = await complete(sim, ids(40, 17), { cache_salt: 'a@b' });
    assert.equal(r.status, 200, 'only the non-empty salt rule applies');
    assert.equal(obj(r.body.usage).prompt_tokens_details, null, 'old servers omit a zero hit');
    const m = (await call(sim.url, '/metrics')).text;
    assert.match(m, /# TYPE vllm:gpu_cache_usage_perc gauge/);
    assert.match(m, /vllm:gpu_prefix_cache_queries_total\{engine="0",model_name="[^"]+"\} 40\.0/);
    assert.match(m, /vllm:gpu_prefix_cache_hits_total\{/);
    assert.doesNotMatch(m, /vllm:kv_cache_usage_perc|vllm:prefix_cache_queries|external_prefix_cache/);
    assert.deepEqual((await call(sim.url, '/version')).body, { version: '0.10.2' });
    const s = await sse(sim.url, '/v1/completions', {
      prompt: ids(20, 18),
      max_tokens: 3,
      stream: true,
      stream_options: {},
    });
    assert.equal(s.events.length, 4, 'include_usage defaults to true when stream_options is present');
  });
});

describe('sim without prompt tokens details', () => {
  it('returns prompt_tokens_details: null', async () => {
    const sim = await startSimulator({ promptTokensDetails: false });
    try {
      const r = await complete(sim, ids(40, 19));
      assert.equal(obj(r.body.usage).prompt_tokens_details, null);
    } finally {
      await sim.close();
    }
  });
});

describe('sim LMCache controller', () => {
  let sim: Simulator;
  before(async () => {
    sim = await startSimulator({ lmcacheCpuChunks: 4, lmcacheDiskChunks: 2 });
  });
  after(async () => {
    await sim.close();
  });
  beforeEach(() => sim.reset());

  const inst = 'lmcache_default_instance';

  it('answers lookup / pin / clear / health / check_finish with the real shapes', async () => {
    const prompt = ids(520, 21);
    await complete(sim, prompt, { cache_salt: 'k' });
    const miss = await call(sim.lmcacheUrl, '/lookup', { tokens: prompt });
    assert.equal(miss.status, 200);
    assert.match(miss.body.event_id as string, /^Lookup[0-9a-f-]{36}$/);
    assert.deepEqual(miss.body.layout_info, {}, 'unsalted lookup does not see salted chunks');
    const hit = await call(sim.lmcacheUrl, '/lookup', { tokens: prompt, cache_salt: 'k' });
    assert.deepEqual(hit.body.layout_info, { [inst]: ['LocalCPUBackend', 512] });

    const pin = await call(sim.lmcacheUrl, '/pin', {
      instance_id: inst,
      location: 'LocalCPUBackend',
      tokens: prompt,
      cache_salt: 'k',
    });
    assert.equal(pin.status, 200);
    assert.equal(pin.body.num_tokens, 512);
    assert.match(pin.body.event_id as string, /^Pin/);
    assert.equal(sim.counters().lmcache.pinnedChunks, 2);

    const fin = await call(sim.lmcacheUrl, '/check_finish', { event_id: pin.body.event_id });
    assert.deepEqual(fin.body, { status: 'finished' });
    const health = await call(sim.lmcacheUrl, '/health', { instance_id: inst });
    assert.deepEqual(health.body.error_codes, { '0': 0 });

    // clear skips pinned chunks; after unpin (sim extension) they go
    const other = ids(300, 22);
    await complete(sim, other);
    const clear1 = await call(sim.lmcacheUrl, '/clear', { instance_id: inst, location: 'LocalCPUBackend' });
    assert.equal(clear1.body.num_tokens, 256);
    assert.match(clear1.body.event_id as string, /^Clear/);
    const unpin = await call(sim.lmcacheUrl, '/unpin', {
      instance_id: inst,
      location: 'LocalCPUBackend',
      tokens: prompt,
      cache_salt: 'k',
    });
    assert.equal(unpin.body.num_tokens, 512);
    const clear2 = await call(sim.lmcacheUrl, '/clear', {
      instance_id: inst,
      location: 'LocalCPUBackend',
      tokens: prompt,
      cache_salt: 'k',
    });
    assert.equal(clear2.body.num_tokens, 512);
    assert.deepEqual((await call(sim.lmcacheUrl, '/lookup', { tokens: prompt, cache_salt: 'k' })).body.layout_info, {});

    const bad = await call(sim.lmcacheUrl, '/pin', { instance_id: inst, location: 'LocalCPUBackend' });
    assert.equal(bad.status, 422);
    assert.deepEqual(obj(arr(bad.body.detail)[0]).loc, ['body', 'tokens']);
    const unknown = await call(sim.lmcacheUrl, '/health', { instance_id: 'nope' });
    assert.equal(unknown.status, 500);
    assert.equal(typeof unknown.body.detail, 'string');
  });

  it('demotes CPU chunks to disk and keeps pinned chunks under eviction pressure', async () => {
    const a = ids(512, 31);
    const b = ids(512, 32);
    const c = ids(512, 33);
    const d = ids(512, 34);
    await complete(sim, a);
    const pinned = await call(sim.lmcacheUrl, '/pin', { instance_id: inst, location: 'LocalCPUBackend', tokens: a });
    assert.equal(pinned.body.num_tokens, 512);
    await complete(sim, b); // CPU: a a b b (full)
    await complete(sim, c); // b demoted to disk
    assert.deepEqual((await call(sim.lmcacheUrl, '/lookup', { tokens: b })).body.layout_info, {
      [inst]: ['LocalDiskBackend', 512],
    });
    await complete(sim, d); // c demoted, b dropped from disk
    assert.deepEqual((await call(sim.lmcacheUrl, '/lookup', { tokens: b })).body.layout_info, {});
    assert.deepEqual((await call(sim.lmcacheUrl, '/lookup', { tokens: a })).body.layout_info, {
      [inst]: ['LocalCPUBackend', 512],
    });
    const counters = sim.counters();
    assert.equal(counters.lmcache.pinnedChunks, 2);
    assert.equal(counters.lmcache.cpuChunks, 4);
    assert.equal(counters.lmcache.diskChunks, 2);
    // the pinned window still thaws from LMCache after GPU eviction
    await call(sim.url, '/admin/evict-gpu', {});
    assert.equal(cachedTokens(await complete(sim, a)), 511);
    // admin clear honours keepPinned
    const kept = await call(sim.url, '/admin/clear-lmcache', { keepPinned: true });
    assert.equal(obj(kept.body).removedChunks, 4);
    assert.equal(sim.counters().lmcache.cpuChunks, 2);
  });
});

describe('sim sha256_cbor hashing', () => {
  it("matches vLLM's sha256_cbor recipe and still produces hits", async () => {
    const tokens = Array.from({ length: 16 }, (_, i) => 100 + i);
    // independent construction: cbor([NONE_HASH bytes, [ids…], ["salt"]]), NONE_HASH = sha256(cbor("0"))
    const none = createHash('sha256')
      .update(Buffer.from([0x61, 0x30]))
      .digest();
    const cbor = Buffer.concat([
      Buffer.from([0x83, 0x58, 0x20]),
      none,
      Buffer.from([0x90]),
      Buffer.from(tokens.flatMap((t) => [0x18, t])),
      Buffer.from([0x81, 0x64]),
      Buffer.from('salt'),
    ]);
    const expected = createHash('sha256').update(cbor).digest('hex');
    const hasher = createHasher('sha256_cbor');
    const chain = hasher.chain(tokens, 16, 0, 1, hasher.noneHash, 'salt');
    assert.equal(Buffer.from(chain.last).toString('hex'), expected);

    const sim = await startSimulator({ hashAlgo: 'sha256_cbor' });
    try {
      const prompt = ids(300, 61);
      await complete(sim, prompt, { cache_salt: 'x' });
      assert.equal(cachedTokens(await complete(sim, prompt, { cache_salt: 'x' })), 288);
      assert.match((await call(sim.url, '/metrics')).text, /prefix_caching_hash_algo="sha256_cbor"/);
    } finally {
      await sim.close();
    }
  });
});

describe('sim GPU capacity', () => {
  it('queues requests that do not fit yet and rejects ones that never fit', async () => {
    const sim = await startSimulator({ gpuBlocks: 10, decodeUsPerToken: 5000 });
    try {
      // 100-token prompt + 16 generated ⇒ 115 KV tokens ⇒ 8 blocks; only 9 usable
      const both = Promise.all([
        complete(sim, ids(100, 41), { max_tokens: 16 }),
        complete(sim, ids(100, 42), { max_tokens: 16 }),
      ]);
      let seen = sim.counters();
      for (let i = 0; i < 200 && seen.running + seen.waiting < 2; i++) {
        await new Promise((r) => setTimeout(r, 2));
        seen = sim.counters();
      }
      assert.equal(seen.running, 1);
      assert.equal(seen.waiting, 1);
      assert.equal(await metricValue(sim, 'vllm:num_requests_waiting'), 1);
      const [r1, r2] = await both;
      assert.equal(r1.status, 200);
      assert.equal(r2.status, 200);
      assert.equal(sim.counters().finished.length, 2);
      const tooBig = await complete(sim, ids(200, 43));
      assert.equal(tooBig.status, 400);
      assert.match(errorMessage(tooBig), /KV blocks/);
    } finally {
      await sim.close();
    }
  });

  it('frees finished blocks as evictable: usage drops back to 0 and prefixes survive', async () => {
    const sim = await startSimulator({ gpuBlocks: 64 });
    try {
      const prompt = ids(160, 44);
      await complete(sim, prompt);
      const c = sim.counters();
      assert.equal(c.kvCacheUsage, 0);
      assert.equal(c.gpu.cachedBlocks, 10);
      assert.equal(cachedTokens(await complete(sim, prompt)), 144);
    } finally {
      await sim.close();
    }
  });
});

describe('sim faults', () => {
  let sim: Simulator;
  before(async () => {
    sim = await startSimulator();
  });
  after(async () => {
    await sim.close();
  });
  beforeEach(() => sim.reset());

  it('503 answers a vLLM-style error for `count` requests, then resets', async () => {
    await call(sim.url, '/admin/faults', { mode: '503', count: 1 });
    const r = await complete(sim, ids(10, 51));
    assert.equal(r.status, 503);
    assert.equal(obj(r.body.error).code, 503);
    assert.equal((await call(sim.url, '/health')).status, 200, '/health is not affected by 503 mode');
    assert.equal((await complete(sim, ids(10, 51))).status, 200);
  });

  it('down makes /health and everything else 503 while admin keeps working', async () => {
    await call(sim.url, '/admin/faults', { mode: 'down' });
    assert.equal((await call(sim.url, '/health')).status, 503);
    assert.equal((await call(sim.url, '/v1/models')).status, 503);
    const status = await call(sim.url, '/admin/faults');
    assert.equal(obj(status.body.vllm).mode, 'down');
    await call(sim.url, '/admin/faults', { mode: 'none' });
    assert.equal((await call(sim.url, '/health')).status, 200);
  });

  it('slow still answers, drop destroys the socket', async () => {
    await call(sim.url, '/admin/faults', { mode: 'slow', delayMs: 30, count: 1 });
    assert.equal((await complete(sim, ids(10, 52))).status, 200);
    assert.equal(obj((await call(sim.url, '/admin/faults')).body.vllm).affected, 1);

    await call(sim.url, '/admin/faults', { mode: 'drop', count: 1, paths: ['/v1/'] });
    await assert.rejects(complete(sim, ids(10, 52)));
    assert.equal((await complete(sim, ids(10, 52))).status, 200);
  });

  it('reset-mid-stream cuts an SSE stream and a JSON body', async () => {
    await call(sim.url, '/admin/faults', { mode: 'reset-mid-stream', count: 2 });
    const s = await sse(sim.url, '/v1/completions', { prompt: ids(20, 53), max_tokens: 10, stream: true });
    assert.ok(s.error || !s.done, 'stream must not complete');
    assert.ok(s.events.length < 10);
    await assert.rejects(async () => {
      const res = await fetch(`${sim.url}/v1/models`);
      JSON.parse(await res.text());
    });
    // the aborted request released its blocks
    const c = sim.counters();
    assert.equal(c.running, 0);
    assert.equal(c.finished.abort, 1);
  });

  it('faults can target the LMCache controller (sim extension)', async () => {
    await call(sim.url, '/admin/faults', { mode: '503', target: 'lmcache', count: 1 });
    assert.equal((await call(sim.lmcacheUrl, '/lookup', { tokens: [1, 2, 3] })).status, 503);
    assert.equal((await call(sim.lmcacheUrl, '/lookup', { tokens: [1, 2, 3] })).status, 200);
  });
});
