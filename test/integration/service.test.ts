import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { CwmClient } from '../../client/rpc-client.js';
import { CWM, CWM_MCP, CWMD, ROOT, run, tempDir } from '../helpers/daemon.js';

/**
 * A stand-in for `systemctl --user`, just enough for `cwm service`: it keeps the enable symlinks like systemd does
 * and runs the installed unit's own ExecStart with its Environment= lines (%t = $XDG_RUNTIME_DIR), so the unit that
 * `cwm service install` wrote is the one that starts the daemon. It logs every call to $STUB_LOG.
 */
const FAKE_SYSTEMCTL = `#!/usr/bin/env bash
echo "$*" >> "$STUB_LOG"
[ "$1" = "--user" ] && shift
UNITDIR="$XDG_CONFIG_HOME/systemd/user"
PIDFILE="$STUB_STATE/cwmd.pid"
running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
start() {
  running && return 0
  mkdir -p -m 0700 "$XDG_RUNTIME_DIR/cwm"
  (
    while IFS= read -r line; do
      case "$line" in
        Environment=*)
          kv=$(printf '%s' "\${line#Environment=}" | sed -e 's/^"//' -e 's/"$//' -e "s|%t|$XDG_RUNTIME_DIR|g" -e 's/%%/%/g')
          export "$kv";;
        ExecStart=*) exec_line="\${line#ExecStart=}";;
      esac
    done < "$UNITDIR/cwmd.service"
    eval "set -- $exec_line"
    nohup "$@" > /dev/null 2>&1 &
    echo $! > "$PIDFILE"
  )
}
stop() {
  running || return 0
  pid=$(cat "$PIDFILE"); kill "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  rm -f "$PIDFILE"
}
case "$1" in
  is-system-running) echo "\${STUB_MANAGER:-running}"; [ "\${STUB_MANAGER:-running}" = running ];;
  daemon-reload) ;;
  enable) shift; now=0; [ "$1" = --now ] && { now=1; shift; }
    for u in "$@"; do t=default.target; [ "\${u##*.}" = socket ] && t=sockets.target
      mkdir -p "$UNITDIR/$t.wants"; ln -sf "../$u" "$UNITDIR/$t.wants/$u"; done
    [ $now = 1 ] && start;;
  disable) shift; [ "$1" = --now ] && { shift; stop; }; for u in "$@"; do rm -f "$UNITDIR"/*.wants/"$u"; done;;
  start) start;;
  stop) stop;;
  is-enabled) ls "$UNITDIR"/*.wants/"$2" > /dev/null 2>&1;;
  is-active) running;;
  *) echo "fake systemctl: unsupported: $*" >&2; exit 1;;
esac
`;

interface FakeSystem {
  dir: string;
  env: NodeJS.ProcessEnv;
  socket: string;
  unitFile: string;
  log(): string[];
  cleanup(): void;
}

