import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Command, Option } from 'commander';
import { resolvePaths } from '../../../daemon/paths.js';
import { CwmError, isCwmError } from '../../../daemon/protocol/index.js';
import { CwmClient } from '../../rpc-client.js';
import { globals } from '../context.js';
import { exitWithError, kv, out, printJson, warn } from '../output.js';

/**
 * cwmd under a service manager: render the unit / plist for this platform, install, uninstall, report status, and
 * let `cwm daemon start|stop` and cwm-mcp defer to an installed service.
 */

export type Manager = 'systemd' | 'launchd';
export type Scope = 'user' | 'system';

export const SERVICE_NAME = 'cwmd';
export const LAUNCHD_LABEL = 'com.cwm.daemon';
const SERVICE_READY_TIMEOUT_MS = 15_000;
const COMMAND_TIMEOUT_MS = 30_000;

/** Everything the service code reads from the machine, so tests can fake a host. */
export interface Host {
  platform: NodeJS.Platform;
  env: NodeJS.ProcessEnv;
  home: string;
  uid: number;
  user: string;
  execPath: string;
  /** The package root: holds systemd/, launchd/ and dist/daemon/main.js. */
  root: string;
}

/** Walk up from this module to cwm's package root (works from dist/ and, under tsx, from the sources). */
export function packageRoot(from: string = fileURLToPath(import.meta.url)): string {
  let dir = path.dirname(from);
  for (;;) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: unknown };
      if (pkg.name === 'cwm') return dir;
    } catch {
      // no (readable) package.json here: keep walking up
    }
    const up = path.dirname(dir);
    if (up === dir) throw new CwmError('INTERNAL', `cannot find the cwm package root above ${from}`);
    dir = up;
  }
}

export function currentHost(env: NodeJS.ProcessEnv = process.env): Host {
  const info = os.userInfo();
  return {
    platform: process.platform,
    env,
    home: os.homedir(),
    uid: info.uid,
    user: info.username,
    execPath: process.execPath,
    root: packageRoot(),
  };
}

/**
 * $XDG_RUNTIME_DIR, or the directory logind makes for us when the variable is missing: editors start MCP servers
 * with a minimal environment, and `systemctl --user` (and the user unit's %t) need it.
 */
export function runtimeDir(env: NodeJS.ProcessEnv, uid: number): string | null {
  if (env.XDG_RUNTIME_DIR) return env.XDG_RUNTIME_DIR;
  const guess = `/run/user/${uid}`;
  try {
    const st = fs.statSync(guess);
    return st.isDirectory() && st.uid === uid ? guess : null;
  } catch {
    return null;
  }
}

export interface ServiceFile {
  path: string;
  content: string;
}

export interface ServicePlan {
  manager: Manager;
  scope: Scope;
  socketActivation: boolean;
  /** The socket clients must use to reach the service's daemon. */
  socket: string | null;
  /** The unit that is enabled and started (cwmd.service, cwmd.socket) or the launchd label. */
  unit: string;
  files: ServiceFile[];
  /** Directories to create before the service first starts (its sandbox only allows writing to these). */
  dirs: string[];
  install: string[][];
  uninstall: string[][];
  /** How to read the logs. */
  logs: string;
  notes: string[];
}

export interface PlanOptions {
  scope: Scope;
  socketActivation: boolean;
  /** System scope: the account cwmd runs as. */
  runAs?: string | undefined;
}

export function managerFor(platform: NodeJS.Platform): Manager {
  if (platform === 'linux') return 'systemd';
  if (platform === 'darwin') return 'launchd';
  throw new CwmError('UNSUPPORTED', `cwm service does not support ${platform}`, {
    hint: 'run the daemon with `cwm daemon start` (or your own service wrapper around `cwmd`)',
  });
}

function unitDir(scope: Scope, host: Host): string {
  if (scope === 'system') return '/etc/systemd/system';
  return path.join(host.env.XDG_CONFIG_HOME || path.join(host.home, '.config'), 'systemd', 'user');
}

function launchdPlistPath(scope: Scope, host: Host): string {
  return scope === 'system'
    ? path.join('/Library/LaunchDaemons', `${LAUNCHD_LABEL}.plist`)
    : path.join(host.home, 'Library', 'LaunchAgents', `${LAUNCHD_LABEL}.plist`);
}

export function daemonMain(host: Host): string {
  return path.join(host.root, 'dist', 'daemon', 'main.js');
}

