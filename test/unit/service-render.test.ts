import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { type Host, userNamespacesAvailable } from '../../client/service/host.js';
import { findService } from '../../client/service/manager.js';
import { dropSandboxBlock, planService, renderTemplate, systemdWord } from '../../client/service/render.js';
import { ROOT, tempDir } from '../helpers/daemon.js';

const dirs: string[] = [];
function fakeHost(over: Partial<Host> = {}, homeName = 'home'): Host {
  const base = tempDir('cwm-svc');
  dirs.push(base);
  const home = path.join(base, homeName);
  fs.mkdirSync(home, { recursive: true });
  return {
    platform: 'linux',
    env: { XDG_RUNTIME_DIR: path.join(base, 'rt'), XDG_CONFIG_HOME: path.join(home, '.config') },
    home,
    uid: os.userInfo().uid,
    user: os.userInfo().username,
    execPath: process.execPath,
    root: ROOT,
    ...over,
  };
}

/** The value of `Key=` lines outside comments. */
function directives(unit: string, key: string): string[] {
  return unit
    .split('\n')
    .filter((l) => l.startsWith(`${key}=`))
    .map((l) => l.slice(key.length + 1));
}

function hasTool(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`]).status === 0;
}

/** systemd-analyze verify must accept the files without a single warning (it exits 0 on many of them). */
function verify(files: string[], user: boolean): { code: number | null; output: string } {
  const rt = tempDir('cwm-rt');
  dirs.push(rt);
  const r = spawnSync('systemd-analyze', [...(user ? ['--user'] : []), 'verify', ...files], {
    encoding: 'utf8',
    env: { ...process.env, XDG_RUNTIME_DIR: rt, SYSTEMD_LOG_LEVEL: 'notice' },
  });
  return { code: r.status, output: `${r.stdout}${r.stderr}`.trim() };
}

function writeAll(files: { path: string; content: string }[]): string[] {
  const dir = tempDir('cwm-units');
  dirs.push(dir);
  return files.map((f) => {
    const p = path.join(dir, path.basename(f.path));
    fs.writeFileSync(p, f.content);
    return p;
  });
}

describe('service files', () => {
  after(() => {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  it('renders the user unit with the real node, the installed daemon and this user’s directories', () => {
    const host = fakeHost();
    const plan = planService({ scope: 'user', socketActivation: false }, host, true);
    assert.equal(plan.manager, 'systemd');
    assert.equal(plan.files.length, 1);
    const [unit] = plan.files;
    assert.ok(unit);
    assert.equal(unit.path, path.join(host.home, '.config/systemd/user/cwmd.service'));
    assert.doesNotMatch(unit.content, /@@/);
    assert.deepEqual(directives(unit.content, 'ExecStart'), [
      `${process.execPath} ${path.join(ROOT, 'dist/daemon/main.js')}`,
    ]);
    assert.deepEqual(directives(unit.content, 'Type'), ['exec']);
    assert.deepEqual(directives(unit.content, 'Restart'), ['on-failure']);
    assert.deepEqual(directives(unit.content, 'RuntimeDirectory'), ['cwm']);
    assert.deepEqual(directives(unit.content, 'RuntimeDirectoryMode'), ['0700']);
    assert.deepEqual(directives(unit.content, 'Environment'), [
      'CWM_SOCKET=%t/cwm/cwmd.sock',
      `CWM_DATA_DIR=${host.home}/.local/share/cwm`,
      `CWM_CONFIG=${host.home}/.config/cwm/config.json`,
      `CWM_LOG_FILE=${host.home}/.local/state/cwm/cwmd.log`,
    ]);
    assert.deepEqual(directives(unit.content, 'ReadWritePaths'), [
      `%t/cwm ${host.home}/.local/share/cwm ${host.home}/.local/state/cwm ${host.home}/.config/cwm`,
    ]);
    for (const k of ['NoNewPrivileges', 'PrivateTmp', 'LockPersonality', 'PrivateUsers']) {
      assert.deepEqual(directives(unit.content, k), ['yes'], k);
    }
    assert.deepEqual(directives(unit.content, 'ProtectSystem'), ['strict']);
    assert.deepEqual(directives(unit.content, 'ProtectHome'), ['read-only']);
    assert.deepEqual(directives(unit.content, 'RestrictAddressFamilies'), ['AF_UNIX AF_INET AF_INET6']);
    assert.deepEqual(directives(unit.content, 'MemoryDenyWriteExecute'), [], 'V8 needs W+X memory');
    assert.deepEqual(directives(unit.content, 'WantedBy'), ['default.target']);
    assert.equal(plan.socket, path.join(host.env.XDG_RUNTIME_DIR as string, 'cwm', 'cwmd.sock'));
    assert.deepEqual(plan.install, [
      ['systemctl', '--user', 'daemon-reload'],
      ['systemctl', '--user', 'enable', '--now', 'cwmd.service'],
    ]);
    assert.deepEqual(plan.dirs, [
      `${host.home}/.local/share/cwm`,
      `${host.home}/.local/state/cwm`,
      `${host.home}/.config/cwm`,
    ]);
  });

  it('quotes and escapes paths with spaces, %, $ and quotes', () => {
    assert.equal(systemdWord('/usr/bin/node'), '/usr/bin/node');
    assert.equal(systemdWord('/opt/my app/main.js'), '"/opt/my app/main.js"');
    assert.equal(systemdWord('/a%b'), '/a%%b');
    assert.equal(systemdWord('/x/$HOME/"q"', true), '"/x/$$HOME/\\"q\\""');
    const host = fakeHost({}, 'my home 100%');
    const unit = planService({ scope: 'user', socketActivation: false }, host, true).files[0]?.content ?? '';
    assert.ok(unit.includes(`Environment="CWM_DATA_DIR=${host.home.replace('%', '%%')}/.local/share/cwm"`), unit);
    assert.ok(directives(unit, 'ReadWritePaths')[0]?.includes(`"${host.home.replace('%', '%%')}/.local/share/cwm"`));
  });

  it('comments the user-namespace sandbox out where the host cannot provide it', () => {
    const plan = planService({ scope: 'user', socketActivation: false }, fakeHost(), false);
    const unit = plan.files[0]?.content ?? '';
    for (const k of ['PrivateUsers', 'ProtectSystem', 'ProtectHome', 'ReadWritePaths', 'PrivateTmp']) {
      assert.deepEqual(directives(unit, k), [], `${k} is commented out`);
      assert.match(unit, new RegExp(`^#${k}=`, 'm'));
    }
    assert.deepEqual(directives(unit, 'NoNewPrivileges'), ['yes'], 'the rest of the hardening stays');
    assert.ok(plan.notes.some((n) => /user namespaces/.test(n)));
    assert.equal(
      dropSandboxBlock('a=1\n# >>> x\nB=2\n# c\n# <<<\nD=3'),
      'a=1\n# >>> x\n# (disabled by cwm service install: unprivileged user namespaces are not available here)\n#B=2\n# c\n# <<<\nD=3',
    );
    assert.equal(
      userNamespacesAvailable(() => null),
      true,
    );
    assert.equal(
      userNamespacesAvailable((p) => (p.endsWith('unprivileged_userns_clone') ? '0\n' : null)),
      false,
    );
    assert.equal(
      userNamespacesAvailable((p) => (p.endsWith('apparmor_restrict_unprivileged_userns') ? '1\n' : null)),
      false,
    );
  });

  it('renders the system unit (User=, State/Logs directories, full hardening) and the socket units', () => {
    const host = fakeHost();
    const sys = planService({ scope: 'system', socketActivation: true, runAs: 'nobody' }, host, true);
    const [service, socket] = sys.files;
    assert.ok(service && socket);
    assert.equal(service.path, '/etc/systemd/system/cwmd.service');
    assert.equal(socket.path, '/etc/systemd/system/cwmd.socket');
    assert.deepEqual(directives(service.content, 'User'), ['nobody']);
    assert.deepEqual(directives(service.content, 'StateDirectory'), ['cwm']);
    assert.deepEqual(directives(service.content, 'WantedBy'), ['multi-user.target']);
    assert.deepEqual(directives(service.content, 'MemoryDenyWriteExecute'), []);
    assert.deepEqual(directives(service.content, 'ProtectHome'), ['read-only']);
    assert.deepEqual(directives(socket.content, 'ListenStream'), ['%t/cwm/cwmd.sock']);
    assert.deepEqual(directives(socket.content, 'SocketMode'), ['0600']);
    assert.deepEqual(directives(socket.content, 'SocketUser'), ['nobody']);
    assert.deepEqual(directives(socket.content, 'WantedBy'), ['sockets.target']);
    assert.equal(sys.socket, '/run/cwm/cwmd.sock');
    assert.deepEqual(sys.install.at(-1), ['systemctl', 'enable', '--now', 'cwmd.socket']);
    const user = planService({ scope: 'user', socketActivation: true }, host, true);
    assert.deepEqual(directives(user.files[1]?.content ?? '', 'DirectoryMode'), ['0700']);
    assert.deepEqual(directives(user.files[1]?.content ?? '', 'SocketUser'), []);
  });

  it('every rendered unit passes systemd-analyze verify without a warning', (t) => {
    if (!hasTool('systemd-analyze')) {
      if (process.env.CI) assert.fail('systemd-analyze is missing: apt-get install -y --no-install-recommends systemd');
      t.skip('systemd-analyze is not installed (apt-get install systemd)');
      return;
    }
    const host = fakeHost();
    const user = planService({ scope: 'user', socketActivation: true }, host, true);
    const userRes = verify(writeAll(user.files), true);
    assert.equal(userRes.code, 0, userRes.output);
    assert.equal(userRes.output, '', 'no warnings');
    const unsandboxed = planService({ scope: 'user', socketActivation: false }, fakeHost(), false);
    const unsandboxedRes = verify(writeAll(unsandboxed.files), true);
    assert.equal(unsandboxedRes.code, 0, unsandboxedRes.output);
    assert.equal(unsandboxedRes.output, '');
    const sys = planService({ scope: 'system', socketActivation: true, runAs: os.userInfo().username }, host, true);
    const sysRes = verify(writeAll(sys.files), false);
    assert.equal(sysRes.code, 0, sysRes.output);
    assert.equal(sysRes.output, '', 'no warnings');
    // and the check does catch mistakes
    const broken = writeAll([
      { path: 'cwmd.service', content: (user.files[0]?.content ?? '').replace('Type=exec', 'Type=sometimes') },
    ]);
    assert.match(verify(broken, true).output, /Failed to parse service type/);
  });

  it('renders the LaunchAgent plist, which parses as a valid property list', (t) => {
    const host = fakeHost({ platform: 'darwin', env: { TMPDIR: '/var/folders/x/T/' } }, 'R&D <home>');
    const plan = planService({ scope: 'user', socketActivation: false }, host, true);
    assert.equal(plan.manager, 'launchd');
    const [plist] = plan.files;
    assert.ok(plist);
    assert.equal(plist.path, path.join(host.home, 'Library/LaunchAgents/com.cwm.daemon.plist'));
    assert.doesNotMatch(plist.content, /@@/);
    assert.deepEqual(plan.install.at(-1), ['launchctl', 'bootstrap', `gui/${host.uid}`, plist.path]);
    assert.deepEqual(
      plan.dirs,
      [
        path.join(host.home, 'Library/Logs/cwm'),
        path.join(host.home, 'Library/Application Support/cwm'),
        `/var/folders/x/T/cwm-${host.uid}`,
      ],
      'each directory once (data and config share one on macOS)',
    );
    if (!hasTool('python3')) {
      if (process.env.CI) assert.fail('python3 is missing (plistlib parses the plist): apt-get install -y python3');
      t.skip('python3 is not installed: cannot parse the plist with plistlib');
      return;
    }
    const parsed = JSON.parse(
      execFileSync(
        'python3',
        [
          '-c',
          'import plistlib,sys,json; d=plistlib.loads(sys.stdin.buffer.read(), fmt=plistlib.FMT_XML); print(json.dumps(d))',
        ],
        { input: plist.content, encoding: 'utf8' },
      ),
    ) as Record<string, unknown>;
    const logs = path.join(host.home, 'Library/Logs/cwm');
    assert.deepEqual(parsed, {
      Label: 'com.cwm.daemon',
      ProgramArguments: [process.execPath, path.join(ROOT, 'dist/daemon/main.js'), '--quiet'],
      EnvironmentVariables: {
        CWM_SOCKET: `/var/folders/x/T/cwm-${host.uid}/cwmd.sock`,
        CWM_DATA_DIR: path.join(host.home, 'Library/Application Support/cwm'),
        CWM_CONFIG: path.join(host.home, 'Library/Application Support/cwm/config.json'),
        CWM_LOG_FILE: `${logs}/cwmd.log`,
      },
      RunAtLoad: true,
      KeepAlive: { SuccessfulExit: false },
      ThrottleInterval: 10,
      ProcessType: 'Standard',
      ExitTimeOut: 30,
      Umask: 63,
      StandardOutPath: `${logs}/cwmd.out.log`,
      StandardErrorPath: `${logs}/cwmd.err.log`,
    });
    assert.throws(
      () => planService({ scope: 'user', socketActivation: true }, host, true),
      /only available with systemd/,
    );
  });

  it('finds an installed, enabled service by its socket, from the files alone', () => {
    const host = fakeHost();
    const sock = path.join(host.env.XDG_RUNTIME_DIR as string, 'cwm', 'cwmd.sock');
    assert.equal(findService(sock, host), null);
    const unitDir = path.join(host.home, '.config/systemd/user');
    fs.mkdirSync(path.join(unitDir, 'default.target.wants'), { recursive: true });
    fs.writeFileSync(path.join(unitDir, 'cwmd.service'), '[Service]\n');
    assert.equal(findService(sock, host), null, 'installed but not enabled');
    fs.symlinkSync('../cwmd.service', path.join(unitDir, 'default.target.wants', 'cwmd.service'));
    assert.deepEqual(findService(sock, host), {
      manager: 'systemd',
      scope: 'user',
      socketActivation: false,
      socket: sock,
      enabled: true,
      files: [path.join(unitDir, 'cwmd.service')],
    });
    assert.equal(findService('/tmp/other.sock', host), null, 'a daemon on another socket is not the service’s');
  });

  it('refuses a template placeholder left unfilled', () => {
    assert.equal(renderTemplate('a=@@X@@', { X: '1' }), 'a=1');
    assert.throws(() => renderTemplate('a=@@X@@ b=@@Y@@', { X: '1' }), /@@Y@@ was not filled in/);
  });
});