/** A temp HOME with XDG dirs, the fake systemctl first on PATH, and the daemon pointed at nothing. */
function fakeSystem(manager: 'running' | 'offline' = 'running'): FakeSystem {
  const dir = tempDir('cwm-svc');
  const bin = path.join(dir, 'bin');
  const state = path.join(dir, 'state');
  const rt = path.join(dir, 'rt');
  for (const d of [bin, state, rt]) fs.mkdirSync(d, { recursive: true, mode: 0o700 });
  fs.writeFileSync(path.join(bin, 'systemctl'), FAKE_SYSTEMCTL, { mode: 0o755 });
  const log = path.join(dir, 'systemctl.log');
  const env: NodeJS.ProcessEnv = {
    PATH: `${bin}:${process.env.PATH ?? ''}`,
    HOME: path.join(dir, 'home'),
    XDG_CONFIG_HOME: path.join(dir, 'home', '.config'),
    XDG_RUNTIME_DIR: rt,
    STUB_LOG: log,
    STUB_STATE: state,
    STUB_MANAGER: manager,
    CWM_ENGINE_URL: 'http://127.0.0.1:9',
    CWM_GATEWAY: 'off',
  };
  return {
    dir,
    env,
    socket: path.join(rt, 'cwm', 'cwmd.sock'),
    unitFile: path.join(dir, 'home', '.config', 'systemd', 'user', 'cwmd.service'),
    log: () => (fs.existsSync(log) ? fs.readFileSync(log, 'utf8').trim().split('\n') : []),
    cleanup() {
      const pidFile = path.join(state, 'cwmd.pid');
      if (fs.existsSync(pidFile)) {
        try {
          process.kill(Number(fs.readFileSync(pidFile, 'utf8')), 'SIGTERM');
        } catch {
          // already gone
        }
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

function cli(sys: { env: NodeJS.ProcessEnv }, args: string[]) {
  return run(CWM, args, sys.env);
}

async function helloPid(socket: string): Promise<number | null> {
  try {
    const c = await CwmClient.connect({ socket, connectTimeoutMs: 2000 });
    const pid = c.hello?.pid ?? null;
    c.close();
    return pid;
  } catch {
    return null;
  }
}

function hasTool(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`]).status === 0;
}

describe('cwm service install|uninstall|status --dry-run (works everywhere)', () => {
  let sys: FakeSystem;
  before(() => {
    sys = fakeSystem();
  });
  after(() => sys.cleanup());

  it('prints the user unit with the real paths and the commands, and touches nothing', async () => {
    const r = await cli(sys, ['service', 'install', '--dry-run']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.includes(`# would write ${sys.unitFile}:`), r.stdout);
    assert.ok(r.stdout.includes(`\nExecStart=${process.execPath} ${path.join(ROOT, 'dist/daemon/main.js')}\n`));
    assert.match(
      r.stdout,
      /\n# would run:\nsystemctl --user daemon-reload\nsystemctl --user enable --now cwmd.service\n/,
    );
    assert.equal(fs.existsSync(path.dirname(sys.unitFile)), false, 'nothing written');
    assert.deepEqual(sys.log(), [], 'systemctl never ran');
  });

  it('--socket-activation, --system and --json', async () => {
    const sa = await cli(sys, ['service', 'install', '--dry-run', '--socket-activation']);
    assert.equal(sa.code, 0, sa.stderr);
    assert.match(sa.stdout, /ListenStream=%t\/cwm\/cwmd\.sock/);
    assert.match(sa.stdout, /systemctl --user enable --now cwmd\.socket/);
    const system = await cli(sys, ['service', 'install', '--dry-run', '--system', '--run-as', 'nobody']);
    assert.equal(system.code, 0, system.stderr);
    assert.match(system.stdout, /# would write \/etc\/systemd\/system\/cwmd\.service:/);
    assert.match(system.stdout, /\nUser=nobody\n/);
    assert.match(system.stdout, /# note: clients must use CWM_SOCKET=\/run\/cwm\/cwmd\.sock/);
    const json = await cli(sys, ['--json', 'service', 'install', '--dry-run']);
    const plan = JSON.parse(json.stdout) as { dryRun: boolean; files: { path: string }[]; socket: string };
    assert.equal(plan.dryRun, true);
    assert.equal(plan.files[0]?.path, sys.unitFile);
    assert.equal(plan.socket, sys.socket);
    const un = await cli(sys, ['service', 'uninstall', '--dry-run']);
    assert.equal(un.code, 0, un.stderr);
    assert.match(un.stdout, /systemctl --user disable --now cwmd\.service cwmd\.socket/);
    assert.deepEqual(sys.log(), []);
  });

  it('renders the macOS LaunchAgent too (--platform darwin), a valid property list', async (t) => {
    const r = await cli(sys, ['--json', 'service', 'install', '--dry-run', '--platform', 'darwin']);
    assert.equal(r.code, 0, r.stderr);
    const plan = JSON.parse(r.stdout) as { files: { path: string; content: string }[]; install: string[][] };
    assert.equal(plan.files[0]?.path, path.join(sys.dir, 'home', 'Library/LaunchAgents/com.cwm.daemon.plist'));
    assert.equal(plan.install.at(-1)?.[1], 'bootstrap');
    if (!hasTool('python3')) {
      if (process.env.CI) assert.fail('python3 is missing (plistlib parses the plist): apt-get install -y python3');
      t.skip('python3 is not installed');
      return;
    }
    const parsed = JSON.parse(
      execFileSync(
        'python3',
        ['-c', 'import plistlib,sys,json; print(json.dumps(plistlib.loads(sys.stdin.buffer.read())))'],
        {
          input: plan.files[0]?.content,
          encoding: 'utf8',
        },
      ),
    ) as { Label: string; RunAtLoad: boolean; ProgramArguments: string[] };
    assert.equal(parsed.Label, 'com.cwm.daemon');
    assert.equal(parsed.RunAtLoad, true);
    assert.equal(parsed.ProgramArguments[0], process.execPath);
  });
});

describe('cwm service without a running service manager', () => {
  let sys: FakeSystem;
  before(() => {
    sys = fakeSystem('offline');
  });
  after(() => sys.cleanup());

  it('install and status say so and exit 1; nothing is written', async () => {
    const r = await cli(sys, ['service', 'install']);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /error: cannot manage the cwmd service: the systemd user manager is not running here \(systemctl: offline\)/,
    );
    assert.match(r.stderr, /hint: .*--dry-run/);
    assert.equal(fs.existsSync(sys.unitFile), false);
    const st = await cli(sys, ['service', 'status']);
    assert.equal(st.code, 1);
    assert.match(st.stdout, /installed: +no/);
    assert.match(st.stderr, /not running here/);
  });
});

describe('cwm service lifecycle (fake systemctl running the real unit)', () => {
  let sys: FakeSystem;
  before(() => {
    sys = fakeSystem();
  });
  after(() => sys.cleanup());

  it('install writes and enables the unit, whose ExecStart starts cwmd on the service socket', async () => {
    const r = await cli(sys, ['service', 'install']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`wrote ${sys.unitFile}`));
    assert.match(r.stdout, /enabled and started cwmd\.service \(cwmd pid \d+\)/);
    assert.ok(fs.existsSync(path.join(path.dirname(sys.unitFile), 'default.target.wants', 'cwmd.service')));
    assert.ok(await helloPid(sys.socket), 'cwmd answers on %t/cwm/cwmd.sock');
    assert.deepEqual(sys.log().slice(-2), ['--user daemon-reload', '--user enable --now cwmd.service']);
    assert.ok(fs.statSync(path.join(sys.env.HOME as string, '.local/share/cwm')).isDirectory(), 'data dir created');
  });

  it('status reports installed, enabled, active and the running daemon', async () => {
    const r = await cli(sys, ['--json', 'service', 'status']);
    assert.equal(r.code, 0, r.stderr);
    const st = JSON.parse(r.stdout);
    assert.deepEqual(
      [st.installed, st.enabled, st.active, st.daemon.running, st.socket],
      [true, true, true, true, sys.socket],
    );
  });

  it('cwm daemon stop / start go through the service manager', async () => {
    const stop = await cli(sys, ['daemon', 'stop']);
    assert.equal(stop.code, 0, stop.stderr);
    assert.equal(sys.log().at(-1), '--user stop cwmd');
    assert.equal(await helloPid(sys.socket), null);
    const start = await cli(sys, ['daemon', 'start']);
    assert.equal(start.code, 0, start.stderr);
    assert.match(start.stdout, /cwmd started \(pid \d+\)/);
    assert.equal(sys.log().at(-1), '--user start cwmd');
    assert.ok(await helloPid(sys.socket));
  });

  it('cwm-mcp asks the service manager to start a stopped daemon', async () => {
    assert.equal((await cli(sys, ['daemon', 'stop'])).code, 0);
    const transport = new StdioClientTransport({
      command: process.execPath,
      args: [CWM_MCP],
      env: { ...(sys.env as Record<string, string>), CWM_MCP_LOG_LEVEL: 'warn' },
      stderr: 'pipe',
    });
    const client = new Client({ name: 'cwm-test', version: '0' });
    await client.connect(transport);
    try {
      const r = await client.callTool({ name: 'health_check', arguments: { component: 'registry' } });
      assert.notEqual(r.isError, true, JSON.stringify(r.content));
      assert.ok(sys.log().includes('--user start cwmd'));
      assert.ok(await helloPid(sys.socket));
    } finally {
      await client.close();
    }
  });

  it('with the manager gone, cwm daemon start warns and spawns cwmd itself', async () => {
    assert.equal((await cli(sys, ['daemon', 'stop'])).code, 0);
    const offline = { env: { ...sys.env, STUB_MANAGER: 'offline' } };
    const start = await cli(offline, ['daemon', 'start']);
    assert.equal(start.code, 0, start.stderr);
    assert.match(start.stderr, /installed as a systemd service, but the systemd user manager is not running here/);
    assert.ok(await helloPid(sys.socket));
    assert.equal((await cli(offline, ['daemon', 'stop'])).code, 0);
    assert.equal(await helloPid(sys.socket), null);
  });

  it('uninstall stops and disables the service and removes the unit', async () => {
    assert.equal((await cli(sys, ['daemon', 'start'])).code, 0);
    const r = await cli(sys, ['service', 'uninstall']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`removed ${sys.unitFile}`));
    assert.equal(fs.existsSync(sys.unitFile), false);
    assert.ok(sys.log().includes('--user disable --now cwmd.service'));
    assert.equal(await helloPid(sys.socket), null);
    const again = await cli(sys, ['service', 'uninstall']);
    assert.equal(again.code, 0);
    assert.match(again.stdout, /not installed/);
  });
});

