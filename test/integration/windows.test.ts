import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { CwmClient } from '../../client/rpc-client.js';
import { isCwmError } from '../../daemon/protocol/index.js';
import { conversation } from '../helpers/conversation.js';
import { cwm, type DaemonHandle, startDaemon } from '../helpers/daemon.js';
import { type Simulator, startSimulator } from '../sim/index.js';

const MODEL = 'sim/llama-3-8b-instruct';

async function simJson<T>(url: string, body: unknown): Promise<T> {
  const r = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const json = (await r.json()) as T;
  if (!r.ok) throw new Error(`${url}: ${r.status} ${JSON.stringify(json)}`);
  return json;
}

function tokenize(sim: Simulator, messages: unknown[]): Promise<{ tokens: number[]; count: number }> {
  return simJson(`${sim.url}/tokenize`, { model: MODEL, messages, add_generation_prompt: false });
}

type CompletionBody = { prompt?: unknown; cache_salt?: unknown; max_tokens?: unknown; prompt_logprobs?: unknown };

async function lmcacheLookup(sim: Simulator, tokens: number[], salt: string): Promise<number> {
  const r = await simJson<{ layout_info: Record<string, [string, number]> }>(`${sim.lmcacheUrl}/lookup`, {
    tokens,
    cache_salt: salt,
  });
  return Math.max(0, ...Object.values(r.layout_info).map((x) => x[1]));
}

