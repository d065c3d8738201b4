/**
 * The lossless oracle on a raw llama-server (no daemon): a slot saved to disk and restored after a server
 * restart continues bit-for-bit like the warm in-memory cache, and bad state files are refused safely.
 *
 * Bit-identity precondition (reference §6/§9): the warm and the restored continuation must both evaluate the
 * last prompt token alone. So the slot is prefilled with prompt[0..n-2], saved, and both continuations send the
 * full prompt, making the server compute exactly one prompt token (asserted via timings.prompt_n).
 */
import assert from 'node:assert/strict';
import { copyFile, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { FIRST_NORMAL_TOKEN, N_VOCAB, TOKEN_BOS } from '../../scripts/llama/gen-gguf.js';
import { ensureModel, getJson, type LlamaServer, postJson, startLlamaServer } from './harness.js';

const PROMPT_LEN = 500;
const STEPS = 16;
const N_PROBS = 5;
const SAVED = 'warm.bin';

interface TopProb {
  id: number;
  token: string;
  logprob: number;
}
interface StepProb extends TopProb {
  top_logprobs: TopProb[];
}
interface CompletionBody {
  tokens?: number[];
  content: string;
  completion_probabilities: StepProb[];
  timings: { prompt_n: number; cache_n?: number; predicted_n: number };
}
interface SlotActionBody {
  n_saved?: number;
  n_restored?: number;
  n_written?: number;
  n_read?: number;
  error?: { message: string };
}

/** Deterministic prompt of token ids: BOS + normal tokens (no control/byte tokens). */
function makePrompt(n: number): number[] {
  const ids = [TOKEN_BOS];
  let x = 12345;
  while (ids.length < n) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    ids.push(FIRST_NORMAL_TOKEN + ((x >>> 8) % (N_VOCAB - FIRST_NORMAL_TOKEN)));
  }
  return ids;
}

const prompt = makePrompt(PROMPT_LEN);
let server: LlamaServer;

function completion(
  ids: number[],
  nPredict: number,
  extra: Record<string, unknown> = {},
): Promise<{ status: number; body: CompletionBody }> {
  return postJson<CompletionBody>(`${server.url}/completion`, {
    prompt: ids,
    n_predict: nPredict,
    temperature: 0,
    top_k: 1,
    seed: 1,
    id_slot: 0,
    cache_prompt: true,
    n_probs: N_PROBS,
    return_tokens: true,
    ...extra,
  });
}

function slotAction(action: 'save' | 'restore' | 'erase', filename?: string, slot = 0) {
  return postJson<SlotActionBody>(
    `${server.url}/slots/${slot}?action=${action}`,
    filename === undefined ? {} : { filename },
  );
}

async function assertHealthy(): Promise<void> {
  const h = await getJson(`${server.url}/health`);
  assert.equal(h.status, 200, `server unhealthy: ${JSON.stringify(h.body)}`);
}

before(async () => {
  server = await startLlamaServer({ ctx: 4096, slots: 2 });
});

after(async () => {
  await server?.dispose();
});

let warm: CompletionBody;
let nSaved = 0;

test('prefill, save, continue warm from the in-memory cache', async () => {
  const pre = await completion(prompt.slice(0, -1), 0);
  assert.equal(pre.status, 200, JSON.stringify(pre.body));
  const saved = await slotAction('save', SAVED);
  assert.equal(saved.status, 200, JSON.stringify(saved.body));
  nSaved = saved.body.n_saved ?? -1;
  assert.equal(nSaved, PROMPT_LEN - 1, 'slot holds prompt[0..n-2]');
  assert.ok((await stat(path.join(server.slotDir, SAVED))).size > 0);

  const res = await completion(prompt, STEPS);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  warm = res.body;
  assert.equal(warm.timings.prompt_n, 1, 'warm continuation evaluates only the last prompt token');
  assert.equal(warm.completion_probabilities.length, STEPS);
  assert.equal(warm.completion_probabilities[0]?.top_logprobs.length, N_PROBS);
  // generator pitfall: unk/bos/eos/byte tokens have zero output rows and must never win greedy decoding
  for (const id of warm.tokens ?? []) assert.ok(id >= FIRST_NORMAL_TOKEN, `greedy picked reserved token ${id}`);
  assert.ok(new Set(warm.tokens).size > 1, 'continuation is not a single repeated token');
});

test('restore after a server restart continues bit-for-bit like the warm cache', async () => {
  assert.ok(warm, 'needs the warm run');
  await server.restart({ signal: 'SIGKILL' });
  const restored = await slotAction('restore', SAVED);
  assert.equal(restored.status, 200, JSON.stringify(restored.body));
  assert.equal(restored.body.n_restored, nSaved);

  const res = await completion(prompt, STEPS);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.equal(res.body.timings.prompt_n, 1, 'restored continuation evaluates only the last prompt token');
  assert.deepEqual(res.body.tokens, warm.tokens);
  // Exact equality of every number: ids and logprobs of the chosen and top-N tokens at every step.
  assert.deepEqual(res.body.completion_probabilities, warm.completion_probabilities);
  assert.equal(res.body.content, warm.content);
});

test('greedy tokens equal a cold recompute of the whole prompt', async () => {
  assert.ok(warm, 'needs the warm run');
  const erased = await slotAction('erase', undefined, 1);
  assert.equal(erased.status, 200, JSON.stringify(erased.body));
  const res = await completion(prompt, STEPS, { id_slot: 1, cache_prompt: false });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.equal(res.body.timings.prompt_n, PROMPT_LEN, 'cold run recomputes the whole prompt');
  assert.deepEqual(res.body.tokens, warm.tokens);
  assert.deepEqual(
    res.body.completion_probabilities.map((p) => p.id),
    warm.completion_probabilities.map((p) => p.id),
  );
  // Logprobs differ in the low bits (batched vs single-token evaluation), but only slightly.
  res.body.completion_probabilities.forEach((p, i) => {
    const w = warm.completion_probabilities[i];
    assert.ok(w !== undefined && Math.abs(p.logprob - w.logprob) < 0.02, `step ${i}: ${p.logprob} vs ${w?.logprob}`);
  });
});