/** Bind a listening Unix socket in this process and hand its fd to cwmd as fd 3, the way systemd does. */
async function activatedDaemon(
  dir: string,
  env: Record<string, string>,
): Promise<{ proc: ChildProcess; socket: string; stderr: () => string }> {
  const bound = path.join(dir, 'bound.sock');
  const socket = path.join(dir, 'cwmd.sock');
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(bound, resolve));
  const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
  const proc = spawn(process.execPath, [CWMD], {
    stdio: ['ignore', 'ignore', 'pipe', fd],
    env: {
      PATH: process.env.PATH ?? '',
      HOME: dir,
      CWM_SOCKET: socket,
      CWM_DATA_DIR: path.join(dir, 'data'),
      CWM_CONFIG: path.join(dir, 'config.json'),
      CWM_LOG_FILE: path.join(dir, 'cwmd.log'),
      CWM_ENGINE_URL: 'http://127.0.0.1:9',
      CWM_GATEWAY: 'off',
      ...env,
    },
  });
  let err = '';
  proc.stderr?.on('data', (d: Buffer) => {
    err += d.toString('utf8');
  });
  // Our copy must not accept connections meant for cwmd: move the socket to its public name, then close ours
  // (closing unlinks only the old name; the socket itself lives on in cwmd's fd 3).
  fs.renameSync(bound, socket);
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return { proc, socket, stderr: () => err };
}