/** Replace every @@KEY@@; a placeholder left over is a bug in the template or the caller. */
export function renderTemplate(text: string, vars: Record<string, string>): string {
  const outText = text.replace(/@@([A-Z_]+)@@/g, (m, key: string) => vars[key] ?? m);
  const left = outText.match(/@@[A-Z_]+@@/);
  if (left) throw new CwmError('INTERNAL', `template placeholder ${left[0]} was not filled in`);
  return outText;
}

/** One systemd word: specifiers (%) and, in Exec lines, variables ($) escaped; quoted when it needs it. */
export function systemdWord(s: string, exec = false): string {
  let v = s.replace(/%/g, '%%');
  if (exec) v = v.replace(/\$/g, '$$$$');
  if (/^[A-Za-z0-9_/.:+,@=%-]+$/.test(v)) return v;
  return `"${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

function systemdEnv(key: string, value: string): string {
  const v = `${key}=${value}`.replace(/%/g, '%%');
  return /^[A-Za-z0-9_/.:+,@=%-]+$/.test(v) ? `Environment=${v}` : `Environment="${v.replace(/(["\\])/g, '\\$1')}"`;
}

export function xmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/**
 * Where unprivileged user namespaces are off (sysctl, or Ubuntu's AppArmor restriction) a user manager cannot
 * build the mount sandbox, and the unit would fail with status=226/NAMESPACE. Checked at install time.
 */
export function userNamespacesAvailable(read: (p: string) => string | null = readSmall): boolean {
  if (read('/proc/sys/kernel/unprivileged_userns_clone')?.trim() === '0') return false;
  if (read('/proc/sys/kernel/apparmor_restrict_unprivileged_userns')?.trim() === '1') return false;
  const max = read('/proc/sys/user/max_user_namespaces')?.trim();
  return max !== '0';
}

function readSmall(p: string): string | null {
  try {
    return fs.readFileSync(p, 'utf8');
  } catch {
    return null;
  }
}

/** Comment out the `# >>> ... # <<<` block of a unit (the user-namespace sandbox) when the host cannot provide it. */
export function dropSandboxBlock(unit: string): string {
  let inBlock = false;
  return unit
    .split('\n')
    .map((line) => {
      if (line.startsWith('# >>>')) {
        inBlock = true;
        return `${line}\n# (disabled by cwm service install: unprivileged user namespaces are not available here)`;
      }
      if (line.startsWith('# <<<')) {
        inBlock = false;
        return line;
      }
      return inBlock && line !== '' && !line.startsWith('#') ? `#${line}` : line;
    })
    .join('\n');
}

function template(host: Host, rel: string): string {
  return fs.readFileSync(path.join(host.root, rel), 'utf8');
}

