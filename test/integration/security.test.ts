import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import type { CwmClient } from '../../client/rpc-client.js';
import { bearerOk } from '../../daemon/gateway/auth.js';
import { isCwmError } from '../../daemon/protocol/index.js';
import { Registry } from '../../daemon/registry/db.js';
import { AuditLog } from '../../daemon/services/audit.js';
import { conversation } from '../helpers/conversation.js';
import { cwm, type DaemonHandle, startDaemon, tempDir } from '../helpers/daemon.js';
import { type Simulator, startSimulator } from '../sim/index.js';

const MODEL = 'sim/llama-3-8b-instruct';
const TOKEN = 'a-gateway-token-of-32-characters';

/** Everything a client, a CLI user or a log reader can see, gathered to search for salts. */
class Transcript {
  parts: { where: string; text: string }[] = [];
  add(where: string, v: unknown): void {
    this.parts.push({ where, text: typeof v === 'string' ? v : JSON.stringify(v) });
  }
  find(secret: string): string[] {
    return this.parts.filter((p) => p.text.includes(secret)).map((p) => p.where);
  }
}

describe('security: salts, audit, gateway token, paths', () => {
  let sim: Simulator;
  let d: DaemonHandle;
  let c: CwmClient;
  let gw: string;
  const seen = new Transcript();

  before(async () => {
    sim = await startSimulator({ lmcacheCpuChunks: 256, prefillUsPerToken: 2 });
    d = await startDaemon({
      engineUrl: sim.url,
      gateway: '127.0.0.1:0',
      env: {
        CWM_LMCACHE_URL: sim.lmcacheUrl,
        CWM_GATEWAY_TOKEN: TOKEN,
        CWM_LOG_LEVEL: 'trace',
        CWM_AUTOFREEZE: 'false',
      },
    });
    c = await d.client();
    gw = (await c.call('daemon.status')).gateway?.url as string;
  });

  after(async () => {
    c?.close();
    await d?.stop();
    await sim?.close();
  });

  const call = async <T>(where: string, p: Promise<T>): Promise<T> => {
    const r = await p;
    seen.add(where, r);
    return r;
  };

  it('never lets a salt out unless asked explicitly: RPC results, CLI output, gateway answers, logs, bundles', async () => {
    // a session through the gateway (streaming and not), one over RPC
    const chat = async (session: string, stream: boolean) => {
      const res = await fetch(`${gw}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}`, 'x-cwm-session': session },
        body: JSON.stringify({ model: MODEL, messages: conversation(900, 5), max_tokens: 8, stream }),
      });
      assert.equal(res.status, 200);
      seen.add(`gateway ${stream ? 'stream' : 'json'} body`, await res.text());
      seen.add('gateway headers', [...res.headers.entries()]);
    };
    await chat('gw-1', false);
    await chat('gw-2', true);
    await call(
      'session.record',
      c.call('session.record', { session: 'rpc-1', model: MODEL, messages: conversation(700, 9) }),
    );
    await call('freeze', c.call('window.freeze', { session: 'gw-1', name: 'sec-a', tags: ['sec'] }));
    await call('freeze', c.call('window.freeze', { session: 'rpc-1', name: 'sec-b' }));
    await call('clone', c.call('window.clone', { name: 'sec-a', newName: 'sec-a2' }));
    await call('thaw', c.call('window.thaw', { name: 'sec-b', newSession: 'rpc-1-thawed' }));
    await call('window.list', c.call('window.list', { limit: 100 }));
    for (const name of ['sec-a', 'sec-a2', 'sec-b']) {
      await call(`window.get ${name}`, c.call('window.get', { name, lineage: true, messages: true, tokens: true }));
    }
    for (const session of ['gw-1', 'gw-2', 'rpc-1', 'rpc-1-thawed']) {
      await call(`session.get ${session}`, c.call('session.get', { session, messages: true }));
    }
    await call('session.list', c.call('session.list', {}));
    await call('daemon.status', c.call('daemon.status'));
    await call('config.show', c.call('config.show'));
    await call('cache.stats', c.call('cache.stats'));
    await call('health.check', c.call('health.check', {}));
    await call('autofreeze.get', c.call('autofreeze.get'));
    await call('registry.check', c.call('registry.check', {}));
    await call('audit.list', c.call('audit.list', { limit: 1000 }));
    // errors that carry engine text
    sim.setFaults({ mode: '503', count: 8, paths: ['/v1/completions'] });
    await c
      .call('window.thaw', { name: 'sec-a', newSession: 'err-1' })
      .catch((e: unknown) => seen.add('thaw error', e));
    sim.setFaults({ mode: 'none' });
    const bundle = path.join(d.dir, 'sec-a.cwmb');
    await call('export', c.call('window.export', { name: 'sec-a', file: bundle }));
    seen.add('bundle file', fs.readFileSync(bundle, 'latin1'));
    for (const args of [
      ['status'],
      ['windows'],
      ['show', 'sec-a', '--messages'],
      ['sessions'],
      ['session', 'show', 'gw-1'],
      ['audit'],
      ['config'],
      ['cache'],
      ['doctor', '--registry'],
      ['--json', 'windows'],
      ['--json', 'show', 'sec-a2'],
      ['--json', 'sessions'],
    ]) {
      const r = await cwm(d, args);
      seen.add(`cwm ${args.join(' ')}`, r.stdout + r.stderr);
    }
    const metrics = await fetch(`${gw}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
    seen.add('gateway /metrics', await metrics.text());

    // only now, explicitly: the salts of every lineage in play
    const salts = new Set<string>();
    for (const name of ['sec-a', 'sec-a2', 'sec-b']) {
      salts.add((await c.call('window.get', { name, salt: true })).cacheSalt as string);
    }
    assert.equal(salts.size, 2, 'a clone shares its parent’s lineage; another session has its own');
    const gwSalt = (sim.requests(20, { path: '/v1/chat/completions' })[0]?.body as { cache_salt?: string } | undefined)
      ?.cache_salt;
    assert.ok(gwSalt, 'the engine got a salt from the gateway');
    salts.add(gwSalt);
    seen.add('daemon log', fs.readFileSync(d.logFile, 'utf8'));
    for (const salt of salts) {
      assert.ok(salt.length >= 32);
      assert.deepEqual(seen.find(salt), [], `the salt ${salt.slice(0, 6)}… leaked`);
    }
    // the explicit reads are audited, and the CLI prints the salt only with --show-salt
    const reads = await c.call('audit.list', { action: 'window.salt-read', limit: 100 });
    assert.ok(reads.events.length >= 3);
    const shown = await cwm(d, ['show', 'sec-a', '--show-salt']);
    assert.ok([...salts].some((s) => shown.stdout.includes(s)));
  });

  it('audits every destructive action, with its actor and target, in the same batch as the change', async () => {
    await c.call('window.clone', { name: 'sec-a2', newName: 'sec-a3' });
    const del = await c.call('window.delete', { name: 'sec-a', cascade: true });
    assert.deepEqual([...del.deleted].sort(), ['sec-a', 'sec-a2', 'sec-a3']);
    await c.call('session.end', { session: 'gw-2' });
    await c.call('autofreeze.set', { threshold: 0.7 });
    const imported = await c.call('window.import', { file: path.join(d.dir, 'sec-a.cwmb'), name: 'sec-imported' });
    const r = await cwm(d, ['delete', 'sec-imported', '--yes']);
    assert.equal(r.code, 0, r.stderr);
    const events = (await c.call('audit.list', { limit: 1000 })).events;
    const has = (action: string, target: string | null, actor = 'rpc') =>
      assert.ok(
        events.some((e) => e.action === action && e.target === target && e.actor === actor && e.outcome === 'ok'),
        `${action} ${target} by ${actor} is audited`,
      );
    for (const w of ['sec-a', 'sec-a2', 'sec-a3', imported.name]) has('window.delete', w);
    assert.equal(events.find((e) => e.action === 'window.delete' && e.target === 'sec-a2')?.details.cascade, true);
    has('session.end', 'gw-2');
    has('autofreeze.set', null);
    has('window.import', 'sec-imported');
    has('window.export', 'sec-a');
    has('window.freeze', 'sec-b');
    has('window.clone', 'sec-a3');
    has('window.thaw', 'sec-b');
    has('session.create', 'gw-1', 'gateway');
    has('daemon.start', null, 'daemon');
  });

  it('audits a registry repair (it deletes and rewrites records)', async () => {
    // an orphan refcount no window uses: repair removes it, and says so in the trail
    c.close();
    await d.stop();
    const reg = await Registry.open(path.join(d.dataDir, 'registry'), pino({ level: 'silent' }));
    await reg.batch([{ type: 'put', sublevel: reg.refs, key: 'orphan-chunk', value: { n: 1, bytes: 1, tokens: 1 } }]);
    await reg.close();
    d = await d.restart();
    c = await d.client();
    const ev = (await c.call('audit.list', { action: 'registry.repair' })).events;
    assert.equal(ev[0]?.actor, 'daemon');
    assert.deepEqual(ev[0]?.details.kinds, ['ref-orphan']);
    gw = (await c.call('daemon.status')).gateway?.url as string;
  });

  it('the gateway token: compared in constant time, required everywhere, never forwarded', async () => {
    // the comparison: both sides hashed to 32 bytes, then timingSafeEqual (daemon/gateway/auth.ts)
    assert.equal(bearerOk(TOKEN, `Bearer ${TOKEN}`), true);
    assert.equal(bearerOk(TOKEN, `bearer  ${TOKEN}`), true);
    for (const wrong of [
      undefined,
      '',
      'Bearer',
      'Bearer ',
      `Bearer ${TOKEN}x`,
      `Bearer ${TOKEN.slice(0, -1)}`,
      `Basic ${TOKEN}`,
      TOKEN,
      `Bearer ${TOKEN} extra`,
      `Bearer ${'a'.repeat(10_000)}`,
    ]) {
      assert.equal(bearerOk(TOKEN, wrong), false, String(wrong).slice(0, 40));
    }
    assert.equal(bearerOk(null, undefined), true, 'no token configured: open (loopback only)');
    const src = fs.readFileSync(new URL('../../daemon/gateway/auth.ts', import.meta.url), 'utf8');
    assert.match(src, /timingSafeEqual\(digest\(given\), digest\(expected\)\)/);
    // over HTTP: every route wants it, including /metrics and a query-string token
    for (const [p, method] of [
      ['/v1/models', 'GET'],
      ['/v1/chat/completions', 'POST'],
      ['/metrics', 'GET'],
      [`/v1/models?token=${TOKEN}`, 'GET'],
      ['/s/x/v1/models', 'GET'],
    ] as const) {
      const res = await fetch(`${gw}${p}`, { method, headers: { authorization: 'Bearer wrong-token-wrong-token' } });
      assert.equal(res.status, 401, p);
      assert.equal(res.headers.get('www-authenticate'), 'Bearer');
      await res.text();
    }
    const ok = await fetch(`${gw}/v1/models`, { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(ok.status, 200);
    await ok.text();
  });

  it('no path built from user input escapes its directory', async () => {
    const expectBad = async (p: Promise<unknown>, re: RegExp) =>
      assert.rejects(p, (e: unknown) => isCwmError(e) && e.code === 'INVALID_PARAMS' && re.test(e.message));
    // names never become paths, and cannot look like one
    for (const name of ['../x', 'a/b', '..', '.hidden', '/etc/passwd', 'a\\b', 'x\u0000y']) {
      await expectBad(c.call('window.get', { name }), /window names are/);
      await expectBad(c.call('window.freeze', { session: 'rpc-1', name }), /window names are/);
      await expectBad(c.call('session.get', { session: name }), /session ids are/);
    }
    const traversal = await fetch(`${gw}/s/..%2F..%2Fetc/v1/models`, { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(traversal.status, 400);
    await traversal.text();
    // bundle paths: absolute only (the CLI resolves them for its user), no NUL, no devices or FIFOs, no clobbering
    await expectBad(c.call('window.export', { name: 'sec-b', file: 'relative/x.cwmb' }), /must be absolute/);
    await expectBad(c.call('window.export', { name: 'sec-b', file: `${d.dir}/x\u0000.cwmb` }), /NUL/);
    await assert.rejects(c.call('window.import', { file: '/dev/zero' }), /not a regular file/);
    const fifo = path.join(d.dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    await assert.rejects(c.call('window.import', { file: fifo }), /not a regular file/);
    const victim = path.join(d.dir, 'precious.txt');
    fs.writeFileSync(victim, 'keep me');
    await assert.rejects(c.call('window.export', { name: 'sec-b', file: victim }), /never overwrites/);
    assert.equal(fs.readFileSync(victim, 'utf8'), 'keep me');
    // a symlink planted at the target is not followed either (link() refuses an existing name)
    const planted = path.join(d.dir, 'planted.cwmb');
    fs.symlinkSync(victim, planted);
    await assert.rejects(c.call('window.export', { name: 'sec-b', file: planted }), /never overwrites/);
    assert.equal(fs.readFileSync(victim, 'utf8'), 'keep me');
  });
});

describe('security: a hostile engine answer', () => {
  let engine: http.Server;
  let d: DaemonHandle;
  let c: CwmClient;
  let tokens: unknown = [1, 2, 3];
  let completionsFail = false;
  before(async () => {
    engine = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.setHeader('content-type', 'application/json');
        if (req.url === '/v1/models')
          return res.end(JSON.stringify({ data: [{ id: 'm', max_model_len: 'lots' }, { id: 7 }] }));
        if (req.url === '/version') return res.end(JSON.stringify({ version: '\u001b]0;owned\u0007\u001b[2J1.0' }));
        if (req.url === '/tokenize') return res.end(JSON.stringify({ tokens }));
        if (req.url === '/v1/completions' && !completionsFail) {
          return res.end(JSON.stringify({ usage: { prompt_tokens: 3, prompt_tokens_details: { cached_tokens: -5 } } }));
        }
        res.statusCode = 500;
        res.end(JSON.stringify({ error: { message: '\u001b[31mevil\u001b[0m \u001b]8;;http://x\u0007link' } }));
      });
    });
    await new Promise<void>((r) => engine.listen(0, '127.0.0.1', r));
    d = await startDaemon({
      engineUrl: `http://127.0.0.1:${(engine.address() as AddressInfo).port}`,
      env: { CWM_AUTOFREEZE: 'false' },
      config: { engine: { retries: 0 } },
    });
    c = await d.client();
  });
  after(async () => {
    c?.close();
    await d?.stop();
    engine?.close();
  });

  it('token ids that are not token ids are refused, never stored as other ids', async () => {
    for (const bad of [[1.5, 2], [-3], ['x'], [2 ** 40], { a: 1 }, null, 'str']) {
      tokens = bad;
      const s = `bad-${Math.random().toString(36).slice(2, 8)}`;
      await c.call('session.record', { session: s, model: 'm', messages: [{ role: 'user', content: 'hi' }] });
      await assert.rejects(c.call('window.freeze', { session: s, name: `w-${s}` }), (e: unknown) => {
        assert.ok(isCwmError(e));
        assert.equal(e.code, 'ENGINE_ERROR', e.message);
        assert.match(e.message, /did not answer with a list of token ids/);
        return true;
      });
    }
    assert.equal((await c.call('daemon.status')).counts.windows, 0);
    tokens = [1, 2, 3];
    await c.call('session.record', { session: 'good', model: 'm', messages: [{ role: 'user', content: 'hi' }] });
    const f = await c.call('window.freeze', { session: 'good', name: 'good' });
    assert.equal(f.tokens, 3);
    const w = await c.call('window.get', { name: 'good' });
    assert.equal(w.fingerprint.maxModelLen, null, 'a length that is not a number is unknown, not stored');
    const version = w.fingerprint.engineVersion ?? '';
    assert.ok(!version.includes('\u001b') && !version.includes('\u0007'), 'no escape sequences from the engine');
    assert.deepEqual((await c.call('registry.check', {})).problems, []);
  });

  it('engine error text is shown without control characters (no terminal escapes reach the CLI)', async () => {
    completionsFail = true;
    try {
      const r = await cwm(d, ['thaw', 'good']);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /evil/);
      assert.ok(!r.stderr.includes('\u001b') && !r.stderr.includes('\u0007'), JSON.stringify(r.stderr));
    } finally {
      completionsFail = false;
    }
  });
});