test('bad state files are refused with 400 and the server stays healthy', async () => {
  const good = await readFile(path.join(server.slotDir, SAVED));
  const put = (name: string, data: Buffer): Promise<void> => writeFile(path.join(server.slotDir, name), data);

  // Layout (reference §9): u32 magic 'ggsq' (bytes "qsgg"), u32 version 3, u32 n_packed = n_tokens + 4,
  // packed i32 [-1, 1, n_tokens, tokens…, n_media], then the KV data.
  assert.equal(good.readUInt32LE(0), 0x67677371);
  assert.equal(good.readUInt32LE(4), 3);
  assert.equal(good.readUInt32LE(8), nSaved + 4);
  assert.equal(good.readInt32LE(20), nSaved);

  const garbage = Buffer.alloc(good.length);
  let x = 7;
  for (let i = 0; i < garbage.length; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    garbage[i] = x >>> 24;
  }
  await put('garbage.bin', garbage);
  const badMagic = Buffer.from(good);
  badMagic.write('XXXX', 0, 'latin1');
  await put('bad-magic.bin', badMagic);
  await put('truncated.bin', good.subarray(0, Math.floor(good.length / 2)));
  await put('header-only.bin', good.subarray(0, 12));
  const badTokens = Buffer.from(good);
  badTokens.writeInt32LE(0x7fffffff, 24 + 4 * 10); // an out-of-vocab token id in the saved prompt
  await put('bad-tokens.bin', badTokens);
  await put('empty.bin', Buffer.alloc(0));
  await copyFile(await foreignStateFile(), path.join(server.slotDir, 'foreign.bin'));

  for (const name of [
    'garbage.bin',
    'bad-magic.bin',
    'truncated.bin',
    'header-only.bin',
    'bad-tokens.bin',
    'empty.bin',
    'foreign.bin',
    'missing.bin',
  ]) {
    const r = await slotAction('restore', name);
    assert.equal(r.status, 400, `${name}: ${JSON.stringify(r.body)}`);
    assert.match(r.body.error?.message ?? '', /Unable to restore slot/, name);
    await assertHealthy();
  }
  for (const name of ['../x.bin', 'sub/x.bin', '/etc/passwd']) {
    for (const action of ['restore', 'save'] as const) {
      const r = await slotAction(action, name);
      assert.equal(r.status, 400, `${action} ${name}: ${JSON.stringify(r.body)}`);
      assert.match(r.body.error?.message ?? '', /Invalid filename/);
    }
    await assertHealthy();
  }

  // After all the refusals the slot still restores and continues bit-for-bit.
  const restored = await slotAction('restore', SAVED);
  assert.equal(restored.status, 200, JSON.stringify(restored.body));
  const res = await completion(prompt, STEPS);
  assert.equal(res.status, 200);
  assert.deepEqual(res.body.completion_probabilities, warm.completion_probabilities);
});

test('out-of-range slot ids wrap around instead of failing (a daemon must check /props total_slots)', async () => {
  const props = await getJson<{ total_slots: number }>(`${server.url}/props`);
  assert.equal(props.body.total_slots, 2);
  const r = await slotAction('restore', SAVED, 3); // 3 % 2 = slot 1
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.n_restored, nSaved);
  const res = await completion(prompt, STEPS, { id_slot: 1 });
  assert.equal(res.body.timings.prompt_n, 1, 'slot 1 got the restored prefix');
  assert.deepEqual(res.body.completion_probabilities, warm.completion_probabilities);
});

test('/v1/chat/completions and /tokenize work with the embedded chat template', async () => {
  const chat = await postJson<{ choices: Array<{ message: { content: string } }>; usage: { prompt_tokens: number } }>(
    `${server.url}/v1/chat/completions`,
    { messages: [{ role: 'user', content: 'hello world, how are you?' }], max_tokens: 8, temperature: 0 },
  );
  assert.equal(chat.status, 200, JSON.stringify(chat.body));
  assert.ok((chat.body.choices[0]?.message.content.length ?? 0) > 0);
  // BOS + "<|user|>\nhello world, how are you?\n<|assistant|>\n"
  assert.ok(chat.body.usage.prompt_tokens > 10);
  const tok = await postJson<{ tokens: number[] }>(`${server.url}/tokenize`, { content: 'hello world' });
  assert.equal(tok.status, 200);
  assert.equal(tok.body.tokens.length, 2, 'whole words are single tokens in the generated vocab');
});

/** A state file saved by a server running a differently shaped model (2 layers instead of 4). */
async function foreignStateFile(): Promise<string> {
  const model = await ensureModel({ size: 'tiny', spec: { layers: 2 } });
  const other = await startLlamaServer({ model, ctx: 1024, slots: 1 });
  try {
    const pre = await postJson(`${other.url}/completion`, {
      prompt: prompt.slice(0, 100),
      n_predict: 0,
      id_slot: 0,
      cache_prompt: true,
    });
    assert.equal(pre.status, 200);
    const saved = await postJson<SlotActionBody>(`${other.url}/slots/0?action=save`, { filename: 'foreign.bin' });
    assert.equal(saved.status, 200, JSON.stringify(saved.body));
    const out = path.join(server.workDir, 'foreign.bin');
    await copyFile(path.join(other.slotDir, 'foreign.bin'), out);
    return out;
  } finally {
    await other.dispose();
  }
}
