import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import type { CwmClient } from '../../client/rpc-client.js';
import type { EngineBackend, KvFreezeInput } from '../../daemon/backends/types.js';
import type { LoadedConfig } from '../../daemon/config.js';
import { Metrics } from '../../daemon/metrics.js';
import { isCwmError } from '../../daemon/protocol/index.js';
import { Registry } from '../../daemon/registry/db.js';
import { AuditLog } from '../../daemon/services/audit.js';
import { BUNDLE_MAGIC, BundleService } from '../../daemon/services/bundles.js';
import type { ServiceContext } from '../../daemon/services/context.js';
import { SessionService } from '../../daemon/services/sessions.js';
import { WindowService } from '../../daemon/services/windows.js';
import { conversation } from '../helpers/conversation.js';
import { CWM, cwm, type DaemonHandle, startDaemon, tempDir } from '../helpers/daemon.js';
import { type Simulator, startSimulator } from '../sim/index.js';

const MODEL = 'sim/llama-3-8b-instruct';

/** Where each part of a bundle lies, so a test can damage exactly one of them. */
function layout(file: string) {
  const buf = fs.readFileSync(file);
  const manifestStart = BUNDLE_MAGIC.length;
  const manifestEnd = buf.indexOf(0x0a, manifestStart);
  const manifest = JSON.parse(buf.subarray(manifestStart, manifestEnd).toString('utf8'));
  return { buf, manifest, manifestStart, manifestEnd, bodyStart: manifestEnd + 1 };
}

/** Rebuild a bundle from a manifest and body with every checksum recomputed (what a deliberate forger would do). */
function forge(manifest: Record<string, unknown>, body: Buffer): Buffer {
  const head = Buffer.from(`${BUNDLE_MAGIC}${JSON.stringify(manifest)}\n`);
  const content = Buffer.concat([head, body]);
  return Buffer.concat([content, Buffer.from(`SHA256 ${createHash('sha256').update(content).digest('hex')}\n`)]);
}

