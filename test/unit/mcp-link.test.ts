import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { CwmError, isCwmError, PROTOCOL_VERSION } from '../../daemon/protocol/index.js';
import { DaemonLink, type LinkOptions, type Starter } from '../../mcp-shim/link.js';
import { tempDir } from '../helpers/daemon.js';

type Msg = { id: number; method: string; params?: unknown };
type Reply = { result: unknown } | { error: { code: number; message: string; data?: unknown } } | 'close';

/** A fake cwmd speaking NDJSON JSON-RPC on a Unix socket: hello and every method are scripted. */
class FakeDaemon {
  readonly conns = new Set<net.Socket>();
  readonly seen: string[] = [];
  private server: net.Server | null = null;
  constructor(
    readonly socket: string,
    readonly reply: (m: Msg, connNo: number) => Reply,
  ) {}

  private connCount = 0;

  async listen(): Promise<this> {
    fs.rmSync(this.socket, { force: true });
    this.server = net.createServer((sock) => {
      const n = ++this.connCount;
      this.conns.add(sock);
      sock.on('close', () => this.conns.delete(sock));
      sock.on('error', () => {});
      let buf = '';
      sock.on('data', (d) => {
        buf += d.toString('utf8');
        for (let nl = buf.indexOf('\n'); nl !== -1; nl = buf.indexOf('\n')) {
          const m = JSON.parse(buf.slice(0, nl)) as Msg;
          buf = buf.slice(nl + 1);
          this.seen.push(m.method);
          const r = this.reply(m, n);
          if (r === 'close') sock.destroy();
          else sock.write(`${JSON.stringify({ jsonrpc: '2.0', id: m.id, ...r })}\n`);
        }
      });
    });
    const srv = this.server;
    await new Promise<void>((resolve) => srv.listen(this.socket, resolve));
    return this;
  }

  /** Stop like a restarting daemon: drop every connection and the socket. */
  async stop(): Promise<void> {
    for (const c of this.conns) c.destroy();
    const srv = this.server;
    if (srv) await new Promise<void>((resolve) => srv.close(() => resolve()));
    this.server = null;
  }
}

const HELLO = { result: { protocolVersion: PROTOCOL_VERSION, daemonVersion: '9.9.9', pid: 42, capabilities: [] } };
const LIST = { result: { windows: [], total: 0, limit: 20, offset: 0 } };

function standard(m: Msg): Reply {
  return m.method === 'daemon.hello' ? HELLO : LIST;
}

const log = pino({ level: 'silent' });
const dirs: string[] = [];
function sockPath(): string {
  const d = tempDir('cwm-link');
  dirs.push(d);
  return path.join(d, 'cwmd.sock');
}

function starter(over: Partial<Starter> = {}): Starter & { starts: number } {
  const s = {
    starts: 0,
    async start(): Promise<{ pid: number; via: string }> {
      throw new Error('not expected to start');
    },
    async howToStart(socket: string) {
      return `start it with \`cwm --socket ${socket} daemon start\``;
    },
    ...over,
  };
  return s;
}

function link(socket: string, over: Partial<LinkOptions> = {}): DaemonLink {
  return new DaemonLink({ socket, autostart: true, starter: starter(), log, connectTimeoutMs: 2000, ...over });
}