/** Render the files and commands for this platform and scope. Pure apart from reading the templates. */
export function planService(opts: PlanOptions, host: Host, sandbox = userNamespacesAvailable()): ServicePlan {
  const manager = managerFor(host.platform);
  const docs = `file://${encodeURI(path.join(host.root, 'docs', 'SERVICE.md'))}`.replace(/%/g, '%%');
  const paths = resolvePaths({}, { ...host.env, CWM_SOCKET: undefined }, host.platform, host.home);
  const execStart = [host.execPath, daemonMain(host)].map((w) => systemdWord(w, true)).join(' ');
  const runAs = opts.runAs ?? host.env.SUDO_USER ?? host.user;
  const notes: string[] = [];

  if (manager === 'launchd') {
    if (opts.socketActivation) {
      throw new CwmError('UNSUPPORTED', 'socket activation is only available with systemd', {
        hint: 'drop --socket-activation: the LaunchAgent starts cwmd at login (RunAtLoad) and keeps it alive',
      });
    }
    const system = opts.scope === 'system';
    const logDir = system ? '/Library/Logs/cwm' : path.join(host.home, 'Library', 'Logs', 'cwm');
    const dataDir = system ? '/Library/Application Support/cwm' : paths.dataDir;
    const config = system ? '/Library/Application Support/cwm/config.json' : paths.configFile;
    const socket = system ? '/var/run/cwm/cwmd.sock' : paths.socket;
    const vars: Record<string, string> = {
      NODE: xmlEscape(host.execPath),
      CWMD: xmlEscape(daemonMain(host)),
      SOCKET: xmlEscape(socket),
      DATA_DIR: xmlEscape(dataDir),
      CONFIG: xmlEscape(config),
      LOG_DIR: xmlEscape(logDir),
      USER_NAME: system ? `  <key>UserName</key>\n  <string>${xmlEscape(runAs)}</string>` : '',
    };
    const plistPath = launchdPlistPath(opts.scope, host);
    const domain = system ? 'system' : `gui/${host.uid}`;
    if (system) notes.push(`clients must use CWM_SOCKET=${socket}`);
    return {
      manager,
      scope: opts.scope,
      socketActivation: false,
      socket,
      unit: LAUNCHD_LABEL,
      files: [{ path: plistPath, content: renderTemplate(template(host, 'launchd/com.cwm.daemon.plist'), vars) }],
      dirs: [logDir, dataDir, path.dirname(config), path.dirname(socket)],
      install: [
        ['launchctl', 'bootout', `${domain}/${LAUNCHD_LABEL}`],
        ['launchctl', 'enable', `${domain}/${LAUNCHD_LABEL}`],
        ['launchctl', 'bootstrap', domain, plistPath],
      ],
      uninstall: [['launchctl', 'bootout', `${domain}/${LAUNCHD_LABEL}`]],
      logs: `tail -f ${path.join(logDir, 'cwmd.log')}`,
      notes,
    };
  }

  const dir = unitDir(opts.scope, host);
  const ctl = opts.scope === 'user' ? ['systemctl', '--user'] : ['systemctl'];
  const unit = opts.socketActivation ? `${SERVICE_NAME}.socket` : `${SERVICE_NAME}.service`;
  const files: ServiceFile[] = [];
  let socket: string | null;
  let dirs: string[] = [];
  if (opts.scope === 'user') {
    const rt = runtimeDir(host.env, host.uid);
    socket = rt ? path.join(rt, 'cwm', 'cwmd.sock') : null;
    const rw = [...new Set([paths.dataDir, path.dirname(paths.logFile), path.dirname(paths.configFile)])];
    dirs = rw;
    let text = renderTemplate(template(host, 'systemd/cwmd.service'), {
      DOCS: docs,
      EXEC_START: execStart,
      ENVIRONMENT: [
        systemdEnv('CWM_DATA_DIR', paths.dataDir),
        systemdEnv('CWM_CONFIG', paths.configFile),
        systemdEnv('CWM_LOG_FILE', paths.logFile),
      ].join('\n'),
      READ_WRITE_PATHS: rw.map((p) => systemdWord(p)).join(' '),
    });
    if (!sandbox) {
      text = dropSandboxBlock(text);
      notes.push('unprivileged user namespaces are off here: the unit runs without its mount sandbox');
    }
    files.push({ path: path.join(dir, `${SERVICE_NAME}.service`), content: text });
    if (host.env.CWM_SOCKET && socket && host.env.CWM_SOCKET !== socket) {
      notes.push(`CWM_SOCKET is set to ${host.env.CWM_SOCKET}, but the service listens on ${socket}: unset it`);
    }
  } else {
    if (runAs === 'root') notes.push('cwmd will run as root; pass --run-as <user> to run it as an ordinary account');
    socket = '/run/cwm/cwmd.sock';
    files.push({
      path: path.join(dir, `${SERVICE_NAME}.service`),
      content: renderTemplate(template(host, 'systemd/cwmd-system.service'), {
        DOCS: docs,
        EXEC_START: execStart,
        USER: systemdWord(runAs),
        GROUP: systemdWord(primaryGroupOf(runAs) ?? runAs),
      }),
    });
    notes.push(`clients must use CWM_SOCKET=${socket} (also in the MCP server's "env")`);
  }
  if (opts.socketActivation) {
    const system = opts.scope === 'system';
    files.push({
      path: path.join(dir, `${SERVICE_NAME}.socket`),
      content: renderTemplate(template(host, 'systemd/cwmd.socket'), {
        DOCS: docs,
        // the system socket's directory must be traversable by the service user before cwmd first starts
        DIRECTORY_MODE: system ? '0755' : '0700',
        SOCKET_OWNER: system
          ? `SocketUser=${systemdWord(runAs)}\nSocketGroup=${systemdWord(primaryGroupOf(runAs) ?? runAs)}`
          : '',
      }),
    });
  }
  return {
    manager,
    scope: opts.scope,
    socketActivation: opts.socketActivation,
    socket,
    unit,
    files,
    dirs,
    install: [
      [...ctl, 'daemon-reload'],
      [...ctl, 'enable', '--now', unit],
    ],
    uninstall: [
      [...ctl, 'disable', '--now', ...files.map((f) => path.basename(f.path))],
      [...ctl, 'daemon-reload'],
    ],
    logs: opts.scope === 'user' ? 'journalctl --user -u cwmd -f' : 'journalctl -u cwmd -f',
    notes,
  };
}