async function waitHello(socket: string, proc: ChildProcess, stderr: () => string): Promise<CwmClient> {
  for (let i = 0; i < 400; i++) {
    assert.equal(proc.exitCode, null, `cwmd exited: ${stderr()}`);
    try {
      return await CwmClient.connect({ socket, connectTimeoutMs: 1000 });
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  assert.fail(`cwmd never answered: ${stderr()}`);
}

function exitOf(proc: ChildProcess): Promise<number | null> {
  return proc.exitCode !== null ? Promise.resolve(proc.exitCode) : new Promise((r) => proc.once('exit', (c) => r(c)));
}

describe('socket activation (LISTEN_FDS)', () => {
  const dirs: string[] = [];
  after(() => {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  it('cwmd serves a listening socket handed over as fd 3, and leaves it to its owner on exit', async () => {
    const dir = tempDir('cwm-sa');
    dirs.push(dir);
    const d = await activatedDaemon(dir, { LISTEN_FDS: '1' });
    const c = await waitHello(d.socket, d.proc, d.stderr);
    const st = await c.call('daemon.status');
    assert.equal(st.pid, d.proc.pid);
    assert.equal(st.socket, d.socket);
    await c.call('daemon.shutdown', { reason: 'test' }).catch(() => {});
    c.close();
    assert.equal(await exitOf(d.proc), 0);
    assert.ok(fs.existsSync(d.socket), 'the socket belongs to the service manager: cwmd does not unlink it');
  });

  it('LISTEN_FDS meant for another process (LISTEN_PID) is ignored: cwmd binds its own socket', async () => {
    const dir = tempDir('cwm-sa');
    dirs.push(dir);
    const socket = path.join(dir, 'own.sock');
    const proc = spawn(process.execPath, [CWMD], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: {
        PATH: process.env.PATH ?? '',
        HOME: dir,
        LISTEN_FDS: '1',
        LISTEN_PID: '1',
        CWM_SOCKET: socket,
        CWM_DATA_DIR: path.join(dir, 'data'),
        CWM_CONFIG: path.join(dir, 'config.json'),
        CWM_LOG_FILE: path.join(dir, 'cwmd.log'),
        CWM_ENGINE_URL: 'http://127.0.0.1:9',
        CWM_GATEWAY: 'off',
      },
    });
    let err = '';
    proc.stderr?.on('data', (b: Buffer) => {
      err += b.toString('utf8');
    });
    const c = await waitHello(socket, proc, () => err);
    assert.equal(c.hello?.pid, proc.pid);
    await c.call('daemon.shutdown', {}).catch(() => {});
    c.close();
    assert.equal(await exitOf(proc), 0);
    assert.equal(fs.existsSync(socket), false, 'its own socket is removed on exit');
  });

  it('under systemd-socket-activate (LISTEN_PID = its pid), cwmd starts on the first connection', async (t) => {
    if (!hasTool('systemd-socket-activate')) {
      if (process.env.CI) assert.fail('systemd-socket-activate is missing: apt-get install -y systemd');
      t.skip('systemd-socket-activate is not installed (apt-get install systemd)');
      return;
    }
    const dir = tempDir('cwm-sa');
    dirs.push(dir);
    const socket = path.join(dir, 'cwmd.sock');
    const env = {
      PATH: process.env.PATH ?? '',
      HOME: dir,
      CWM_SOCKET: socket,
      CWM_DATA_DIR: path.join(dir, 'data'),
      CWM_CONFIG: path.join(dir, 'config.json'),
      CWM_LOG_FILE: path.join(dir, 'cwmd.log'),
      CWM_ENGINE_URL: 'http://127.0.0.1:9',
      CWM_GATEWAY: 'off',
    };
    const pass = Object.keys(env).flatMap((k) => ['-E', k]);
    const proc = spawn('systemd-socket-activate', ['-l', socket, ...pass, process.execPath, CWMD], {
      env,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    proc.stderr?.on('data', (b: Buffer) => {
      err += b.toString('utf8');
    });
    while (!fs.existsSync(socket)) {
      assert.equal(proc.exitCode, null, err);
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(fs.existsSync(path.join(dir, 'cwmd.log')), false, 'cwmd has not started before a client connects');
    const c = await waitHello(socket, proc, () => err);
    assert.equal(c.hello?.pid, proc.pid, 'the activator exec()s cwmd in place: LISTEN_PID matched');
    await c.call('daemon.shutdown', {}).catch(() => {});
    c.close();
    assert.equal(await exitOf(proc), 0);
  });
});