function runIn(cwd: string, env: NodeJS.ProcessEnv, args: string[]) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const p = spawn(process.execPath, [CWM, ...args], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => {
      stdout += d;
    });
    p.stderr.on('data', (d: Buffer) => {
      stderr += d;
    });
    p.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('portable window bundles across two daemons', () => {
  let sim: Simulator;
  let a: DaemonHandle;
  let b: DaemonHandle;
  let ca: CwmClient;
  let cb: CwmClient;
  let work: string;
  const msgs = conversation(1500, 3);

  before(async () => {
    sim = await startSimulator({ lmcacheCpuChunks: 256 });
    const env = { CWM_LMCACHE_URL: sim.lmcacheUrl };
    a = await startDaemon({ engineUrl: sim.url, env });
    b = await startDaemon({ engineUrl: sim.url, env });
    ca = await a.client();
    cb = await b.client();
    work = tempDir('cwm-bundles');
    await ca.call('session.record', { session: 's1', model: MODEL, messages: msgs });
    await ca.call('window.freeze', { session: 's1', name: 'orig', tags: ['keep', 'x'], description: 'the original' });
    await ca.call('window.clone', { name: 'orig', newName: 'child' });
  });

  after(async () => {
    ca?.close();
    cb?.close();
    await a?.stop();
    await b?.stop();
    await sim?.close();
    fs.rmSync(work, { recursive: true, force: true });
  });

  const expectInvalid = async (client: CwmClient, file: string, re: RegExp) => {
    await assert.rejects(client.call('window.import', { file }), (e: unknown) => {
      assert.ok(isCwmError(e), String(e));
      assert.equal(e.code, 'BUNDLE_INVALID', e.message);
      assert.match(e.message, re);
      assert.match(e.hint ?? '', /nothing was imported/);
      return true;
    });
  };

  it('exports with the CLI (relative path resolved in the CLI) and imports into another daemon exactly', async () => {
    const r = await runIn(work, a.env, ['--json', 'export', 'child', 'child.cwmb']);
    assert.equal(r.code, 0, r.stderr);
    const ex = JSON.parse(r.stdout);
    const file = path.join(work, 'child.cwmb');
    assert.equal(ex.file, file, 'the daemon got the absolute path the CLI resolved');
    assert.equal(ex.bytes, fs.statSync(file).size);
    assert.equal(ex.sha256, createHash('sha256').update(fs.readFileSync(file)).digest('hex'));
    assert.equal(fs.statSync(file).mode & 0o777, 0o600, 'bundles are private');
    const text = fs.readFileSync(file, 'latin1');
    const salt = (await ca.call('window.get', { name: 'child', salt: true })).cacheSalt as string;
    assert.ok(!text.includes(salt), 'the salt never goes into a bundle');
    const { manifest } = layout(file);
    assert.equal(manifest.window.name, 'child');
    assert.equal(manifest.window.parent, 'orig');
    assert.deepEqual(manifest.lineage.ancestors, ['orig']);
    assert.equal(manifest.window.fingerprint.model, MODEL);

    const im = await runIn(work, b.env, ['--json', 'import', 'child.cwmb', '--name', 'moved']);
    assert.equal(im.code, 0, im.stderr);
    const got = JSON.parse(im.stdout);
    const src = await ca.call('window.get', { name: 'child', tokens: true, messages: true });
    assert.deepEqual(got, { name: 'moved', tokens: src.tokens, chunks: src.chunks });
    const dst = await cb.call('window.get', { name: 'moved', tokens: true, messages: true, lineage: true });
    assert.deepEqual(dst.tokenIds, src.tokenIds);
    assert.deepEqual(dst.messages, msgs);
    assert.deepEqual(dst.fingerprint, src.fingerprint);
    assert.equal(dst.description, src.description);
    assert.deepEqual(dst.tags, src.tags);
    assert.equal(dst.parent, null, 'another daemon: a new lineage root, no parent edge');
    assert.equal(dst.pinned, false);
    assert.deepEqual((await cb.call('registry.check', {})).problems, []);
    // thaw on the second daemon replays the exact tokens
    const t = await cb.call('window.thaw', { name: 'moved', newSession: 'moved-s' });
    assert.equal(t.tokens, src.tokens);
    const warm = sim.requests(1, { path: '/v1/completions' })[0];
    assert.deepEqual((warm?.body as { prompt?: number[] } | undefined)?.prompt, src.tokenIds);
    const audit = await cb.call('audit.list', { action: 'window.import' });
    assert.equal(audit.events[0]?.target, 'moved');
    assert.equal(audit.events[0]?.details.origin, 'another daemon');
  });

  it('imported back into the same daemon keeps its salt lineage and parent edge', async () => {
    const file = path.join(work, 'orig.cwmb');
    await ca.call('window.export', { name: 'orig', file });
    const r = await ca.call('window.import', { file, name: 'orig-again' });
    assert.equal(r.name, 'orig-again');
    const x = await ca.call('window.get', { name: 'orig', salt: true });
    const y = await ca.call('window.get', { name: 'orig-again', salt: true });
    assert.equal(y.cacheSalt, x.cacheSalt, 'same daemon: same lineage, so the cached KV still matches');
    const before = (await ca.call('daemon.status')).counts;
    assert.equal(before.chunks, x.chunks, 'no chunk was duplicated');
    const c2 = await ca.call('window.import', { file: path.join(work, 'child.cwmb'), name: 'child-again' });
    assert.equal(c2.name, 'child-again');
    assert.equal((await ca.call('window.get', { name: 'child-again' })).parent, 'orig');
    assert.deepEqual((await ca.call('registry.check', {})).problems, []);
  });

  it('refuses a name clash clearly and imports nothing', async () => {
    const before = await cb.call('daemon.status');
    await assert.rejects(cb.call('window.import', { file: path.join(work, 'child.cwmb'), name: 'moved' }), (e) => {
      assert.ok(isCwmError(e));
      assert.equal(e.code, 'WINDOW_EXISTS');
      assert.match(e.message, /"moved" already exists; nothing was imported/);
      assert.match(e.hint ?? '', /--name/);
      return true;
    });
    assert.deepEqual((await cb.call('daemon.status')).counts, before.counts);
  });

  it('refuses tampered and truncated bundles, and the registry is unchanged', async () => {
    const file = path.join(work, 'child.cwmb');
    const { buf, manifest, manifestStart, bodyStart } = layout(file);
    const before = await cb.call('daemon.status');
    const auditBefore = (await cb.call('audit.list', { action: 'window.import' })).events.length;

    // one bit in a token chunk
    const chunk = manifest.parts.chunks[1];
    const flipped = Buffer.from(buf);
    const at = bodyStart + chunk.offset + Math.floor(chunk.length / 2);
    flipped[at] = (flipped[at] as number) ^ 0x01;
    fs.writeFileSync(path.join(work, 'flip-chunk.cwmb'), flipped);
    await expectInvalid(cb, path.join(work, 'flip-chunk.cwmb'), /chunk 1 fails its sha256 check/);

    // one character in the manifest (still valid JSON: the description)
    const m2 = Buffer.from(buf);
    const descAt = m2.indexOf('"Clone of orig"', manifestStart);
    assert.ok(descAt > 0);
    m2[descAt + 1] = 'K'.charCodeAt(0);
    fs.writeFileSync(path.join(work, 'flip-manifest.cwmb'), m2);
    await expectInvalid(cb, path.join(work, 'flip-manifest.cwmb'), /whole-bundle sha256 does not match/);

    // one byte in the manifest's structure (no longer JSON)
    const m3 = Buffer.from(buf);
    m3[manifestStart] = '['.charCodeAt(0);
    fs.writeFileSync(path.join(work, 'broken-manifest.cwmb'), m3);
    await expectInvalid(cb, path.join(work, 'broken-manifest.cwmb'), /manifest/);

    // truncated: at several points
    for (const cut of [buf.length - 1, buf.length - 80, bodyStart + 10, Math.floor(bodyStart / 2), 5]) {
      const f = path.join(work, `trunc-${cut}.cwmb`);
      fs.writeFileSync(f, buf.subarray(0, cut));
      await expectInvalid(cb, f, /truncated|too short|damaged|not a cwm bundle/);
    }

    // the messages part
    const m4 = Buffer.from(buf);
    m4[bodyStart + manifest.parts.data.offset + 3] = 0x00;
    fs.writeFileSync(path.join(work, 'flip-data.cwmb'), m4);
    await expectInvalid(cb, path.join(work, 'flip-data.cwmb'), /messages part fails its sha256/);

    // not a bundle at all
    fs.writeFileSync(path.join(work, 'random.cwmb'), Buffer.alloc(4096, 7));
    await expectInvalid(cb, path.join(work, 'random.cwmb'), /not a cwm bundle/);

    assert.deepEqual((await cb.call('daemon.status')).counts, before.counts);
    assert.deepEqual((await cb.call('registry.check', {})).problems, []);
    assert.equal((await cb.call('audit.list', { action: 'window.import' })).events.length, auditBefore);
    const list = await cb.call('window.list', { limit: 100 });
    assert.deepEqual(
      list.windows.map((w) => w.name),
      ['moved'],
    );
  });

  it('refuses a forged bundle whose checksums were all recomputed but whose tokens do not match their hashes', async () => {
    const { buf, manifest, bodyStart } = layout(path.join(work, 'child.cwmb'));
    const body = Buffer.from(buf.subarray(bodyStart, buf.length - 72));
    // swap two chunks' bytes and fix their sha256 entries: every checksum is right, the content chain is not
    const [c0, c1] = manifest.parts.chunks as { offset: number; length: number; sha256: string; hash: string }[];
    assert.ok(c0 && c1);
    const parts = manifest.parts.chunks.map((c: { offset: number; length: number }) =>
      body.subarray(c.offset, c.offset + c.length),
    );
    [parts[0], parts[1]] = [parts[1], parts[0]];
    let off = 0;
    manifest.parts.chunks.forEach((c: { offset: number; length: number; sha256: string }, i: number) => {
      c.offset = off;
      c.length = parts[i].length;
      c.sha256 = createHash('sha256').update(parts[i]).digest('hex');
      off += c.length;
    });
    const rest = body.subarray(manifest.parts.data.offset);
    manifest.parts.data.offset = off;
    const forged = path.join(work, 'forged.cwmb');
    fs.writeFileSync(forged, forge(manifest, Buffer.concat([...parts, rest])));
    await expectInvalid(cb, forged, /chunk hashes do not match the tokens/);

    // a hostile window name inside an otherwise well-formed bundle
    const { buf: b2, manifest: m2, bodyStart: s2 } = layout(path.join(work, 'child.cwmb'));
    m2.window.name = '../../etc/passwd';
    const hostile = path.join(work, 'hostile-name.cwmb');
    fs.writeFileSync(hostile, forge(m2, b2.subarray(s2, b2.length - 72)));
    await expectInvalid(cb, hostile, /invalid manifest/);
    assert.deepEqual((await cb.call('registry.check', {})).problems, []);
  });

  it('export never overwrites, needs an absolute path, and reports missing windows', async () => {
    const file = path.join(work, 'child.cwmb');
    const sizeBefore = fs.statSync(file).size;
    await assert.rejects(ca.call('window.export', { name: 'orig', file }), (e) => {
      assert.ok(isCwmError(e));
      assert.match(e.message, /already exists; export never overwrites/);
      return true;
    });
    assert.equal(fs.statSync(file).size, sizeBefore);
    await assert.rejects(ca.call('window.export', { name: 'orig', file: 'relative.cwmb' }), /must be absolute/);
    await assert.rejects(
      ca.call('window.export', { name: 'nope', file: path.join(work, 'n.cwmb') }),
      (e) => isCwmError(e) && e.code === 'WINDOW_NOT_FOUND',
    );
    await assert.rejects(
      ca.call('window.import', { file: path.join(work, 'missing.cwmb') }),
      (e) => isCwmError(e) && /does not exist/.test(e.message),
    );
    await expectInvalid(ca, work, /not a regular file/);
    assert.deepEqual(
      fs.readdirSync(work).filter((f) => f.endsWith('.tmp')),
      [],
      'no temp files left behind',
    );
    const human = await cwm(a, ['import', path.join(work, 'random.cwmb')]);
    assert.equal(human.code, 1);
    assert.match(human.stderr, /^error: .*not a cwm bundle/m);
    assert.match(human.stderr, /^hint: /m);
  });
});