function primaryGroupOf(user: string): string | null {
  const passwd = readSmall('/etc/passwd');
  const group = readSmall('/etc/group');
  const gid = passwd
    ?.split('\n')
    .map((l) => l.split(':'))
    .find((f) => f[0] === user)?.[3];
  if (gid === undefined) return null;
  return (
    group
      ?.split('\n')
      .map((l) => l.split(':'))
      .find((f) => f[2] === gid)?.[0] ?? null
  );
}

// ---------------------------------------------------------------------------------------------------------------
// Running the service manager

export interface CmdResult {
  code: number;
  stdout: string;
  stderr: string;
  missing: boolean;
}

/** Run a command; never throws (a missing binary is `missing: true`). XDG_RUNTIME_DIR is filled in for --user. */
export function runCommand(argv: string[], host: Host): Promise<CmdResult> {
  const [cmd, ...args] = argv as [string, ...string[]];
  const env = { ...host.env };
  const rt = runtimeDir(host.env, host.uid);
  if (rt && !env.XDG_RUNTIME_DIR) env.XDG_RUNTIME_DIR = rt;
  return new Promise((resolve) => {
    execFile(cmd, args, { env, timeout: COMMAND_TIMEOUT_MS, encoding: 'utf8' }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: unknown }) | null;
      if (e && e.code === 'ENOENT') {
        resolve({ code: 127, stdout: '', stderr: `${cmd}: command not found`, missing: true });
        return;
      }
      const code = e ? (typeof e.code === 'number' ? e.code : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr), missing: false });
    });
  });
}

/** Is the service manager there and running? With the reason when it is not. */
export async function managerAvailable(
  manager: Manager,
  scope: Scope,
  host: Host,
): Promise<{ ok: true } | { ok: false; reason: string }> {
  if (manager === 'launchd') {
    const r = await runCommand(['launchctl', 'version'], host);
    return r.missing ? { ok: false, reason: 'launchctl is not installed' } : { ok: true };
  }
  const r = await runCommand(
    [...(scope === 'user' ? ['systemctl', '--user'] : ['systemctl']), 'is-system-running'],
    host,
  );
  if (r.missing) return { ok: false, reason: 'systemctl is not installed' };
  const state = r.stdout.trim();
  if (['running', 'degraded', 'starting', 'initializing', 'maintenance'].includes(state)) return { ok: true };
  const why = (r.stderr.trim() || state || `exit ${r.code}`).split('\n')[0];
  const what = scope === 'user' ? 'the systemd user manager' : 'systemd';
  return { ok: false, reason: `${what} is not running here (systemctl: ${why})` };
}

function managerMissing(manager: Manager, scope: Scope, reason: string): CwmError {
  return new CwmError('UNSUPPORTED', `cannot manage the cwmd service: ${reason}`, {
    hint:
      manager === 'systemd'
        ? `\`cwm service install ${scope === 'system' ? '--system ' : ''}--dry-run\` prints the unit to install by hand; without a service manager use \`cwm daemon start\``
        : 'without launchd use `cwm daemon start`',
  });
}

// ---------------------------------------------------------------------------------------------------------------
// What is installed (cheap: files only, no process spawned), for `cwm daemon start` and cwm-mcp

export interface InstalledService {
  manager: Manager;
  scope: Scope;
  socketActivation: boolean;
  /** The socket the service's daemon listens on. */
  socket: string;
  enabled: boolean;
  files: string[];
}

function systemdEnabled(dir: string, target: string, unit: string): boolean {
  return fs.existsSync(path.join(dir, `${target}.wants`, unit));
}

