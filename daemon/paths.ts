import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CwmError } from './protocol/index.js';

export interface CwmPaths {
  dataDir: string;
  socket: string;
  configFile: string;
  logFile: string;
}

export interface PathOverrides {
  dataDir?: string | undefined;
  socket?: string | undefined;
  configFile?: string | undefined;
  logFile?: string | undefined;
}

type Env = Readonly<Record<string, string | undefined>>;

/** sun_path is 108 bytes on Linux and 104 on macOS, both including the NUL. Node 20 truncates silently past it. */
export function maxSocketPathBytes(platform: NodeJS.Platform = process.platform): number {
  return platform === 'linux' ? 107 : 103;
}

export function isNamedPipe(p: string): boolean {
  return /^\\\\[.?]\\pipe\\/.test(p);
}

function userName(): string {
  try {
    return os.userInfo().username.replace(/[^A-Za-z0-9._-]/g, '_') || 'user';
  } catch {
    return 'user';
  }
}

/**
 * The runtime dir systemd-logind gives a user (/run/user/<uid>), for processes started without XDG_RUNTIME_DIR
 * (cron, some editors): without this, they would look for the socket in /tmp and miss the daemon.
 */
function loginRuntimeDir(): string | undefined {
  if (typeof process.getuid !== 'function') return undefined;
  const dir = `/run/user/${process.getuid()}`;
  try {
    const st = fs.statSync(dir);
    return st.isDirectory() && st.uid === process.getuid() ? dir : undefined;
  } catch {
    return undefined;
  }
}

function uidSuffix(): string {
  return typeof process.getuid === 'function' ? String(process.getuid()) : userName();
}

/**
 * Default locations per platform (XDG on Linux, ~/Library on macOS, %LOCALAPPDATA% + a named pipe on Windows),
 * then env (CWM_*), then explicit overrides (flags). Pure: reads nothing from disk.
 */
export function resolvePaths(
  overrides: PathOverrides = {},
  env: Env = process.env,
  platform: NodeJS.Platform = process.platform,
  home: string = os.homedir(),
): CwmPaths {
  let dataDir: string;
  let configFile: string;
  let logFile: string;
  let socket: string;
  if (platform === 'win32') {
    const base = env.LOCALAPPDATA ?? path.win32.join(home, 'AppData', 'Local');
    dataDir = path.win32.join(base, 'cwm', 'data');
    configFile = path.win32.join(base, 'cwm', 'config.json');
    logFile = path.win32.join(base, 'cwm', 'logs', 'cwmd.log');
    socket = `\\\\.\\pipe\\cwm-${userName()}`;
  } else if (platform === 'darwin') {
    const lib = path.join(home, 'Library');
    dataDir = path.join(lib, 'Application Support', 'cwm');
    configFile = path.join(lib, 'Application Support', 'cwm', 'config.json');
    logFile = path.join(lib, 'Logs', 'cwm', 'cwmd.log');
    socket = path.join(env.TMPDIR ?? '/tmp', `cwm-${uidSuffix()}`, 'cwmd.sock');
  } else {
    dataDir = path.join(env.XDG_DATA_HOME || path.join(home, '.local', 'share'), 'cwm');
    configFile = path.join(env.XDG_CONFIG_HOME || path.join(home, '.config'), 'cwm', 'config.json');
    logFile = path.join(env.XDG_STATE_HOME || path.join(home, '.local', 'state'), 'cwm', 'cwmd.log');
    const runtime = env.XDG_RUNTIME_DIR || (env === process.env ? loginRuntimeDir() : undefined);
    socket = runtime ? path.join(runtime, 'cwm', 'cwmd.sock') : path.join('/tmp', `cwm-${uidSuffix()}`, 'cwmd.sock');
  }
  return {
    dataDir: overrides.dataDir ?? env.CWM_DATA_DIR ?? dataDir,
    socket: overrides.socket ?? env.CWM_SOCKET ?? socket,
    configFile: overrides.configFile ?? env.CWM_CONFIG ?? configFile,
    logFile: overrides.logFile ?? env.CWM_LOG_FILE ?? logFile,
  };
}

/** A too-long socket path is refused up front: Node 20 would truncate it and other clients could not connect. */
export function checkSocketPath(socket: string, platform: NodeJS.Platform = process.platform): void {
  if (platform === 'win32' || isNamedPipe(socket)) return;
  const bytes = Buffer.byteLength(socket);
  const max = maxSocketPathBytes(platform);
  if (bytes > max) {
    throw new CwmError('BAD_NAME', `socket path is ${bytes} bytes, longer than this OS allows (${max}): ${socket}`, {
      hint: 'choose a shorter path with --socket or CWM_SOCKET (e.g. under /tmp or $XDG_RUNTIME_DIR)',
    });
  }
}