describe('bundles carry the llama.cpp state file (in-process services)', () => {
  const log = pino({ level: 'silent' });

  async function services(dir: string, secret: Buffer, slotDir: string) {
    const reg = await Registry.open(path.join(dir, 'registry'), log);
    const backend = {
      kind: 'llamacpp',
      url: 'http://127.0.0.1:9',
      lmcacheUrl: null,
      models: async () => [{ id: 'tiny', maxModelLen: 4096 }],
      version: async () => 'b1',
      tokenizePrompt: async () => [],
      tokenizeChat: async () => [],
      freezeKv: async (input: KvFreezeInput) => {
        const data = Buffer.from(`ggsq state of ${input.tokens.length} tokens `.repeat(500));
        const file = `${input.windowId}.bin`;
        fs.writeFileSync(path.join(slotDir, file), data);
        return {
          pinned: false,
          cached: true,
          residency: 'ready' as const,
          stateFile: { file, size: data.length, sha256: createHash('sha256').update(data).digest('hex') },
          engineMs: 0,
          warnings: [],
        };
      },
    } as unknown as EngineBackend;
    const ctx: ServiceContext = {
      reg,
      backend,
      audit: new AuditLog(reg),
      log,
      metrics: new Metrics(),
      secret,
      cfg: () => ({ config: { engine: { slotDir } } }) as unknown as LoadedConfig,
    };
    const sessions = new SessionService(ctx);
    const windows = new WindowService(ctx, sessions);
    return { reg, sessions, windows, bundles: new BundleService(ctx, windows) };
  }

  it('round-trips the state file into the other slot directory under the new window id, and refuses a damaged one', async () => {
    const root = tempDir('cwm-bstate');
    const slotA = path.join(root, 'slots-a');
    const slotB = path.join(root, 'slots-b');
    fs.mkdirSync(slotA);
    fs.mkdirSync(slotB);
    const A = await services(path.join(root, 'a'), Buffer.alloc(32, 1), slotA);
    const B = await services(path.join(root, 'b'), Buffer.alloc(32, 2), slotB);
    try {
      const ids = Array.from({ length: 700 }, (_, i) => (i * 7919) % 128_000);
      await A.sessions.record({ session: 'ls', model: 'tiny', prompt: ids, tokenIds: ids });
      await A.windows.freeze({ session: 'ls', name: 'lw', prefill: true });
      const src = await A.windows.get('lw');
      assert.ok(src.stateFile);
      const file = path.join(root, 'lw.cwmb');
      await A.bundles.export({ name: 'lw', file });
      const r = await B.bundles.import({ file });
      assert.deepEqual(r, { name: 'lw', tokens: 700, chunks: 3 });
      const dst = await B.windows.get('lw');
      assert.ok(dst.stateFile);
      assert.equal(dst.stateFile.file, `${dst.id}.bin`, 'named by the new window id');
      assert.notEqual(dst.id, src.id);
      assert.equal(dst.stateFile.sha256, src.stateFile.sha256);
      assert.deepEqual(
        fs.readFileSync(path.join(slotB, dst.stateFile.file)),
        fs.readFileSync(path.join(slotA, src.stateFile.file)),
      );
      assert.deepEqual(await B.windows.tokensOf(dst), ids);
      assert.equal(await B.reg.count(`sf!${dst.stateFile.file}`), 1);

      // one flipped byte in the state part: refused, no file left in the slot directory, no window
      const { buf, manifest, bodyStart } = layout(file);
      const at = bodyStart + manifest.parts.state.offset + 100;
      const bad = Buffer.from(buf);
      bad[at] = (bad[at] as number) ^ 0xff;
      fs.writeFileSync(path.join(root, 'bad.cwmb'), bad);
      const slotFiles = fs.readdirSync(slotB).sort();
      await assert.rejects(B.bundles.import({ file: path.join(root, 'bad.cwmb'), name: 'lw2' }), (e) => {
        assert.ok(isCwmError(e));
        assert.equal(e.code, 'BUNDLE_INVALID');
        assert.match(e.message, /state file part fails its sha256/);
        return true;
      });
      assert.deepEqual(fs.readdirSync(slotB).sort(), slotFiles);
      assert.equal(await B.reg.getWindow('lw2'), undefined);

      // a name clash after the state file was written: the file is removed again
      await assert.rejects(B.bundles.import({ file }), (e) => isCwmError(e) && e.code === 'WINDOW_EXISTS');
      assert.deepEqual(fs.readdirSync(slotB).sort(), slotFiles);

      // a forged state-file name in the manifest is never used as a path: the file lands as <new id>.bin
      const forged = layout(file);
      forged.manifest.window.stateFile.file = '../../escaped.bin';
      const forgedFile = path.join(root, 'forged-state.cwmb');
      fs.writeFileSync(
        forgedFile,
        forge(forged.manifest, forged.buf.subarray(forged.bodyStart, forged.buf.length - 72)),
      );
      await B.bundles.import({ file: forgedFile, name: 'lw-forged' });
      const fw = await B.windows.get('lw-forged');
      assert.equal(fw.stateFile?.file, `${fw.id}.bin`);
      assert.ok(fs.existsSync(path.join(slotB, `${fw.id}.bin`)));
      assert.equal(fs.existsSync(path.join(root, 'escaped.bin')), false);
      assert.equal(fs.existsSync(path.join(slotB, '..', '..', 'escaped.bin')), false);

      // the state file went missing on the exporting side: the bundle still carries the exact tokens
      fs.rmSync(path.join(slotA, src.stateFile.file));
      const file2 = path.join(root, 'lw-nostate.cwmb');
      await A.bundles.export({ name: 'lw', file: file2 });
      assert.match(layout(file2).manifest.stateFileOmitted, /could not be read/);
      const r2 = await B.bundles.import({ file: file2, name: 'lw-tokens-only' });
      assert.equal(r2.tokens, 700);
      assert.equal((await B.windows.get('lw-tokens-only')).stateFile, null);
    } finally {
      await A.reg.close();
      await B.reg.close();
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});