/** The installed + enabled cwm service whose socket is `socket`, if any. */
export function findService(socket: string, host: Host): InstalledService | null {
  let manager: Manager;
  try {
    manager = managerFor(host.platform);
  } catch {
    return null;
  }
  const candidates: InstalledService[] = [];
  if (manager === 'systemd') {
    const rt = runtimeDir(host.env, host.uid);
    const scopes: [Scope, string, string, string | null][] = [
      ['user', unitDir('user', host), 'default.target', rt ? path.join(rt, 'cwm', 'cwmd.sock') : null],
      ['system', unitDir('system', host), 'multi-user.target', '/run/cwm/cwmd.sock'],
    ];
    for (const [scope, dir, target, sock] of scopes) {
      const service = path.join(dir, `${SERVICE_NAME}.service`);
      const sockUnit = path.join(dir, `${SERVICE_NAME}.socket`);
      if (!sock || !fs.existsSync(service)) continue;
      const activation = fs.existsSync(sockUnit) && systemdEnabled(dir, 'sockets.target', `${SERVICE_NAME}.socket`);
      const enabled = activation || systemdEnabled(dir, target, `${SERVICE_NAME}.service`);
      candidates.push({
        manager,
        scope,
        socketActivation: activation,
        socket: sock,
        enabled,
        files: [service, ...(fs.existsSync(sockUnit) ? [sockUnit] : [])],
      });
    }
  } else {
    for (const scope of ['user', 'system'] as const) {
      const plist = launchdPlistPath(scope, host);
      if (!fs.existsSync(plist)) continue;
      const m = /<key>CWM_SOCKET<\/key>\s*<string>([^<]*)<\/string>/.exec(fs.readFileSync(plist, 'utf8'));
      if (!m?.[1]) continue;
      const sock = m[1]
        .replace(/&lt;/g, '<')
        .replace(/&gt;/g, '>')
        .replace(/&quot;/g, '"')
        .replace(/&amp;/g, '&');
      candidates.push({ manager, scope, socketActivation: false, socket: sock, enabled: true, files: [plist] });
    }
  }
  return candidates.find((c) => c.enabled && path.resolve(c.socket) === path.resolve(socket)) ?? null;
}

function ctlFor(svc: { manager: Manager; scope: Scope }, host: Host, verb: string, units: string[]): string[] {
  if (svc.manager === 'launchd') {
    const domain = svc.scope === 'system' ? 'system' : `gui/${host.uid}`;
    return verb === 'stop'
      ? ['launchctl', 'kill', 'SIGTERM', `${domain}/${LAUNCHD_LABEL}`]
      : ['launchctl', 'kickstart', `${domain}/${LAUNCHD_LABEL}`];
  }
  return [...(svc.scope === 'user' ? ['systemctl', '--user'] : ['systemctl']), verb, ...units];
}

async function hello(socket: string): Promise<{ pid: number; version: string } | null> {
  try {
    const c = await CwmClient.connect({ socket, connectTimeoutMs: 2000 });
    const h = c.hello;
    c.close();
    return { pid: h?.pid ?? 0, version: h?.daemonVersion ?? '?' };
  } catch (err) {
    if (isCwmError(err) && err.code === 'NOT_RUNNING') return null;
    throw err;
  }
}

function serviceHint(svc: { manager: Manager; scope: Scope }): string {
  if (svc.manager === 'launchd') return `see \`launchctl print gui/$UID/${LAUNCHD_LABEL}\` and ~/Library/Logs/cwm/`;
  return svc.scope === 'user'
    ? 'see `systemctl --user status cwmd` and `journalctl --user -u cwmd -e`'
    : 'see `systemctl status cwmd` and `journalctl -u cwmd -e`';
}

/** Ask the service manager to start cwmd and wait until it answers on its socket. */
export async function startService(
  svc: InstalledService,
  host: Host,
  timeoutMs = SERVICE_READY_TIMEOUT_MS,
): Promise<{ pid: number; already: boolean }> {
  const running = await hello(svc.socket);
  if (running) return { pid: running.pid, already: true };
  const units = svc.socketActivation ? [`${SERVICE_NAME}.socket`, `${SERVICE_NAME}.service`] : [`${SERVICE_NAME}`];
  let r = await runCommand(ctlFor(svc, host, 'start', units), host);
  if (r.code !== 0 && svc.manager === 'launchd' && svc.files[0]) {
    // kickstart only knows loaded agents; after a bootout the plist has to be bootstrapped again
    r = await runCommand(
      ['launchctl', 'bootstrap', svc.scope === 'system' ? 'system' : `gui/${host.uid}`, svc.files[0]],
      host,
    );
  }
  if (r.code !== 0) {
    throw new CwmError(
      r.missing ? 'UNSUPPORTED' : 'INTERNAL',
      `the ${svc.manager} service could not be started: ${(r.stderr || r.stdout).trim() || `exit ${r.code}`}`,
      {
        hint:
          svc.scope === 'system' && svc.manager === 'systemd'
            ? 'start it as root: `sudo systemctl start cwmd`'
            : serviceHint(svc),
      },
    );
  }
  return { pid: await waitForService(svc, timeoutMs), already: false };
}