async function rejection(p: Promise<unknown>): Promise<CwmError> {
  try {
    await p;
  } catch (err) {
    assert.ok(isCwmError(err), `a CwmError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected a rejection');
}

describe('cwm-mcp daemon link', () => {
  after(() => {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  it('an older daemon (it refuses our hello) gets "older" and `cwm daemon restart`', async () => {
    const socket = sockPath();
    const d = await new FakeDaemon(socket, () => ({
      error: {
        code: 1001,
        message: 'protocol mismatch',
        data: { name: 'PROTOCOL_MISMATCH', retryable: false, hint: null, details: { daemonProtocol: 0 } },
      },
    })).listen();
    const l = link(socket);
    const e = await rejection(l.call('window.list', {}, { readOnly: true }));
    assert.equal(e.code, 'PROTOCOL_MISMATCH');
    assert.match(e.message, /cwmd \(protocol 0\) is older than this cwm-mcp .*\(protocol 1\)/);
    assert.match(e.hint ?? '', /cwm daemon restart/);
    l.close();
    await d.stop();
  });

  it('a newer daemon (it answers hello with another version) gets "newer"', async () => {
    const socket = sockPath();
    const d = await new FakeDaemon(socket, (m) =>
      m.method === 'daemon.hello'
        ? { result: { ...HELLO.result, protocolVersion: PROTOCOL_VERSION + 1, daemonVersion: '2.0.0' } }
        : LIST,
    ).listen();
    const l = link(socket);
    const e = await rejection(l.call('window.list', {}, { readOnly: true }));
    assert.equal(e.code, 'PROTOCOL_MISMATCH');
    assert.match(e.message, /cwmd 2\.0\.0 \(protocol 2\) is newer than this cwm-mcp/);
    assert.match(e.hint ?? '', /old cwm-mcp/);
    assert.deepEqual(d.seen, ['daemon.hello'], 'no call is made on a mismatched daemon');
    l.close();
    await d.stop();
  });

  it('with autostart off, a stopped daemon is reported with how to start it, and nothing is started', async () => {
    const socket = sockPath();
    const s = starter({
      start: async () => {
        s.starts++;
        return { pid: 1, via: 'test' };
      },
    });
    const l = link(socket, { autostart: false, starter: s });
    const e = await rejection(l.call('window.list', {}, { readOnly: true }));
    assert.equal(e.code, 'NOT_RUNNING');
    assert.match(e.message, /--no-autostart/);
    assert.equal(e.hint, `start it with \`cwm --socket ${socket} daemon start\`, then call the tool again`);
    assert.equal(s.starts, 0);
    l.close();
  });

  it('starts a stopped daemon once, even for concurrent calls, then uses it', async () => {
    const socket = sockPath();
    let d: FakeDaemon | null = null;
    const s = starter({
      start: async () => {
        s.starts++;
        d = await new FakeDaemon(socket, standard).listen();
        return { pid: 42, via: 'test' };
      },
    });
    const l = link(socket, { starter: s });
    const results = await Promise.all([1, 2, 3].map(() => l.call('window.list', {}, { readOnly: true })));
    assert.equal(results.length, 3);
    assert.equal(s.starts, 1);
    l.close();
    await (d as FakeDaemon | null)?.stop();
  });

  it('when starting fails but another client started it meanwhile, the call goes through', async () => {
    const socket = sockPath();
    let d: FakeDaemon | null = null;
    const s = starter({
      start: async () => {
        d = await new FakeDaemon(socket, standard).listen();
        throw new CwmError('INTERNAL', 'cwmd exited during start (code 1): already running');
      },
    });
    const l = link(socket, { starter: s });
    const r = await l.call('window.list', {}, { readOnly: true });
    assert.equal(r.total, 0);
    l.close();
    await (d as FakeDaemon | null)?.stop();
  });

  it('when starting fails, the error says why and how to start it by hand', async () => {
    const socket = sockPath();
    const s = starter({
      start: async () => {
        throw new CwmError('INTERNAL', 'cwmd exited during start (code 2): bad config', { hint: 'fix config.json' });
      },
    });
    const l = link(socket, { starter: s });
    const e = await rejection(l.call('window.list', {}, { readOnly: true }));
    assert.equal(e.code, 'NOT_RUNNING');
    assert.match(e.message, /could not start it: cwmd exited during start \(code 2\): bad config/);
    assert.match(e.hint ?? '', /daemon start`.*\(fix config\.json\)/);
    l.close();
  });

  it('reconnects after the daemon restarted, also for a mutating call (its request never left)', async () => {
    const socket = sockPath();
    const d1 = await new FakeDaemon(socket, standard).listen();
    const l = link(socket, { autostart: false });
    await l.call('window.list', {}, { readOnly: true });
    await d1.stop();
    const d2 = await new FakeDaemon(socket, (m) =>
      m.method === 'daemon.hello'
        ? HELLO
        : { result: { deleted: ['w'], chunksFreed: 0, bytesFreed: 0, lmcacheCleared: 0, warnings: [] } },
    ).listen();
    // give the client a moment to see the close, as it would between two tool calls
    await new Promise((r) => setTimeout(r, 20));
    const r = await l.call('window.delete', { name: 'w' }, { readOnly: false });
    assert.deepEqual(r.deleted, ['w']);
    assert.deepEqual(d2.seen, ['daemon.hello', 'window.delete']);
    l.close();
    await d2.stop();
  });

  it('a connection cut mid-call is retried for a read-only tool but not for a mutating one', async () => {
    const socket = sockPath();
    // the first connection dies on its first real call; later connections answer
    const d = await new FakeDaemon(socket, (m, conn) =>
      m.method === 'daemon.hello' ? HELLO : conn === 1 ? 'close' : LIST,
    ).listen();
    const l = link(socket, { autostart: false });
    const r = await l.call('window.list', {}, { readOnly: true });
    assert.equal(r.total, 0);
    assert.deepEqual(d.seen, ['daemon.hello', 'window.list', 'daemon.hello', 'window.list']);
    l.close();
    await d.stop();

    const socket2 = sockPath();
    const d2 = await new FakeDaemon(socket2, (m) => (m.method === 'daemon.hello' ? HELLO : 'close')).listen();
    const l2 = link(socket2, { autostart: false });
    const e = await rejection(l2.call('window.freeze', { session: 's', name: 'w' }, { readOnly: false }));
    assert.equal(e.code, 'CONNECTION_LOST');
    assert.match(e.message, /may or may not have finished/);
    assert.deepEqual(d2.seen, ['daemon.hello', 'window.freeze'], 'the freeze was sent once');
    l2.close();
    await d2.stop();
  });
});
