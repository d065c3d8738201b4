import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CwmClient } from '../../client/rpc-client.js';
import { isCwmError, PROTOCOL_VERSION } from '../../daemon/protocol/index.js';
import { CWM, CWMD, cwm, type DaemonHandle, run, startDaemon, tempDir } from '../helpers/daemon.js';

/** Send raw bytes on a fresh connection; collect every line until the daemon closes it (or timeout). */
function raw(socket: string, payload: Buffer | string, waitMs = 3000): Promise<{ lines: unknown[]; closed: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect(socket);
    let buf = '';
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ lines: parse(), closed: false });
    }, waitMs);
    const parse = () =>
      buf
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => JSON.parse(l) as unknown);
    s.on('connect', () => s.write(payload));
    s.on('data', (d) => {
      buf += d.toString('utf8');
    });
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ lines: parse(), closed: true });
    });
    s.on('error', () => {});
  });
}

type RpcError = { id: unknown; error: { code: number; message: string; data?: { name?: string; hint?: string } } };

describe('cwmd lifecycle and transport', () => {
  let d: DaemonHandle;
  before(async () => {
    d = await startDaemon({ args: ['--max-line-bytes', '65536'] });
  });
  after(async () => {
    await d.stop();
  });

  it('answers hello with version, pid and capabilities', async () => {
    const c = await d.client();
    try {
      assert.equal(c.hello?.protocolVersion, PROTOCOL_VERSION);
      assert.equal(c.hello?.pid, d.proc.pid);
      assert.ok(c.hello?.capabilities.includes('windows'));
      const again = await c.call('daemon.hello', {
        protocolVersion: PROTOCOL_VERSION,
        client: { name: 't', version: '1' },
      });
      assert.equal(again.pid, d.proc.pid);
    } finally {
      c.close();
    }
  });

  it('refuses another protocol version, naming both', async () => {
    const c = await CwmClient.connect({ socket: d.socket, hello: false });
    try {
      await assert.rejects(c.call('daemon.hello', { protocolVersion: PROTOCOL_VERSION + 1 }), (e: unknown) => {
        assert.ok(isCwmError(e));
        assert.equal(e.code, 'PROTOCOL_MISMATCH');
        assert.match(e.message, new RegExp(`version ${PROTOCOL_VERSION + 1}.*version ${PROTOCOL_VERSION}`));
        assert.match(e.hint ?? '', /cwm daemon restart/);
        return true;
      });
    } finally {
      c.close();
    }
  });

  it('reports status with paths, counts and registry size', async () => {
    const c = await d.client();
    try {
      const s = await c.call('daemon.status');
      assert.equal(s.pid, d.proc.pid);
      assert.equal(s.socket, d.socket);
      assert.equal(s.dataDir, d.dataDir);
      assert.deepEqual(s.counts, { sessions: 0, windows: 0, chunks: 0 });
      assert.ok(s.registryBytes > 0);
      assert.ok(s.uptimeSeconds >= 0);
    } finally {
      c.close();
    }
  });

  it('keeps the socket private: directory 0700, socket 0600', () => {
    assert.equal(fs.statSync(path.dirname(d.socket)).mode & 0o777, 0o700);
    assert.equal(fs.statSync(d.socket).mode & 0o777, 0o600);
    assert.equal(fs.statSync(d.dataDir).mode & 0o777, 0o700);
    assert.equal(fs.statSync(path.join(d.dataDir, 'secret')).mode & 0o777, 0o600);
  });

  it('serves many requests in flight on one connection', async () => {
    const c = await d.client();
    try {
      const results = await Promise.all(
        Array.from({ length: 200 }, () => c.call('daemon.hello', { protocolVersion: PROTOCOL_VERSION })),
      );
      assert.equal(results.length, 200);
      assert.ok(results.every((r) => r.pid === d.proc.pid));
    } finally {
      c.close();
    }
  });

  it('answers an unknown method with -32601 and a hint, and bad params with -32602 naming the field', async () => {
    const r = await raw(
      d.socket,
      `${JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'window.nope' })}\n${JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'window.freeze', params: { session: 's', name: '../x' } })}\n${JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'window.get', params: [1] })}\n`,
      800,
    );
    const byId = new Map((r.lines as RpcError[]).map((l) => [l.id, l]));
    assert.equal(byId.get(1)?.error.code, -32601);
    assert.match(byId.get(1)?.error.data?.hint ?? '', /window\.freeze/);
    assert.equal(byId.get(2)?.error.code, -32602);
    assert.match(byId.get(2)?.error.message ?? '', /window names are 1-128 characters/);
    assert.equal(byId.get(3)?.error.code, -32602);
    assert.equal(r.closed, false, 'a well-framed bad request keeps the connection');
  });

  it('never sends a notification a reply, and answers batches', async () => {
    const r = await raw(
      d.socket,
      `${JSON.stringify({ jsonrpc: '2.0', method: 'daemon.hello', params: { protocolVersion: PROTOCOL_VERSION } })}\n${JSON.stringify(
        [
          { jsonrpc: '2.0', id: 'a', method: 'daemon.hello', params: { protocolVersion: PROTOCOL_VERSION } },
          { jsonrpc: '2.0', id: 'b', method: 'nope' },
        ],
      )}\n`,
      800,
    );
    assert.equal(r.lines.length, 1);
    const batch = r.lines[0] as { id: string; result?: unknown; error?: { code: number } }[];
    assert.equal(batch.length, 2);
    assert.ok(batch.find((x) => x.id === 'a')?.result);
    assert.equal(batch.find((x) => x.id === 'b')?.error?.code, -32601);
  });

  it('answers unparsable, non-UTF-8 and oversized frames with errors and closes only that connection', async () => {
    const good = await d.client();
    try {
      const garbage = await raw(d.socket, '{"jsonrpc": "2.0", "id": 1, "method": \n');
      assert.equal((garbage.lines[0] as RpcError).error.code, -32700);
      assert.equal(garbage.closed, true);
      const utf8 = await raw(
        d.socket,
        Buffer.concat([Buffer.from('{"a":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}\n')]),
      );
      assert.equal((utf8.lines[0] as RpcError).error.code, -32700);
      assert.match((utf8.lines[0] as RpcError).error.message, /UTF-8/);
      const huge = await raw(
        d.socket,
        `{"jsonrpc":"2.0","id":1,"method":"daemon.hello","params":{"x":"${'a'.repeat(100_000)}"}}\n`,
      );
      const e = huge.lines[0] as RpcError;
      assert.equal(e.error.code, -32600);
      assert.equal(e.error.data?.name, 'FRAME_TOO_LARGE');
      assert.match(e.error.message, /65536-byte line limit/);
      assert.equal(huge.closed, true);
      const notRpc = await raw(d.socket, '42\n"str"\n{}\n', 800);
      assert.deepEqual(
        (notRpc.lines as RpcError[]).map((l) => l.error.code),
        [-32600, -32600, -32600],
      );
      // the well-behaved client on its own connection is untouched
      const s = await good.call('daemon.status');
      assert.equal(s.pid, d.proc.pid);
    } finally {
      good.close();
    }
  });

  it('the CLI prints status as a table and as JSON', async () => {
    const human = await cwm(d, ['status']);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, new RegExp(`running \\(pid ${d.proc.pid}\\)`));
    const json = await cwm(d, ['--json', 'daemon', 'status']);
    assert.equal(json.code, 0);
    assert.equal(JSON.parse(json.stdout).pid, d.proc.pid);
  });

  it('refuses a second daemon on the same socket and names the running one', async () => {
    const r = await run(CWMD, ['--quiet'], d.env);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      new RegExp(
        `cwmd is already running \\(pid ${d.proc.pid}\\) on ${d.socket.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`,
      ),
    );
    const c = await d.client();
    c.close();
  });

  it('a reader that closes the pipe early (cwm status | head) ends the CLI quietly with exit 0', async () => {
    // The read end is closed before the CLI writes anything, so every write it makes meets EPIPE.
    const p = spawn(process.execPath, [CWM, 'status'], { env: d.env, stdio: ['ignore', 'pipe', 'pipe'] });
    p.stdout.destroy();
    let stderr = '';
    p.stderr.on('data', (b: Buffer) => {
      stderr += b.toString();
    });
    const code = await new Promise<number | null>((resolve) => p.on('close', (c) => resolve(c)));
    assert.equal(code, 0, stderr);
    assert.doesNotMatch(stderr, /EPIPE|Unhandled/);
  });

  it('gives usage errors exit code 2', async () => {
    const r = await cwm(d, ['freeze']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /missing required argument/);
  });
});