/** Wait until the service's daemon answers on its socket; its pid. */
export async function waitForService(
  svc: Pick<InstalledService, 'socket' | 'manager' | 'scope'>,
  timeoutMs = SERVICE_READY_TIMEOUT_MS,
): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const up = await hello(svc.socket).catch(() => null);
    if (up) return up.pid;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new CwmError('TIMEOUT', `the cwmd service did not answer on ${svc.socket} within ${timeoutMs} ms`, {
    hint: serviceHint(svc),
  });
}

/** Stop the service through its manager (a shutdown RPC would be undone by socket activation or KeepAlive). */
export async function stopService(svc: InstalledService, host: Host): Promise<void> {
  const units = svc.socketActivation ? [`${SERVICE_NAME}.socket`, `${SERVICE_NAME}.service`] : [SERVICE_NAME];
  const r = await runCommand(ctlFor(svc, host, 'stop', units), host);
  if (r.code !== 0 && !(svc.manager === 'launchd' && /No such process|not find/i.test(r.stderr))) {
    throw new CwmError('INTERNAL', `the service could not be stopped: ${(r.stderr || r.stdout).trim()}`, {
      hint: serviceHint(svc),
    });
  }
}

/**
 * The installed service for this socket when its manager can run it. A unit file without a running manager
 * (a container, a copied home) is ignored with a warning, and the caller spawns cwmd itself.
 */
export async function usableService(
  socket: string,
  host: Host,
  onWarn: (msg: string) => void,
): Promise<InstalledService | null> {
  const svc = findService(socket, host);
  if (!svc) return null;
  const m = await managerAvailable(svc.manager, svc.scope, host);
  if (m.ok) return svc;
  onWarn(`cwmd is installed as a ${svc.manager} service, but ${m.reason}; starting it directly`);
  return null;
}

// ---------------------------------------------------------------------------------------------------------------
// cwm service install | uninstall | status

interface ServiceCliOpts {
  system?: boolean;
  dryRun?: boolean;
  socketActivation?: boolean;
  runAs?: string;
  platform?: string;
}

function hostFor(o: ServiceCliOpts): Host {
  const host = currentHost();
  if (o.platform) host.platform = o.platform as NodeJS.Platform;
  return host;
}

function printPlan(plan: ServicePlan, verb: 'install' | 'uninstall'): void {
  if (verb === 'install') {
    for (const d of plan.dirs) out(`# would create directory ${d} (mode 0700)`);
    for (const f of plan.files) {
      out(`# would write ${f.path}:`);
      out(f.content.endsWith('\n') ? f.content : `${f.content}\n`);
    }
  } else {
    for (const f of plan.files) out(`# would remove ${f.path}`);
  }
  out('# would run:');
  for (const c of verb === 'install' ? plan.install : plan.uninstall) out(c.join(' '));
  for (const n of plan.notes) out(`# note: ${n}`);
}

async function ensureManager(plan: ServicePlan, host: Host): Promise<void> {
  const m = await managerAvailable(plan.manager, plan.scope, host);
  if (!m.ok) throw managerMissing(plan.manager, plan.scope, m.reason);
  if (plan.scope === 'system' && host.uid !== 0) {
    throw new CwmError('PERMISSION_DENIED', 'installing the system service needs root', {
      hint: 'run `sudo cwm service install --system` (or install the user service without --system)',
    });
  }
}

async function runAll(cmds: string[][], host: Host, tolerate: (argv: string[], r: CmdResult) => boolean) {
  for (const argv of cmds) {
    const r = await runCommand(argv, host);
    if (r.code !== 0 && !tolerate(argv, r)) {
      throw new CwmError(
        'INTERNAL',
        `\`${argv.join(' ')}\` failed: ${(r.stderr || r.stdout).trim() || `exit ${r.code}`}`,
        {
          hint: 'fix the problem above and run the command again',
        },
      );
    }
  }
}

