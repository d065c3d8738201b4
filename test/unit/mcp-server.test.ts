import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import { pino } from 'pino';
import { CwmError, type MethodName, type ResultOf, type WindowInfo } from '../../daemon/protocol/index.js';
import { createServer } from '../../mcp-shim/server.js';
import { TOOL_NAMES } from '../../mcp-shim/tools/index.js';
import type { DaemonRpc } from '../../mcp-shim/tools/tool.js';

/** A fake daemon connection: records every call and answers from a table (or throws what the table holds). */
class FakeRpc implements DaemonRpc {
  calls: { method: string; params: unknown; readOnly: boolean }[] = [];
  answers = new Map<string, unknown>();

  async call<M extends MethodName>(method: M, params: unknown, opts: { readOnly: boolean }): Promise<ResultOf<M>> {
    this.calls.push({ method, params, readOnly: opts.readOnly });
    const a = this.answers.get(method);
    if (a instanceof Error) throw a;
    if (a === undefined) throw new Error(`no fake answer for ${method}`);
    return a as ResultOf<M>;
  }

  last(): { method: string; params: unknown; readOnly: boolean } {
    const c = this.calls.at(-1);
    assert.ok(c, 'a call was made');
    return c;
  }
}

const NOW = new Date().toISOString();
const WINDOW: WindowInfo = {
  name: 'w1',
  id: 'abc',
  session: 's1',
  model: 'sim/llama-3-8b-instruct',
  fingerprint: { model: 'sim/llama-3-8b-instruct', maxModelLen: 32768, engineKind: 'vllm', engineVersion: '0.12.0' },
  tokens: 1234,
  chunks: 5,
  bytesStored: 4096,
  description: 'a test window',
  tags: ['t1'],
  parent: null,
  createdAt: NOW,
  pinned: true,
  residency: 'ready',
  residencyCheckedAt: null,
  kind: 'chat',
  stateFile: null,
};
const SESSION = {
  id: 's1',
  model: 'sim/llama-3-8b-instruct',
  state: 'active' as const,
  tokens: 1234,
  maxModelLen: 32768,
  turns: 3,
  kind: 'chat' as const,
  createdAt: NOW,
  updatedAt: NOW,
  lastUsedAt: NOW,
  sourceWindow: null,
  lastWindow: null,
  lastUsage: null,
  slot: null,
};
const POLICY_VIEW = {
  policy: { enabled: false, threshold: 0.75, maxTokens: null, cooldownSeconds: 60, intervalSeconds: 30 },
  source: {},
  lastRunAt: null,
  pressure: { kvUsage: null, hostAvailable: null, underPressure: false },
};

function text(r: object): string {
  const c = ((r as { content?: unknown }).content as { type: string; text?: string }[] | undefined) ?? [];
  return c.map((x) => x.text ?? '').join('\n');
}

