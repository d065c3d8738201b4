import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { isCwmError } from '../../daemon/protocol/index.js';
import { Registry } from '../../daemon/registry/db.js';
import { CWMD, cwm, ROOT, run, startDaemon, tempDir } from '../helpers/daemon.js';
import { type Simulator, startSimulator } from '../sim/index.js';

const MODEL = 'sim/llama-3-8b-instruct';

/**
 * A real full disk: a small tmpfs mounted for the test (root only; `mount -t tmpfs -o size=64m tmpfs DIR`).
 * Where mounting is not permitted the suite is skipped and says so.
 */
function mountTmpfs(dir: string, size: string): boolean {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function canMount(): boolean {
  if (process.platform !== 'linux' || process.getuid?.() !== 0) return false;
  const dir = tempDir('cwm-mnt');
  const ok = mountTmpfs(dir, '1m');
  if (ok) execFileSync('umount', [dir]);
  fs.rmSync(dir, { recursive: true, force: true });
  return ok;
}

function fill(file: string): number {
  const fd = fs.openSync(file, 'w');
  let n = 0;
  try {
    for (;;) n += fs.writeSync(fd, Buffer.alloc(65_536, 1));
  } catch {}
  try {
    for (;;) n += fs.writeSync(fd, Buffer.alloc(1));
  } catch {}
  fs.closeSync(fd);
  return n;
}

function ids(n: number, seed: number): number[] {
  return Array.from({ length: n }, (_, i) => (i * 7919 + seed * 31_337) % 128_000);
}

const MOUNT = canMount();
const SKIP = MOUNT ? false : 'needs root and a tmpfs mount (mount -t tmpfs) to make a real full disk';

describe('disk full (ENOSPC on a small tmpfs)', { skip: SKIP }, () => {
  let sim: Simulator;
  let root: string;
  let vol: string;
  before(async () => {
    sim = await startSimulator({ requestLogSize: 0 });
    root = tempDir('cwm-full');
    vol = path.join(root, 'vol');
    fs.mkdirSync(vol);
    assert.ok(mountTmpfs(vol, '64m'));
  });
  after(async () => {
    await sim?.close();
    if (vol) spawnSync('umount', [vol]);
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  it('a freeze on a full disk fails with DISK_FULL and a hint, changes nothing, and the daemon carries on', async (t) => {
    // the registry and the log both on the small volume, as in a default install
    const d = await startDaemon({
      engineUrl: sim.url,
      env: { CWM_DATA_DIR: path.join(vol, 'data'), CWM_LOG_FILE: path.join(vol, 'cwmd.log'), CWM_AUTOFREEZE: 'false' },
    });
    let d2: typeof d | null = null;
    try {
      const c = await d.client();
      for (let i = 0; i < 5; i++) {
        await c.call('session.record', { session: `s${i}`, model: MODEL, prompt: ids(2000, i) });
        await c.call('window.freeze', { session: `s${i}`, name: `w${i}`, prefill: false });
      }
      await c.call('session.record', { session: 'big', model: MODEL, prompt: ids(60_000, 99) });
      const before = await c.call('daemon.status');
      const filled = fill(path.join(vol, 'filler'));
      t.diagnostic(`filled the volume with ${filled} bytes`);

      await assert.rejects(c.call('window.freeze', { session: 'big', name: 'big-w', prefill: false }), (e: unknown) => {
        assert.ok(isCwmError(e));
        assert.equal(e.code, 'DISK_FULL');
        assert.equal(e.retryable, true);
        assert.match(e.message, /disk holding the registry is full/);
        assert.match(e.hint ?? '', /free space on that volume/);
        return true;
      });
      const cli = await cwm(d, ['freeze', 'big', 'big-w', '--no-prefill']);
      assert.equal(cli.code, 1);
      assert.match(cli.stderr, /^error: the disk holding the registry is full/m);
      assert.match(cli.stderr, /^hint: free space on that volume/m);
      await assert.rejects(
        c.call('session.record', { session: 'small', model: MODEL, prompt: [1, 2, 3] }),
        (e: unknown) => isCwmError(e) && e.code === 'DISK_FULL',
      );
      // reads still work, and nothing changed
      assert.deepEqual((await c.call('daemon.status')).counts, before.counts);
      assert.deepEqual((await c.call('registry.check', {})).problems, []);
      await assert.rejects(c.call('window.get', { name: 'big-w' }), /no window/);
      assert.equal(d.proc.exitCode, null, 'the daemon is still running, its log volume full too');

      // space again: the same freeze works, and more; then a crash loses none of it
      fs.rmSync(path.join(vol, 'filler'));
      const f = await c.call('window.freeze', { session: 'big', name: 'big-w', prefill: false });
      assert.equal(f.tokens, 60_000);
      for (let i = 0; i < 20; i++) {
        await c.call('session.record', { session: `a${i}`, model: MODEL, prompt: ids(3000, 50 + i) });
        await c.call('window.freeze', { session: `a${i}`, name: `after-${i}`, prefill: false });
      }
      c.close();
      await d.kill('SIGKILL');
      d2 = await d.restart();
      const c2 = await d2.client();
      const names = (await c2.call('window.list', { limit: 100, sort: 'name', order: 'asc' })).windows.map(
        (w) => w.name,
      );
      assert.deepEqual(
        names.sort(),
        [...Array.from({ length: 20 }, (_, i) => `after-${i}`), 'big-w', 'w0', 'w1', 'w2', 'w3', 'w4'].sort(),
      );
      assert.deepEqual((await c2.call('window.get', { name: 'big-w', tokens: true })).tokenIds, ids(60_000, 99));
      assert.deepEqual((await c2.call('registry.check', {})).problems, []);
      c2.close();
      const log = fs.readFileSync(path.join(vol, 'cwmd.log'), 'utf8');
      assert.doesNotMatch(log, /registry check found problems/);
    } finally {
      await d.stop();
      await d2?.stop();
    }
  });

  it('after a real ENOSPC inside LevelDB, acknowledged writes that follow survive a crash', async () => {
    // The free-space reserve is off here, so the write reaches LevelDB and fails half-way through its log record.
    // Before the fix, every write acknowledged after that was dropped by recovery (a torn record in the log).
    const location = path.join(vol, 'raw-registry');
    const child = spawnSync(
      process.execPath,
      ['--import', 'tsx', path.join(ROOT, 'test/soak/diskfull-writer.ts'), location, path.join(vol, 'filler2')],
      { cwd: ROOT, encoding: 'utf8', timeout: 60_000 },
    );
    assert.equal(child.signal, 'SIGKILL', child.stderr);
    const out = JSON.parse(child.stdout.trim()) as {
      acked: string[];
      failure: { code: string; retryable: boolean; message: string; hint: string } | null;
      whileFull: string | null;
    };
    assert.equal(out.failure?.code, 'DISK_FULL', JSON.stringify(out.failure));
    assert.equal(out.failure?.retryable, true);
    assert.match(out.failure?.hint ?? '', /free space/);
    assert.equal(out.whileFull, 'DISK_FULL', 'writes are refused until the log is safe again');
    const reg = await Registry.open(location, pino({ level: 'silent' }));
    try {
      const keys: string[] = [];
      for await (const k of reg.chunks.keys()) keys.push(k);
      assert.deepEqual(keys.sort(), [...out.acked].sort(), 'every acknowledged write, and nothing else');
    } finally {
      await reg.close();
    }
  });
});

describe('socket directory ownership', { skip: process.getuid?.() === 0 ? false : 'needs root to chown' }, () => {
  it('refuses to start on a socket directory owned by another user, even if it is private', async () => {
    const dir = tempDir();
    const theirs = path.join(dir, 'theirs');
    fs.mkdirSync(theirs, { mode: 0o700 });
    fs.chownSync(theirs, 65_534, 65_534); // nobody
    const env = {
      ...process.env,
      CWM_DATA_DIR: path.join(dir, 'data'),
      CWM_LOG_FILE: path.join(dir, 'log'),
      CWM_CONFIG: path.join(dir, 'c.json'),
    };
    const r = await run(CWMD, ['--quiet', '--socket', path.join(theirs, 'cwmd.sock')], env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /socket directory .*theirs is owned by uid 65534, not by you \(uid 0\)/);
    assert.match(r.stderr, /hint: use a directory you own/);
    assert.equal(fs.existsSync(path.join(theirs, 'cwmd.sock')), false, 'no socket was created there');
    assert.equal(fs.existsSync(path.join(dir, 'data', 'registry')), false, 'the registry was not opened');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a group-writable socket directory too (not only world-writable)', async () => {
    const dir = tempDir();
    const grp = path.join(dir, 'grp');
    fs.mkdirSync(grp);
    fs.chmodSync(grp, 0o770);
    const r = await run(CWMD, ['--quiet', '--socket', path.join(grp, 'cwmd.sock')], {
      ...process.env,
      CWM_DATA_DIR: path.join(dir, 'data'),
      CWM_LOG_FILE: path.join(dir, 'log'),
      CWM_CONFIG: path.join(dir, 'c.json'),
    });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /writable by group or others \(mode 770\)/);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
