/** Talking to the service manager (systemctl, launchctl): find, start, stop, status of the installed cwmd service. */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CwmError, isCwmError } from '../../daemon/protocol/index.js';
import { CwmClient } from '../rpc-client.js';
import {
  type Host,
  LAUNCHD_LABEL,
  launchdPlistPath,
  type Manager,
  managerFor,
  runtimeDir,
  type Scope,
  SERVICE_NAME,
  unitDir,
} from './host.js';
import { planService } from './render.js';

const SERVICE_READY_TIMEOUT_MS = 15_000;
const COMMAND_TIMEOUT_MS = 30_000;

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

export function managerMissing(manager: Manager, scope: Scope, reason: string): CwmError {
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

export async function hello(socket: string): Promise<{ pid: number; version: string } | null> {
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

export function serviceHint(svc: { manager: Manager; scope: Scope }): string {
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
// Status, for `cwm service status`

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

/** Installed? enabled? active? is cwmd answering? (enabled and active are null when not installed or no manager) */
export async function serviceStatus(host: Host, scope: Scope, runAs?: string): Promise<ServiceStatus> {
  const plan = planService({ scope, socketActivation: true, runAs }, host);
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