describe('cwm-mcp server (in memory, fake daemon)', () => {
  const rpc = new FakeRpc();
  const client = new Client({ name: 'test', version: '0' });
  const server = createServer(rpc, pino({ level: 'silent' }));

  before(async () => {
    const [ct, st] = InMemoryTransport.createLinkedPair();
    await server.connect(st);
    await client.connect(ct);
  });
  after(async () => {
    await client.close();
    await server.close();
  });

  it('lists the ten tools with titles, descriptions, truthful annotations and output schemas', async () => {
    const { tools } = await client.listTools();
    assert.deepEqual(tools.map((t) => t.name).sort(), [...TOOL_NAMES].sort());
    const readOnly = new Set(['window_list', 'window_status', 'session_list', 'cache_stats', 'health_check']);
    for (const t of tools) {
      assert.ok(t.title && t.description && t.description.length > 80, `${t.name} is described`);
      assert.ok(t.outputSchema, `${t.name} declares an output schema`);
      const a = t.annotations;
      assert.ok(a, `${t.name} has annotations`);
      assert.equal(a.readOnlyHint, readOnly.has(t.name), `${t.name} readOnlyHint`);
      assert.equal(a.destructiveHint, t.name === 'window_delete', `${t.name} destructiveHint`);
      assert.equal(a.openWorldHint, false, `${t.name} openWorldHint`);
      assert.equal(typeof a.idempotentHint, 'boolean', `${t.name} idempotentHint`);
      for (const [k, v] of Object.entries(
        (t.inputSchema.properties ?? {}) as Record<string, { description?: string }>,
      )) {
        assert.ok(v.description, `${t.name}.${k} is described`);
        assert.match(k, /^[a-z]+(_[a-z]+)*$/, `${t.name}.${k} is snake_case`);
      }
    }
    const freeze = tools.find((t) => t.name === 'window_freeze');
    const props = freeze?.inputSchema.properties as Record<string, { pattern?: string }>;
    assert.equal(props.window_name?.pattern, '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$', 'the protocol name rule');
    assert.equal(props.session_id?.pattern, '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$');
    assert.deepEqual(freeze?.inputSchema.required?.sort(), ['session_id', 'window_name']);
  });

  it('window_freeze maps snake_case arguments to window.freeze and answers text + structured content', async () => {
    rpc.answers.set('window.freeze', {
      name: 'w1',
      session: 's1',
      tokens: 1234,
      chunks: 5,
      newChunks: 5,
      bytesStored: 4096,
      pinned: true,
      cached: true,
      durationMs: 12.5,
      engineMs: 10,
      warnings: ['a warning'],
    });
    const r = await client.callTool({
      name: 'window_freeze',
      arguments: { session_id: 's1', window_name: 'w1', tags: ['t1'], prefill: false },
    });
    assert.equal(r.isError, undefined);
    assert.deepEqual(rpc.last(), {
      method: 'window.freeze',
      params: { session: 's1', name: 'w1', tags: ['t1'], prefill: false },
      readOnly: false,
    });
    assert.match(text(r), /Froze session "s1" as window "w1": 1,234 tokens/);
    assert.match(text(r), /Warning: a warning/);
    assert.equal((r.structuredContent as { tokens: number }).tokens, 1234);
  });

  it('invalid arguments never reach the daemon: the protocol name rules are enforced by the schema', async () => {
    const before = rpc.calls.length;
    const r = await client.callTool({
      name: 'window_freeze',
      arguments: { session_id: 's1', window_name: '-bad name' },
    });
    assert.equal(r.isError, true);
    assert.match(text(r), /window_name/);
    assert.equal(rpc.calls.length, before);
  });

  it('a CwmError becomes an isError result with the message and a hint in tool terms, and its code under _meta', async () => {
    rpc.answers.set(
      'window.get',
      new CwmError('WINDOW_NOT_FOUND', 'no window named "nope"', { hint: 'list windows with `cwm windows`' }),
    );
    const r = await client.callTool({ name: 'window_status', arguments: { window_name: 'nope' } });
    assert.equal(r.isError, true);
    assert.equal(r.structuredContent, undefined, 'no structured content on errors (clients validate it)');
    assert.match(
      text(r),
      /^Error \(WINDOW_NOT_FOUND\): no window named "nope"\nHint: call window_list to see the window names/,
    );
    assert.deepEqual((r._meta as Record<string, unknown>)['cwm/error'], {
      code: 'WINDOW_NOT_FOUND',
      hint: 'call window_list to see the window names',
      retryable: false,
    });
  });

  it('window_status needs exactly one of window_name and session_id', async () => {
    const before = rpc.calls.length;
    for (const args of [{}, { window_name: 'w1', session_id: 's1' }]) {
      const r = await client.callTool({ name: 'window_status', arguments: args });
      assert.equal(r.isError, true);
      assert.match(text(r), /exactly one of window_name or session_id/);
    }
    assert.equal(rpc.calls.length, before);
  });

  it('window_status never passes salts on, even if the daemon sent one', async () => {
    rpc.answers.set('window.get', { ...WINDOW, cacheSalt: 'SECRET-SALT', lineage: undefined });
    const r = await client.callTool({ name: 'window_status', arguments: { window_name: 'w1', include_lineage: true } });
    assert.equal(r.isError, undefined, text(r));
    assert.deepEqual(rpc.last().params, { name: 'w1', lineage: true });
    assert.doesNotMatch(JSON.stringify(r), /SECRET-SALT/);
    rpc.answers.set('session.get', { ...SESSION, cacheSalt: 'SECRET-SALT' });
    const s = await client.callTool({ name: 'window_status', arguments: { session_id: 's1' } });
    assert.equal((s.structuredContent as { kind: string }).kind, 'session');
    assert.doesNotMatch(JSON.stringify(s), /SECRET-SALT/);
  });

  it('window_list maps sort_by/sort_order and pages', async () => {
    rpc.answers.set('window.list', { windows: [WINDOW], total: 3, limit: 1, offset: 0 });
    const r = await client.callTool({
      name: 'window_list',
      arguments: { sort_by: 'token_count', sort_order: 'asc', limit: 1, tags: ['t1'], session_id: 's1' },
    });
    assert.deepEqual(rpc.last(), {
      method: 'window.list',
      params: { tags: ['t1'], session: 's1', sort: 'tokens', order: 'asc', limit: 1 },
      readOnly: true,
    });
    assert.match(text(r), /Windows 1-1 of 3:\n- w1: 1,234 tokens/);
    assert.match(text(r), /2 more: call again with offset 1/);
  });

  it('auto_freeze_config reads with no arguments and writes only what is given', async () => {
    rpc.answers.set('autofreeze.get', POLICY_VIEW);
    rpc.answers.set('autofreeze.set', { ...POLICY_VIEW, policy: { ...POLICY_VIEW.policy, enabled: true } });
    const read = await client.callTool({ name: 'auto_freeze_config', arguments: {} });
    assert.equal(rpc.last().method, 'autofreeze.get');
    assert.match(text(read), /Auto-freeze is OFF/);
    const set = await client.callTool({
      name: 'auto_freeze_config',
      arguments: { enabled: true, token_count_threshold: 0, cooldown_seconds: 5 },
    });
    assert.deepEqual(rpc.last(), {
      method: 'autofreeze.set',
      params: { enabled: true, maxTokens: null, cooldownSeconds: 5 },
      readOnly: false,
    });
    assert.match(text(set), /^Updated\. Auto-freeze is ON/);
    const bad = await client.callTool({ name: 'auto_freeze_config', arguments: { token_threshold: 1.5 } });
    assert.equal(bad.isError, true);
  });

  it('the remaining tools call one method each', async () => {
    rpc.answers.set('window.thaw', {
      name: 'w1',
      session: 'thaw-1',
      tokens: 1234,
      warmed: true,
      cachedTokens: 1200,
      recomputedTokens: 34,
      maxCacheableTokens: 1216,
      efficiency: 0.987,
      ttftMs: 3.2,
      engineMs: 3,
      durationMs: 9,
      residency: 'ready',
      residencyByTier: null,
      warnings: [],
    });
    rpc.answers.set('window.clone', { ...WINDOW, name: 'w2', parent: 'w1' });
    rpc.answers.set('window.delete', {
      deleted: ['w1', 'w2'],
      chunksFreed: 5,
      bytesFreed: 4096,
      lmcacheCleared: 1,
      warnings: [],
    });
    rpc.answers.set('session.list', { sessions: [SESSION], total: 1 });
    rpc.answers.set('cache.stats', {
      registry: { windows: 1, chunks: 5, bytesStored: 4096, tokensStored: 1234 },
      engine: {
        reachable: true,
        kind: 'vllm',
        kvUsage: 0.1,
        prefixCacheQueries: 10,
        prefixCacheHits: 8,
        externalPrefixCacheHits: 2,
        hitRate: 0.8,
        error: null,
      },
      thaws: { count: 1, cachedTokens: 1200, recomputedTokens: 34 },
    });
    rpc.answers.set('health.check', {
      status: 'ok',
      version: '0.1.0',
      uptimeSeconds: 5,
      components: [{ name: 'registry', status: 'ok', message: '', latencyMs: 0.4 }],
    });
    const cases: [string, Record<string, unknown>, string, unknown, RegExp][] = [
      [
        'window_thaw',
        { window_name: 'w1', new_session_id: 'thaw-1', warm_cache: true },
        'window.thaw',
        { name: 'w1', newSession: 'thaw-1', warm: true },
        /into new session "thaw-1".*1,200 of 1,234/,
      ],
      [
        'window_clone',
        { source_window: 'w1', new_window_name: 'w2' },
        'window.clone',
        { name: 'w1', newName: 'w2' },
        /Cloned "w1" as "w2"/,
      ],
      [
        'window_delete',
        { window_name: 'w1', cascade: true },
        'window.delete',
        { name: 'w1', cascade: true },
        /Deleted 2 windows: "w1", "w2"/,
      ],
      [
        'session_list',
        { state_filter: 'active' },
        'session.list',
        { limit: 20, state: 'active' },
        /1 of 1 sessions:\n- s1: active/,
      ],
      ['cache_stats', {}, 'cache.stats', {}, /prefix-cache hit rate 80%/],
      ['health_check', { component: 'registry' }, 'health.check', { component: 'registry' }, /is OK/],
    ];
    for (const [tool, args, method, params, re] of cases) {
      const r = await client.callTool({ name: tool, arguments: args });
      assert.equal(r.isError, undefined, `${tool}: ${text(r)}`);
      assert.equal(rpc.last().method, method);
      assert.deepEqual(rpc.last().params, params, tool);
      assert.match(text(r), re, tool);
      assert.ok(r.structuredContent, `${tool} has structured content`);
    }
  });

  it('lists the three JSON resources and reads them through the same calls', async () => {
    const { resources } = await client.listResources();
    assert.deepEqual(resources.map((r) => r.uri).sort(), ['cwm://cache-stats', 'cwm://sessions', 'cwm://windows']);
    for (const r of resources) assert.equal(r.mimeType, 'application/json');
    rpc.answers.set('window.list', {
      windows: [{ ...WINDOW, cacheSalt: 'SECRET-SALT' }],
      total: 1,
      limit: 100,
      offset: 0,
    });
    const read = await client.readResource({ uri: 'cwm://windows' });
    const first = read.contents[0] as { text: string; mimeType: string };
    assert.equal(JSON.parse(first.text).windows[0].name, 'w1');
    assert.doesNotMatch(first.text, /SECRET-SALT/);
    rpc.answers.set('session.list', new CwmError('NOT_RUNNING', 'cwmd is not running', { hint: 'cwm daemon start' }));
    await assert.rejects(
      client.readResource({ uri: 'cwm://sessions' }),
      /cwmd is not running \(hint: cwm daemon start\)/,
    );
  });
});