describe('windows on vLLM + LMCache (simulator)', () => {
  let sim: Simulator;
  let d: DaemonHandle;
  let c: CwmClient;
  const msgs = conversation(8000, 7);
  let exact: number[];

  before(async () => {
    sim = await startSimulator({ lmcacheCpuChunks: 256, lmcacheDiskChunks: 1024 });
    d = await startDaemon({ engineUrl: sim.url, env: { CWM_LMCACHE_URL: sim.lmcacheUrl } });
    c = await d.client();
    exact = (await tokenize(sim, msgs)).tokens;
    assert.ok(exact.length > 7800 && exact.length < 9000, `conversation is ${exact.length} tokens`);
    const file = path.join(d.dir, 'conv.json');
    fs.writeFileSync(file, JSON.stringify({ messages: msgs }));
    const rec = await cwm(d, ['--json', 'session', 'record', 'big', '--model', MODEL, '--messages', file]);
    assert.equal(rec.code, 0, rec.stderr);
    assert.equal(JSON.parse(rec.stdout).tokens, exact.length, 'session tokens = the engine tokenizer count');
  });

  after(async () => {
    c?.close();
    await d?.stop();
    await sim?.close();
  });

  it('freezes the exact token ids, prefills under the salt and pins the chunks', async () => {
    const r = await cwm(d, [
      '--json',
      'freeze',
      'big',
      'w8k',
      '--tag',
      'big',
      '--description',
      'eight thousand tokens',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const f = JSON.parse(r.stdout);
    assert.equal(f.tokens, exact.length);
    assert.equal(f.chunks, Math.ceil(exact.length / 256));
    assert.equal(f.pinned, true);
    assert.ok(f.bytesStored <= 2 * exact.length, `${f.bytesStored} bytes for ${exact.length} tokens`);
    const w = await c.call('window.get', { name: 'w8k', tokens: true, salt: true });
    assert.deepEqual(w.tokenIds, exact);
    assert.equal(w.residency, 'ready');
    assert.equal(w.fingerprint.maxModelLen, 32768);
    assert.equal(w.fingerprint.engineVersion, '0.12.0');
    const pinned = sim.counters();
    assert.ok(JSON.stringify(pinned).length > 0);
    assert.equal(await lmcacheLookup(sim, exact, w.cacheSalt as string), Math.floor(exact.length / 256) * 256);
    const s = await c.call('session.get', { session: 'big' });
    assert.equal(s.state, 'frozen');
    assert.equal(s.lastWindow, 'w8k');
  });

  it('never prints the salt unless asked, and audits the explicit read', async () => {
    const plain = await cwm(d, ['--json', 'show', 'w8k']);
    assert.equal(JSON.parse(plain.stdout).cacheSalt, undefined);
    const list = await cwm(d, ['--json', 'windows']);
    assert.doesNotMatch(list.stdout, /salt/i);
    const audit = await c.call('audit.list', { action: 'window.salt-read' });
    assert.ok(audit.events.some((e) => e.target === 'w8k'));
  });

  it('thaws after GPU eviction from LMCache in whole chunks, matching the engine’s own cached_tokens', async () => {
    sim.evictGpu();
    const r = await cwm(d, ['--json', 'thaw', 'w8k', '--session', 'big-2']);
    assert.equal(r.code, 0, r.stderr);
    const t = JSON.parse(r.stdout);
    const warm = sim.requests(1, { path: '/v1/completions' })[0];
    assert.ok(warm, 'the simulator saw the warm-up request');
    const body = warm.body as CompletionBody;
    assert.deepEqual(body.prompt, exact, 'warm-up carries the exact token ids');
    assert.equal(body.max_tokens, 1);
    assert.equal(typeof body.cache_salt, 'string');
    assert.equal(body.prompt_logprobs, undefined);
    const w = await c.call('window.get', { name: 'w8k', salt: true });
    assert.equal(body.cache_salt, w.cacheSalt, 'salt at top level, the window’s own');
    const engineCached = sim.engine.last?.cachedTokens;
    assert.equal(t.cachedTokens, engineCached, 'reported = the engine’s cached_tokens');
    assert.equal(t.cachedTokens % 256, 0, 'served from LMCache in whole 256-token chunks');
    assert.equal(t.cachedTokens, Math.floor(exact.length / 256) * 256);
    const maxC = Math.floor((exact.length - 1) / 16) * 16;
    assert.equal(t.maxCacheableTokens, maxC);
    assert.equal(t.efficiency, t.cachedTokens / maxC);
    assert.equal(t.recomputedTokens, exact.length - t.cachedTokens);
    assert.equal(t.residency, 'ready');
    assert.deepEqual(t.warnings, []);
    const s = await c.call('session.get', { session: 'big-2', messages: true });
    assert.equal(s.state, 'thawed');
    assert.equal(s.sourceWindow, 'w8k');
    assert.equal(s.tokens, exact.length);
    assert.deepEqual(s.messages, msgs);
  });

  it('isolates salts: another salt (or none) gets no hits on the same prefix', async () => {
    const w = await c.call('window.get', { name: 'w8k', salt: true });
    const other = await simJson<{ usage: { prompt_tokens_details: { cached_tokens: number } } }>(
      `${sim.url}/v1/completions`,
      {
        model: MODEL,
        prompt: exact,
        max_tokens: 1,
        cache_salt: 'someone-else',
      },
    );
    assert.equal(other.usage.prompt_tokens_details.cached_tokens, 0);
    const none = await simJson<typeof other>(`${sim.url}/v1/completions`, {
      model: MODEL,
      prompt: exact,
      max_tokens: 1,
    });
    assert.equal(none.usage.prompt_tokens_details.cached_tokens, 0);
    const same = await simJson<typeof other>(`${sim.url}/v1/completions`, {
      model: MODEL,
      prompt: exact,
      max_tokens: 1,
      cache_salt: w.cacheSalt,
    });
    assert.ok(same.usage.prompt_tokens_details.cached_tokens > exact.length - 300);
    // a second daemon session over the same messages gets its own salt
    await c.call('session.record', { session: 'twin', model: MODEL, messages: msgs });
    await c.call('window.freeze', { session: 'twin', name: 'twin-w' });
    const tw = await c.call('window.get', { name: 'twin-w', salt: true });
    assert.notEqual(tw.cacheSalt, w.cacheSalt);
    await c.call('window.delete', { name: 'twin-w' });
  });

  it('with LMCache cleared too, thaw still restores the exact tokens, says they were recomputed, and warns', async () => {
    sim.evictGpu();
    sim.clearLmcache({ keepPinned: false });
    const t = await c.call('window.thaw', { name: 'w8k', newSession: 'big-cold' });
    assert.equal(t.cachedTokens, 0);
    assert.equal(t.recomputedTokens, exact.length);
    assert.equal(t.residency, 'lost');
    assert.ok(t.warnings.some((x) => /recomputed/.test(x)));
    const warm = sim.requests(1, { path: '/v1/completions' })[0];
    assert.ok(warm);
    assert.deepEqual((warm.body as CompletionBody).prompt, exact);
    assert.equal((await c.call('window.get', { name: 'w8k' })).residency, 'lost');
    // the recompute stored the KV again: re-freezing the thawed session pins it again
    const again = await c.call('window.freeze', { session: 'big-cold', name: 'w8k-again' });
    assert.equal(again.newChunks, 0, 'same tokens: no new chunks');
    assert.equal(again.pinned, true);
  });

  it('clones share chunks; deleting the parent keeps the clone thawable; LMCache is cleared at the last reference', async () => {
    const before = (await c.call('daemon.status')).counts;
    const clone = await cwm(d, ['--json', 'clone', 'w8k-again', 'branch']);
    assert.equal(clone.code, 0, clone.stderr);
    assert.equal(JSON.parse(clone.stdout).parent, 'w8k-again');
    const afterClone = (await c.call('daemon.status')).counts;
    assert.equal(afterClone.chunks, before.chunks, 'a clone adds no chunks');
    assert.equal(afterClone.windows, before.windows + 1);
    const salt = (await c.call('window.get', { name: 'branch', salt: true })).cacheSalt as string;
    const del = await cwm(d, ['--json', 'delete', 'w8k-again', '--yes']);
    assert.equal(del.code, 0, del.stderr);
    assert.equal(JSON.parse(del.stdout).lmcacheCleared, 0, 'the clone still needs the KV');
    assert.ok((await lmcacheLookup(sim, exact, salt)) > 0);
    sim.evictGpu();
    const t = await c.call('window.thaw', { name: 'branch', newSession: 'branch-s' });
    assert.ok(t.cachedTokens > 0);
    const shown = await c.call('window.get', { name: 'branch', lineage: true });
    assert.equal(shown.lineage?.missingParent, 'w8k-again');
    const check = await c.call('registry.check', {});
    assert.deepEqual(check.problems, []);
  });

  it('cascade deletes a window and its clones, freeing chunks no one else uses', async () => {
    await c.call('window.clone', { name: 'branch', newName: 'branch-2' });
    await c.call('window.clone', { name: 'branch-2', newName: 'branch-3' });
    const r = await c.call('window.delete', { name: 'branch', cascade: true });
    assert.deepEqual([...r.deleted].sort(), ['branch', 'branch-2', 'branch-3']);
    assert.equal(r.chunksFreed, 0, 'w8k still holds the same chunks');
    const list = await c.call('window.list', {});
    assert.deepEqual(
      list.windows.map((w) => w.name),
      ['w8k'],
    );
    const rd = await c.call('window.delete', { name: 'w8k' });
    assert.equal(rd.chunksFreed, Math.ceil(exact.length / 256));
    assert.equal((await c.call('daemon.status')).counts.chunks, 0);
    assert.deepEqual((await c.call('registry.check', {})).problems, []);
  });

  it('refreezing a grown session makes a new window sharing the common prefix', async () => {
    const grown = [
      ...msgs,
      { role: 'user', content: 'one more question about the cache' },
      { role: 'assistant', content: 'and one more answer' },
    ];
    await c.call('session.record', { session: 'grow', model: MODEL, messages: msgs });
    const a = await c.call('window.freeze', { session: 'grow', name: 'grow-1' });
    await c.call('session.record', { session: 'grow', model: MODEL, messages: grown });
    const b = await c.call('window.freeze', { session: 'grow', name: 'grow-2' });
    assert.ok(b.tokens > a.tokens);
    assert.equal(b.newChunks, b.chunks - Math.floor(a.tokens / 256), 'only chunks past the shared full chunks are new');
    const grow2 = await c.call('window.get', { name: 'grow-2', salt: true });
    const grow1 = await c.call('window.get', { name: 'grow-1', salt: true });
    assert.equal(grow1.cacheSalt, grow2.cacheSalt, 'one session, one salt lineage');
    // deleting the longer window keeps the shorter one's chunks in LMCache
    const tokens1 = (await c.call('window.get', { name: 'grow-1', tokens: true })).tokenIds as number[];
    await c.call('window.delete', { name: 'grow-2' });
    assert.equal(await lmcacheLookup(sim, tokens1, grow1.cacheSalt as string), Math.floor(tokens1.length / 256) * 256);
  });

  it('freezes completion sessions exactly: token-id prompt plus completion text, no BOS in the middle', async () => {
    const prompt = await simJson<{ tokens: number[] }>(`${sim.url}/tokenize`, {
      model: MODEL,
      prompt: 'Once upon a time',
    });
    const tail = await simJson<{ tokens: number[] }>(`${sim.url}/tokenize`, {
      model: MODEL,
      prompt: ' there was a cache',
      add_special_tokens: false,
    });
    await c.call('session.record', {
      session: 'comp',
      model: MODEL,
      prompt: prompt.tokens,
      completion: ' there was a cache',
    });
    await c.call('window.freeze', { session: 'comp', name: 'comp-w' });
    const w = await c.call('window.get', { name: 'comp-w', tokens: true });
    assert.deepEqual(w.tokenIds, [...prompt.tokens, ...tail.tokens]);
    assert.equal(w.kind, 'completion');
    await c.call('window.delete', { name: 'comp-w' });
  });

  it('lists with filters, sorting, paging and totals', async () => {
    for (let i = 0; i < 5; i++) {
      await c.call('session.record', {
        session: `p${i}`,
        model: MODEL,
        messages: conversation(300 + 100 * i, 100 + i),
      });
      await c.call('window.freeze', {
        session: `p${i}`,
        name: `page-${i}`,
        tags: i % 2 === 0 ? ['even', 'page'] : ['page'],
        description: `number ${i}`,
      });
    }
    const page = await c.call('window.list', { tags: ['page'], limit: 2, offset: 0 });
    assert.equal(page.total, 5);
    assert.deepEqual(
      page.windows.map((w) => w.name),
      ['page-4', 'page-3'],
    );
    const even = await c.call('window.list', { tags: ['page', 'even'], sort: 'name', order: 'asc' });
    assert.deepEqual(
      even.windows.map((w) => w.name),
      ['page-0', 'page-2', 'page-4'],
    );
    assert.equal(even.total, 3);
    const byTokens = await c.call('window.list', { sort: 'tokens', order: 'desc', limit: 1 });
    assert.equal(byTokens.windows[0]?.name, 'grow-1');
    const search = await c.call('window.list', { search: 'NUMBER 3' });
    assert.deepEqual(
      search.windows.map((w) => w.name),
      ['page-3'],
    );
    const bySession = await c.call('window.list', { session: 'p1' });
    assert.deepEqual(
      bySession.windows.map((w) => w.name),
      ['page-1'],
    );
    const byModel = await c.call('window.list', { model: MODEL, limit: 100 });
    assert.equal(byModel.total, 6);
    const human = await cwm(d, ['windows', '--tag', 'even']);
    assert.match(human.stdout, /^WINDOW\s+TOKENS/m);
    assert.match(human.stdout, /page-2/);
    assert.match(human.stdout, /\(1-3 of 3\)/);
  });

  it('keeps every window listed and thawable across a daemon restart', async () => {
    const beforeList = await c.call('window.list', { limit: 100 });
    c.close();
    await d.stop();
    d = await d.restart();
    c = await d.client();
    const afterList = await c.call('window.list', { limit: 100 });
    assert.deepEqual(
      afterList.windows.map((w) => w.name),
      beforeList.windows.map((w) => w.name),
    );
    for (const w of afterList.windows) {
      const t = await c.call('window.thaw', { name: w.name });
      assert.equal(t.tokens, w.tokens);
      assert.ok(t.cachedTokens > 0, `${w.name} thawed from cache`);
    }
  });

  it('gives clear errors for bad input and changes nothing', async () => {
    const before = await c.call('daemon.status');
    const expectCode = async (p: Promise<unknown>, code: string, re: RegExp) =>
      assert.rejects(p, (e: unknown) => isCwmError(e) && e.code === code && re.test(e.message) && !!e.hint);
    await expectCode(c.call('window.thaw', { name: 'nope' }), 'WINDOW_NOT_FOUND', /no window "nope"/);
    await expectCode(c.call('window.freeze', { session: 'p1', name: 'page-1' }), 'WINDOW_EXISTS', /already exists/);
    await expectCode(c.call('window.clone', { name: 'page-1', newName: 'page-2' }), 'WINDOW_EXISTS', /page-2/);
    await expectCode(c.call('window.freeze', { session: 'ghost', name: 'x' }), 'SESSION_NOT_FOUND', /ghost/);
    await expectCode(c.call('window.thaw', { name: 'page-1', newSession: 'p2' }), 'SESSION_EXISTS', /p2/);
    const bad = await cwm(d, ['freeze', 'p1', 'bad/name']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /window names are 1-128 characters/);
    const badTag = await cwm(d, ['freeze', 'p1', 'ok-name', '--tag', 'UPPER']);
    assert.equal(badTag.code, 2);
    assert.match(badTag.stderr, /tags are 1-64 lower-case/);
    const afterStatus = await c.call('daemon.status');
    assert.deepEqual(afterStatus.counts, before.counts);
  });

  it('with the engine down: thaw fails retryable and changes nothing; freeze keeps the exact tokens unpinned', async () => {
    sim.setFaults({ mode: 'down' });
    sim.setFaults({ mode: 'down', target: 'lmcache' });
    try {
      const before = await c.call('daemon.status');
      await assert.rejects(c.call('window.thaw', { name: 'page-1', newSession: 'while-down' }), (e: unknown) => {
        assert.ok(isCwmError(e));
        assert.equal(e.code, 'ENGINE_UNAVAILABLE');
        assert.equal(e.retryable, true);
        return true;
      });
      assert.deepEqual((await c.call('daemon.status')).counts, before.counts);
      await assert.rejects(c.call('session.get', { session: 'while-down' }), /no session/);
      const f = await c.call('window.freeze', { session: 'p3', name: 'frozen-while-down' });
      assert.equal(f.pinned, false);
      assert.ok(f.warnings.some((w) => /engine is unavailable/.test(w)));
      const w = await c.call('window.get', { name: 'frozen-while-down', tokens: true });
      const p3 = await c.call('window.get', { name: 'page-3', tokens: true });
      assert.deepEqual(w.tokenIds, p3.tokenIds);
    } finally {
      sim.setFaults({ mode: 'none' });
      sim.setFaults({ mode: 'none', target: 'lmcache' });
    }
  });

  it('refuses to thaw onto another model', async () => {
    const other = await startSimulator({ model: 'sim/other-model' });
    const d2 = await startDaemon({ dir: d.dir, engineUrl: other.url }).catch(() => null);
    // the first daemon owns this data dir; a second one is refused — use the registry through a restart instead
    assert.equal(d2, null);
    c.close();
    await d.stop();
    const moved = await startDaemon({ dir: d.dir, engineUrl: other.url });
    const mc = await moved.client();
    try {
      await assert.rejects(mc.call('window.thaw', { name: 'page-1' }), (e: unknown) => {
        assert.ok(isCwmError(e));
        assert.equal(e.code, 'MODEL_MISMATCH');
        assert.match(e.message, /sim\/llama-3-8b-instruct/);
        assert.match(e.hint ?? '', /sim\/other-model/);
        return true;
      });
    } finally {
      mc.close();
      await moved.stop();
      await other.close();
      d = await d.restart();
      c = await d.client();
    }
  });
});