describe('security: free text reaches the terminal inert', () => {
  // What a hostile MCP client (or a pasted conversation) can put in free text: a title change, colour, a hyperlink,
  // a screen clear, a carriage return that overwrites the line, a one-character C1 CSI, a right-to-left override.
  const EVIL =
    'ok\u001b]0;owned\u0007\u001b[31mred\u001b[0m\u001b]8;;http://x\u0007link\u001b[2J\rfake\u009b31m\u202eabc';
  // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
  const UNSAFE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;
  let sim: Simulator;
  let d: DaemonHandle;
  let c: CwmClient;
  before(async () => {
    sim = await startSimulator({ requestLogSize: 0 });
    d = await startDaemon({ engineUrl: sim.url, env: { CWM_AUTOFREEZE: 'false' } });
    c = await d.client();
    await c.call('session.record', {
      session: 'evil',
      model: MODEL,
      messages: [{ role: 'user', content: `say ${EVIL}` }],
    });
    await c.call('window.freeze', { session: 'evil', name: 'evil-win', description: EVIL, tags: ['t'] });
  });
  after(async () => {
    c?.close();
    await d?.stop();
    await sim?.close();
  });

  it('tables, key-value lists, messages and JSON show control characters as escapes; JSON still parses back exact', async () => {
    for (const args of [
      ['windows'],
      ['windows', '--search', 'ok'],
      ['show', 'evil-win', '--messages'],
      ['sessions'],
      ['session', 'show', 'evil', '--messages'],
    ]) {
      const r = await cwm(d, args);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(
        !UNSAFE.test(r.stdout),
        `cwm ${args.join(' ')} printed a raw control character: ${JSON.stringify(r.stdout)}`,
      );
      if (args[0] !== 'sessions') assert.match(r.stdout, /\\u001b\]0;owned/, `cwm ${args.join(' ')} shows the escape`);
    }
    const json = await cwm(d, ['show', 'evil-win', '--messages', '--json']);
    assert.ok(!UNSAFE.test(json.stdout), JSON.stringify(json.stdout));
    const w = JSON.parse(json.stdout) as { description: string; messages: { content: string }[] };
    assert.equal(w.description, EVIL, 'the JSON value is the exact description');
    assert.equal(w.messages[0]?.content, `say ${EVIL}`);
    // errors that echo user input: a name the daemon refuses
    const bad = await cwm(d, ['show', 'no\u001b[2Jsuch']);
    assert.notEqual(bad.code, 0);
    assert.ok(!UNSAFE.test(bad.stderr), JSON.stringify(bad.stderr));
  });
});

describe('security: the audit trail is bounded', () => {
  it('prunes the oldest events beyond its limit even when every event rides in a change batch', async () => {
    const dir = tempDir('cwm-audit');
    const reg = await Registry.open(path.join(dir, 'registry'), pino({ level: 'silent' }));
    try {
      const audit = new AuditLog(reg, 500);
      for (let i = 0; i < 3000; i++) {
        await reg.batch([audit.op({ action: 'window.freeze', actor: 'rpc', target: `w${i}` })]);
        await audit.settled();
      }
      let n = 0;
      for await (const _ of reg.audit.keys()) n++;
      assert.ok(n <= 500 + 1000, `${n} events kept`);
      const newest = await audit.list({ limit: 1 });
      assert.equal(newest[0]?.target, 'w2999', 'the newest survive');
    } finally {
      await reg.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
