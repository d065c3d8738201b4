/** Host detection and paths: what the service code reads from the machine, and where units and plists go. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CwmError } from '../../daemon/protocol/index.js';

export type Manager = 'systemd' | 'launchd';
export type Scope = 'user' | 'system';

export const SERVICE_NAME = 'cwmd';
export const LAUNCHD_LABEL = 'com.cwm.daemon';

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

export function managerFor(platform: NodeJS.Platform): Manager {
  if (platform === 'linux') return 'systemd';
  if (platform === 'darwin') return 'launchd';
  throw new CwmError('UNSUPPORTED', `cwm service does not support ${platform}`, {
    hint: 'run the daemon with `cwm daemon start` (or your own service wrapper around `cwmd`)',
  });
}

export function unitDir(scope: Scope, host: Host): string {
  if (scope === 'system') return '/etc/systemd/system';
  return path.join(host.env.XDG_CONFIG_HOME || path.join(host.home, '.config'), 'systemd', 'user');
}

export function launchdPlistPath(scope: Scope, host: Host): string {
  return scope === 'system'
    ? path.join('/Library/LaunchDaemons', `${LAUNCHD_LABEL}.plist`)
    : path.join(host.home, 'Library', 'LaunchAgents', `${LAUNCHD_LABEL}.plist`);
}

export function daemonMain(host: Host): string {
  return path.join(host.root, 'dist', 'daemon', 'main.js');
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

export function primaryGroupOf(user: string): string | null {
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