export async function installAction(o: ServiceCliOpts, json: boolean): Promise<void> {
  const host = hostFor(o);
  const scope: Scope = o.system ? 'system' : 'user';
  const plan = planService({ scope, socketActivation: !!o.socketActivation, runAs: o.runAs }, host);
  if (o.dryRun) {
    if (json) printJson({ dryRun: true, ...plan });
    else printPlan(plan, 'install');
    return;
  }
  await ensureManager(plan, host);
  if (!fs.existsSync(daemonMain(host))) {
    throw new CwmError('INTERNAL', `cannot find the daemon at ${daemonMain(host)}`, {
      hint: 'run `npm run build` first',
    });
  }
  // A daemon started by hand on the service's socket would keep the service from binding it: stop it first.
  if (plan.socket && !findService(plan.socket, host)) {
    const running = await hello(plan.socket).catch(() => null);
    if (running) {
      const { stopDaemon } = await import('./daemon.js');
      await stopDaemon(plan.socket);
      if (!json) out(`stopped the cwmd that was running by hand (pid ${running.pid}); the service takes over`);
    }
  }
  for (const d of plan.dirs) fs.mkdirSync(d, { recursive: true, mode: 0o700 });
  for (const f of plan.files) {
    fs.mkdirSync(path.dirname(f.path), { recursive: true, mode: 0o755 });
    fs.writeFileSync(`${f.path}.tmp`, f.content, { mode: 0o644 });
    fs.renameSync(`${f.path}.tmp`, f.path);
  }
  // launchd: bootout fails when the agent was not loaded yet, which is the normal case.
  await runAll(plan.install, host, (argv) => argv[1] === 'bootout');
  // enable --now started it; with socket activation this first connection is what starts cwmd.
  const socket = plan.socket;
  const pid = socket ? await waitForService({ ...plan, socket }).catch(() => null) : null;
  if (json) {
    printJson({ installed: true, files: plan.files.map((f) => f.path), unit: plan.unit, socket: plan.socket, pid });
    return;
  }
  for (const f of plan.files) out(`wrote ${f.path}`);
  out(`enabled and started ${plan.unit}${pid ? ` (cwmd pid ${pid})` : ''}`);
  if (plan.socket) out(`socket: ${plan.socket}`);
  out(`logs:   ${plan.logs}`);
  for (const n of plan.notes) warn(n);
  if (plan.socket && pid === null) warn(`cwmd did not answer yet; ${serviceHint(plan)}`);
}

export async function uninstallAction(o: ServiceCliOpts, json: boolean): Promise<void> {
  const host = hostFor(o);
  const scope: Scope = o.system ? 'system' : 'user';
  const plan = planService({ scope, socketActivation: true, runAs: o.runAs }, host);
  if (o.dryRun) {
    if (json) printJson({ dryRun: true, remove: plan.files.map((f) => f.path), run: plan.uninstall });
    else printPlan({ ...plan, notes: [] }, 'uninstall');
    return;
  }
  const present = plan.files.filter((f) => fs.existsSync(f.path));
  if (present.length === 0) {
    if (json) printJson({ uninstalled: false, reason: 'not installed' });
    else out(`the cwmd ${scope} service is not installed`);
    return;
  }
  await ensureManager(plan, host);
  if (plan.manager === 'systemd') {
    // disable --now also stops it; the reload afterwards forgets the removed files
    const ctl = scope === 'user' ? ['systemctl', '--user'] : ['systemctl'];
    await runAll([[...ctl, 'disable', '--now', ...present.map((f) => path.basename(f.path))]], host, () => false);
    for (const f of present) fs.rmSync(f.path, { force: true });
    await runAll([[...ctl, 'daemon-reload']], host, () => false);
  } else {
    // bootout fails when the agent is not loaded; removing the plist is what matters then
    await runAll(plan.uninstall, host, () => true);
    for (const f of present) fs.rmSync(f.path, { force: true });
  }
  if (json) printJson({ uninstalled: true, removed: present.map((f) => f.path) });
  else {
    for (const f of present) out(`removed ${f.path}`);
    out('cwmd service stopped and uninstalled (your windows and data are kept)');
  }
}

export interface ServiceStatus {
  manager: Manager;
  scope: Scope;
  managerAvailable: boolean;
  reason: string | null;
  installed: boolean;
  files: string[];
  enabled: boolean | null;
  active: boolean | null;
  socketActivation: boolean;
  socket: string | null;
  daemon: { running: boolean; pid: number | null; version: string | null };
}

