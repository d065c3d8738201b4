import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CwmClient } from '../../client/rpc-client.js';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const CWMD = path.join(ROOT, 'dist/daemon/main.js');
export const CWM = path.join(ROOT, 'dist/client/cli/main.js');
export const CWM_MCP = path.join(ROOT, 'dist/mcp-shim/main.js');

/** A private temp dir (0700) with short paths, so socket paths stay far under the OS limit. */
export function tempDir(prefix = 'cwm'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
  fs.chmodSync(dir, 0o700);
  return dir;
}

export interface DaemonHandle {
  dir: string;
  socket: string;
  dataDir: string;
  configFile: string;
  logFile: string;
  env: NodeJS.ProcessEnv;
  proc: ChildProcess;
  stderr(): string;
  client(): Promise<CwmClient>;
  /** SIGTERM and wait for exit; returns the exit code. */
  stop(): Promise<number | null>;
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Start again on the same dirs (after stop/kill). */
  restart(extraArgs?: string[]): Promise<DaemonHandle>;
}

export interface StartOptions {
  dir?: string;
  args?: string[];
  env?: NodeJS.ProcessEnv;
  config?: Record<string, unknown>;
  /** Engine URL; defaults to a closed port so tests that need no engine never reach one by accident. */
  engineUrl?: string;
  gateway?: string | null;
  /** Extra node flags (e.g. --cpu-prof) before the daemon script. */
  nodeArgs?: string[];
}

/** Start the real compiled cwmd on a temp socket + temp data dir and wait until it answers daemon.hello. */
export async function startDaemon(opts: StartOptions = {}): Promise<DaemonHandle> {
  const dir = opts.dir ?? tempDir();
  const socket = path.join(dir, 'run', 'cwmd.sock');
  const dataDir = path.join(dir, 'data');
  const configFile = path.join(dir, 'config.json');
  const logFile = path.join(dir, 'cwmd.log');
  if (opts.config && !fs.existsSync(configFile)) fs.writeFileSync(configFile, JSON.stringify(opts.config, null, 2));
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    CWM_SOCKET: socket,
    CWM_DATA_DIR: dataDir,
    CWM_CONFIG: configFile,
    CWM_LOG_FILE: logFile,
    CWM_ENGINE_URL: opts.engineUrl ?? 'http://127.0.0.1:9',
    CWM_GATEWAY: opts.gateway === undefined ? 'off' : (opts.gateway ?? 'off'),
    ...opts.env,
  };
  const proc = spawn(process.execPath, [...(opts.nodeArgs ?? []), CWMD, ...(opts.args ?? [])], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  proc.stderr?.on('data', (d: Buffer) => {
    err += d.toString('utf8');
  });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const deadline = Date.now() + 20_000;
  let ready = false;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) break;
    try {
      const c = await CwmClient.connect({ socket, connectTimeoutMs: 1000 });
      const pid = c.hello?.pid;
      c.close();
      // Another daemon may already own this socket: only our own process counts as ready.
      if (pid === proc.pid) {
        ready = true;
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  if (!ready) {
    proc.kill('SIGKILL');
    throw new Error(`cwmd did not start (exit ${proc.exitCode}): ${err}`);
  }
  const handle: DaemonHandle = {
    dir,
    socket,
    dataDir,
    configFile,
    logFile,
    env,
    proc,
    stderr: () => err,
    client: () => CwmClient.connect({ socket }),
    async stop() {
      if (proc.exitCode !== null) return proc.exitCode;
      proc.kill('SIGTERM');
      return exited;
    },
    async kill(signal: NodeJS.Signals = 'SIGKILL') {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill(signal);
      await exited;
    },
    restart: (extraArgs?: string[]) => startDaemon({ ...opts, dir, ...(extraArgs ? { args: extraArgs } : {}) }),
  };
  return handle;
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run a compiled bin (cwm, cwmd) with the daemon's env; resolves when it exits. */
export function run(bin: string, args: string[], env: NodeJS.ProcessEnv, input?: string): Promise<RunResult> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [bin, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => {
      stdout += d.toString('utf8');
    });
    p.stderr.on('data', (d: Buffer) => {
      stderr += d.toString('utf8');
    });
    p.on('exit', (code) => resolve({ code, stdout, stderr }));
    if (input !== undefined) p.stdin.end(input);
    else p.stdin.end();
  });
}

export function cwm(h: Pick<DaemonHandle, 'env'>, args: string[], input?: string): Promise<RunResult> {
  return run(CWM, args, h.env, input);
}
