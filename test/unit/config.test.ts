import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { loadConfig, restartNeeded, writeConfigPatch } from '../../daemon/config.js';
import { checkSocketPath, resolvePaths } from '../../daemon/paths.js';
import { isCwmError } from '../../daemon/protocol/index.js';
import { tempDir } from '../helpers/daemon.js';

describe('config', () => {
  it('applies defaults < file < env < flags and records where each value came from', () => {
    const dir = tempDir();
    const file = path.join(dir, 'config.json');
    fs.writeFileSync(
      file,
      JSON.stringify({ autoFreeze: { threshold: 0.7, cooldownSeconds: 10 }, engine: { url: 'http://127.0.0.1:1111' } }),
    );
    const c = loadConfig(
      file,
      { CWM_ENGINE_URL: 'http://127.0.0.1:2222', CWM_AUTOFREEZE: 'off' },
      { 'autoFreeze.cooldownSeconds': 5 },
    );
    assert.equal(c.config.autoFreeze.threshold, 0.7);
    assert.equal(c.sources['autoFreeze.threshold'], 'file');
    assert.equal(c.config.engine.url, 'http://127.0.0.1:2222');
    assert.equal(c.sources['engine.url'], 'env');
    assert.equal(c.config.autoFreeze.enabled, false);
    assert.equal(c.config.autoFreeze.cooldownSeconds, 5);
    assert.equal(c.sources['autoFreeze.cooldownSeconds'], 'flag');
    assert.equal(c.config.pressure.kvHigh, 0.9);
    assert.equal(c.sources['pressure.kvHigh'], 'default');
  });

  it('daemon.syncWrites: off by default, on from the file or CWM_SYNC_WRITES, and a live key', () => {
    const dir = tempDir();
    const file = path.join(dir, 'config.json');
    const off = loadConfig(file, {});
    assert.equal(off.config.daemon.syncWrites, false);
    assert.equal(off.sources['daemon.syncWrites'], 'default');
    const env = loadConfig(file, { CWM_SYNC_WRITES: 'yes' });
    assert.equal(env.config.daemon.syncWrites, true);
    assert.equal(env.sources['daemon.syncWrites'], 'env');
    fs.writeFileSync(file, JSON.stringify({ daemon: { syncWrites: true } }));
    const fromFile = loadConfig(file, {});
    assert.equal(fromFile.config.daemon.syncWrites, true);
    assert.deepEqual(restartNeeded(off.config, fromFile.config), [], 'applies without a restart');
    assert.throws(() => loadConfig(file, { CWM_SYNC_WRITES: 'maybe' }), /daemon\.syncWrites/);
  });

  it('names the bad key and where it came from', () => {
    const dir = tempDir();
    const file = path.join(dir, 'config.json');
    fs.writeFileSync(file, JSON.stringify({ autoFreeze: { threshold: 3 } }));
    assert.throws(
      () => loadConfig(file, {}),
      (e: unknown) =>
        isCwmError(e) && e.code === 'CONFIG_INVALID' && /autoFreeze\.threshold \(from file/.test(e.message),
    );
    fs.writeFileSync(file, JSON.stringify({ engine: { urll: 'x' } }));
    assert.throws(() => loadConfig(file, {}), /engine/);
    fs.writeFileSync(file, '{ not json');
    assert.throws(() => loadConfig(file, {}), /not valid JSON/);
    fs.writeFileSync(file, JSON.stringify({ pressure: { kvHigh: 0.5, kvLow: 0.6 } }));
    assert.throws(() => loadConfig(file, {}), /kvLow must be below/);
  });

  it('reports restart-only keys and writes patches without losing other keys', () => {
    const dir = tempDir();
    const file = path.join(dir, 'sub', 'config.json');
    writeConfigPatch(file, { autoFreeze: { threshold: 0.6 } });
    writeConfigPatch(file, { engine: { url: 'http://127.0.0.1:3' } });
    const json = JSON.parse(fs.readFileSync(file, 'utf8'));
    assert.deepEqual(json, { autoFreeze: { threshold: 0.6 }, engine: { url: 'http://127.0.0.1:3' } });
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    const a = loadConfig(path.join(dir, 'missing.json'), {}).config;
    const b = loadConfig(file, {}).config;
    assert.deepEqual(restartNeeded(a, b), ['engine.url']);
  });
});

describe('paths', () => {
  it('follows XDG on Linux, ~/Library on macOS and a named pipe on Windows', () => {
    const linux = resolvePaths({}, { XDG_RUNTIME_DIR: '/run/user/1000' }, 'linux', '/home/a');
    assert.equal(linux.socket, '/run/user/1000/cwm/cwmd.sock');
    assert.equal(linux.dataDir, '/home/a/.local/share/cwm');
    assert.equal(linux.configFile, '/home/a/.config/cwm/config.json');
    assert.equal(linux.logFile, '/home/a/.local/state/cwm/cwmd.log');
    const mac = resolvePaths({}, { TMPDIR: '/var/folders/x/T' }, 'darwin', '/Users/a');
    assert.equal(mac.dataDir, '/Users/a/Library/Application Support/cwm');
    assert.equal(mac.logFile, '/Users/a/Library/Logs/cwm/cwmd.log');
    const win = resolvePaths({}, { LOCALAPPDATA: 'C:\\Users\\a\\AppData\\Local' }, 'win32', 'C:\\Users\\a');
    assert.match(win.socket, /^\\\\\.\\pipe\\cwm-/);
    assert.equal(win.dataDir, 'C:\\Users\\a\\AppData\\Local\\cwm\\data');
  });

  it('lets env and flags override, flags last', () => {
    const p = resolvePaths({ socket: '/f.sock' }, { CWM_SOCKET: '/e.sock', CWM_DATA_DIR: '/d' }, 'linux', '/h');
    assert.equal(p.socket, '/f.sock');
    assert.equal(p.dataDir, '/d');
  });

  it('refuses a socket path the OS would truncate', () => {
    assert.throws(() => checkSocketPath(`/tmp/${'x'.repeat(120)}.sock`, 'linux'), /longer than this OS allows \(107\)/);
    assert.doesNotThrow(() => checkSocketPath('/tmp/cwm/cwmd.sock', 'linux'));
    assert.doesNotThrow(() => checkSocketPath('\\\\.\\pipe\\cwm-a', 'win32'));
  });
});