export async function serviceStatus(o: ServiceCliOpts): Promise<ServiceStatus> {
  const host = hostFor(o);
  const scope: Scope = o.system ? 'system' : 'user';
  const plan = planService({ scope, socketActivation: true, runAs: o.runAs }, host);
  const files = plan.files.map((f) => f.path).filter((p) => fs.existsSync(p));
  const m = await managerAvailable(plan.manager, scope, host);
  let enabled: boolean | null = null;
  let active: boolean | null = null;
  const activation = files.some((f) => f.endsWith('.socket'));
  if (m.ok && files.length > 0) {
    if (plan.manager === 'systemd') {
      const ctl = scope === 'user' ? ['systemctl', '--user'] : ['systemctl'];
      const unit = activation ? `${SERVICE_NAME}.socket` : `${SERVICE_NAME}.service`;
      enabled = (await runCommand([...ctl, 'is-enabled', unit], host)).code === 0;
      active = (await runCommand([...ctl, 'is-active', unit], host)).code === 0;
    } else {
      const domain = scope === 'system' ? 'system' : `gui/${host.uid}`;
      const r = await runCommand(['launchctl', 'print', `${domain}/${LAUNCHD_LABEL}`], host);
      enabled = r.code === 0;
      active = r.code === 0 && /state = running/.test(r.stdout);
    }
  }
  const h = plan.socket ? await hello(plan.socket).catch(() => null) : null;
  return {
    manager: plan.manager,
    scope,
    managerAvailable: m.ok,
    reason: m.ok ? null : m.reason,
    installed: files.length > 0,
    files,
    enabled,
    active,
    socketActivation: activation,
    socket: plan.socket,
    daemon: { running: !!h, pid: h?.pid ?? null, version: h?.version ?? null },
  };
}

function yesNo(v: boolean | null): string {
  return v === null ? 'unknown' : v ? 'yes' : 'no';
}

export function registerService(program: Command): void {
  const s = program
    .command('service')
    .description('run cwmd under the service manager (systemd user/system unit, launchd agent)');
  const common = (c: Command) =>
    c
      .option('--system', 'the system-wide service (root) instead of the per-user one')
      .option('--run-as <user>', 'system service: the account cwmd runs as (default: $SUDO_USER or you)')
      // render another platform's file (docs, tests); only --dry-run makes sense with it
      .addOption(new Option('--platform <platform>', 'linux | darwin').hideHelp());

  common(s.command('install'))
    .description('write the unit (or LaunchAgent) for this platform, enable it and start cwmd')
    .option('--dry-run', 'print the files and the commands instead of doing anything')
    .option('--socket-activation', 'systemd: also install cwmd.socket and start cwmd on the first connection')
    .action(async (o: ServiceCliOpts, cmd: Command) => {
      const g = globals(cmd);
      try {
        await installAction(o, !!g.json);
      } catch (err) {
        exitWithError(err, !!g.json);
      }
    });

  common(s.command('uninstall'))
    .description('stop and disable the service and remove its files (data is kept)')
    .option('--dry-run', 'print what would be removed and run')
    .action(async (o: ServiceCliOpts, cmd: Command) => {
      const g = globals(cmd);
      try {
        await uninstallAction(o, !!g.json);
      } catch (err) {
        exitWithError(err, !!g.json);
      }
    });

  common(s.command('status'))
    .description('is the service installed, enabled, active? is cwmd answering?')
    .action(async (o: ServiceCliOpts, cmd: Command) => {
      const g = globals(cmd);
      try {
        const st = await serviceStatus(o);
        if (g.json) printJson(st);
        else
          out(
            kv([
              ['service', `${st.manager} (${st.scope})`],
              ['manager', st.managerAvailable ? 'available' : `unavailable: ${st.reason}`],
              ['installed', st.installed ? st.files.join(', ') : 'no'],
              ['socket activation', st.socketActivation ? 'yes' : 'no'],
              ['enabled', yesNo(st.enabled)],
              ['active', yesNo(st.active)],
              ['socket', st.socket],
              [
                'cwmd',
                st.daemon.running ? `running (pid ${st.daemon.pid}, version ${st.daemon.version})` : 'not running',
              ],
            ]),
          );
        if (!st.managerAvailable) {
          process.stderr.write(`error: ${st.reason}\n`);
          process.exit(1);
        }
      } catch (err) {
        exitWithError(err, !!g.json);
      }
    });
}