describe('cwmd start, stop, restart', () => {
  it('the CLI says the daemon is not running, with the hint, and exits 1', async () => {
    const dir = tempDir();
    const env = { ...process.env, CWM_SOCKET: path.join(dir, 'run', 'cwmd.sock') };
    for (const args of [['status'], ['windows'], ['--json', 'sessions']]) {
      const r = await cwm({ env }, args);
      assert.equal(r.code, 1, args.join(' '));
      assert.match(r.stderr, /cwmd is not running on .*cwmd\.sock/);
    }
    const human = await cwm({ env }, ['windows']);
    assert.match(human.stderr, /hint: start it with `cwm daemon start`/);
    const json = await cwm({ env }, ['--json', 'windows']);
    assert.equal(JSON.parse(json.stderr).error.code, 'NOT_RUNNING');
  });

  it('cwm daemon start runs it in the background; stop shuts it down gracefully and removes the socket', async () => {
    const dir = tempDir();
    const env = {
      ...process.env,
      CWM_SOCKET: path.join(dir, 'run', 'cwmd.sock'),
      CWM_DATA_DIR: path.join(dir, 'data'),
      CWM_CONFIG: path.join(dir, 'config.json'),
      CWM_LOG_FILE: path.join(dir, 'cwmd.log'),
      CWM_ENGINE_URL: 'http://127.0.0.1:9',
      CWM_GATEWAY: 'off',
    };
    const start = await cwm({ env }, ['--json', 'daemon', 'start']);
    assert.equal(start.code, 0, start.stderr);
    const info = JSON.parse(start.stdout) as { pid: number; alreadyRunning: boolean };
    assert.equal(info.alreadyRunning, false);
    const again = await cwm({ env }, ['daemon', 'start']);
    assert.match(again.stdout, new RegExp(`already running \\(pid ${info.pid}\\)`));
    const stop = await cwm({ env }, ['daemon', 'stop']);
    assert.equal(stop.code, 0, stop.stderr);
    assert.match(stop.stdout, /stopped/);
    assert.equal(fs.existsSync(env.CWM_SOCKET), false);
    const log = fs.readFileSync(env.CWM_LOG_FILE, 'utf8');
    assert.match(log, /"reason":"cwm daemon stop".*"msg":"cwmd stopped"/);
  });

  it('SIGTERM finishes cleanly; a SIGKILLed daemon leaves a stale socket that the next start removes; the registry survives', async () => {
    const d = await startDaemon();
    const c = await d.client();
    await c.call('session.record', {
      session: 'keep-me',
      model: 'm',
      messages: [{ role: 'user', content: 'hello' }],
      usage: { prompt_tokens: 7, completion_tokens: 3, total_tokens: 10 },
    });
    c.close();
    await d.kill('SIGKILL');
    assert.equal(fs.existsSync(d.socket), true, 'SIGKILL leaves the socket file');
    const d2 = await d.restart();
    const c2 = await d2.client();
    try {
      const s = await c2.call('session.get', { session: 'keep-me' });
      assert.equal(s.tokens, 10);
      assert.match(fs.readFileSync(d2.logFile, 'utf8'), /removing stale socket/);
    } finally {
      c2.close();
    }
    assert.equal(await d2.stop(), 0);
    assert.equal(fs.existsSync(d2.socket), false);
    const d3 = await d2.restart();
    const c3 = await d3.client();
    try {
      assert.equal((await c3.call('daemon.status')).counts.sessions, 1);
    } finally {
      c3.close();
      await d3.stop();
    }
  });

  it('daemon.shutdown answers first, then stops with exit 0', async () => {
    const d = await startDaemon();
    const exited = new Promise((resolve) => d.proc.once('exit', (code) => resolve(code)));
    const c = await d.client();
    const r = await c.call('daemon.shutdown', { reason: 'test' });
    assert.deepEqual(r, { stopping: true });
    c.close();
    assert.equal(await exited, 0, d.stderr());
  });

  it('refuses a socket directory that others can write to, and a socket path that is too long', async () => {
    const dir = tempDir();
    const open = path.join(dir, 'open');
    fs.mkdirSync(open, { mode: 0o777 });
    fs.chmodSync(open, 0o777);
    const env = {
      ...process.env,
      CWM_DATA_DIR: path.join(dir, 'data'),
      CWM_LOG_FILE: path.join(dir, 'log'),
      CWM_CONFIG: path.join(dir, 'c.json'),
    };
    const r = await run(CWMD, ['--quiet', '--socket', path.join(open, 'cwmd.sock')], env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /writable by group or others \(mode 777\)/);
    assert.match(r.stderr, /hint: run `chmod 700/);
    const long = await run(CWMD, ['--quiet', '--socket', path.join(dir, 'x'.repeat(120), 'cwmd.sock')], env);
    assert.equal(long.code, 1);
    assert.match(long.stderr, /longer than this OS allows/);
  });

  it('refuses an invalid config at start, naming the key (exit 2)', async () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'c.json'), JSON.stringify({ autoFreeze: { threshold: 2 } }));
    const r = await run(CWMD, ['--quiet', '--socket', path.join(dir, 'r', 's.sock')], {
      ...process.env,
      CWM_CONFIG: path.join(dir, 'c.json'),
      CWM_DATA_DIR: path.join(dir, 'data'),
      CWM_LOG_FILE: path.join(dir, 'log'),
    });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /autoFreeze\.threshold/);
  });
});
