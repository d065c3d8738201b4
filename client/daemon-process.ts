/** The daemon as a background process: start it detached and wait until it answers, or ask it to stop and wait. */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { CwmError, isCwmError } from '../daemon/protocol/index.js';
import { CwmClient } from './rpc-client.js';

const DAEMON_MAIN = fileURLToPath(new URL('../daemon/main.js', import.meta.url));

/** A client for the daemon on `socket`, or null when nothing is listening there. */
export async function tryConnect(socket: string): Promise<CwmClient | null> {
  try {
    return await CwmClient.connect({ socket, connectTimeoutMs: 2000 });
  } catch (err) {
    if (isCwmError(err) && err.code === 'NOT_RUNNING') return null;
    throw err;
  }
}

/** Start cwmd in the background and wait until it answers hello; its early stderr explains a failed start. */
export async function startDaemon(
  socket: string,
  extraArgs: string[] = [],
  timeoutMs = 15_000,
): Promise<{ pid: number; already: boolean }> {
  const existing = await tryConnect(socket);
  if (existing) {
    const pid = existing.hello?.pid ?? 0;
    existing.close();
    return { pid, already: true };
  }
  if (!fs.existsSync(DAEMON_MAIN)) {
    throw new CwmError('INTERNAL', `cannot find the daemon at ${DAEMON_MAIN}`, { hint: 'run `npm run build` first' });
  }
  const child = spawn(process.execPath, [DAEMON_MAIN, '--socket', socket, '--quiet', ...extraArgs], {
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe'],
    env: process.env,
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString('utf8');
  });
  let exited: number | null = null;
  child.on('exit', (code) => {
    exited = code ?? 1;
  });
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (exited !== null) {
      throw new CwmError('INTERNAL', `cwmd exited during start (code ${exited}): ${stderr.trim() || 'no output'}`, {
        hint: 'fix the problem above, or run `cwmd` in the foreground to see its log',
      });
    }
    const c = await tryConnect(socket).catch(() => null);
    if (c) {
      const pid = c.hello?.pid ?? child.pid ?? 0;
      c.close();
      child.stderr?.destroy();
      child.unref();
      return { pid, already: false };
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill('SIGTERM');
  throw new CwmError('TIMEOUT', `cwmd did not become ready within ${timeoutMs} ms`, {
    hint: stderr.trim() || 'run `cwmd` in the foreground to see why',
  });
}

/** Ask the daemon to stop and wait until its socket stops answering. */
export async function stopDaemon(
  socket: string,
  timeoutMs = 20_000,
): Promise<{ pid: number | null; wasRunning: boolean }> {
  const c = await tryConnect(socket);
  if (!c) return { pid: null, wasRunning: false };
  const pid = c.hello?.pid ?? null;
  try {
    await c.call('daemon.shutdown', { reason: 'cwm daemon stop' }, { timeoutMs: 5000 });
  } catch (err) {
    if (!(isCwmError(err) && err.code === 'CONNECTION_LOST')) throw err;
  } finally {
    c.close();
  }
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const again = await tryConnect(socket).catch(() => null);
    if (!again) {
      // The socket file goes last in the daemon's shutdown; wait for the process too when we know it.
      if (pid === null || !alive(pid)) return { pid, wasRunning: true };
    } else again.close();
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new CwmError('TIMEOUT', `cwmd (pid ${pid ?? '?'}) did not stop within ${timeoutMs} ms`, {
    hint: pid ? `kill it with \`kill ${pid}\`` : 'check `cwm daemon status`',
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** An installed service (systemd unit, launchd agent) owns the daemon on its socket: start it through the manager. */
