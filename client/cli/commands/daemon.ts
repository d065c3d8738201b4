import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { CwmError, isCwmError } from '../../../daemon/protocol/index.js';
import { CwmClient } from '../../rpc-client.js';
import { currentHost } from '../../service/host.js';
import { startService, stopService, usableService } from '../../service/manager.js';
import { globals, socketOf } from '../context.js';
import { ago, bytes, exitWithError, kv, out, printJson, warn } from '../output.js';

const DAEMON_MAIN = fileURLToPath(new URL('../../../daemon/main.js', import.meta.url));

async function tryConnect(socket: string): Promise<CwmClient | null> {
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
async function startDaemonOrService(
  socket: string,
  extraArgs: string[] = [],
): Promise<{ pid: number; already: boolean }> {
  const host = currentHost();
  const svc = await usableService(socket, host, warn);
  if (!svc) return startDaemon(socket, extraArgs);
  if (extraArgs.length > 0)
    warn(`cwmd runs as a ${svc.manager} service: ${extraArgs.join(' ')} ignored (use its config file)`);
  return startService(svc, host);
}

async function stopDaemonOrService(socket: string): Promise<{ pid: number | null; wasRunning: boolean }> {
  const host = currentHost();
  const svc = await usableService(socket, host, warn);
  if (!svc) return stopDaemon(socket);
  // (with socket activation a probe would start the daemon just to stop it again)
  const c = svc.socketActivation ? null : await tryConnect(socket).catch(() => null);
  const pid = c?.hello?.pid ?? null;
  c?.close();
  await stopService(svc, host);
  return { pid, wasRunning: svc.socketActivation || c !== null };
}

export function registerDaemon(program: Command): void {
  const d = program.command('daemon').description('start, stop and inspect the cwmd daemon');

  d.command('start')
    .description('start cwmd in the background (does nothing if it is already running)')
    .option('--engine-url <url>', 'engine base URL for the new daemon')
    .option('--data-dir <dir>', 'registry directory for the new daemon')
    .option('--config <file>', 'config file for the new daemon')
    .action(async (o: { engineUrl?: string; dataDir?: string; config?: string }, cmd: Command) => {
      const g = globals(cmd);
      const extra: string[] = [];
      if (o.engineUrl) extra.push('--engine-url', o.engineUrl);
      if (o.dataDir) extra.push('--data-dir', o.dataDir);
      if (o.config) extra.push('--config', o.config);
      try {
        const socket = socketOf(cmd);
        const r = await startDaemonOrService(socket, extra);
        if (g.json) printJson({ running: true, pid: r.pid, socket, alreadyRunning: r.already });
        else
          out(
            r.already
              ? `cwmd is already running (pid ${r.pid}) on ${socket}`
              : `cwmd started (pid ${r.pid}) on ${socket}`,
          );
      } catch (err) {
        exitWithError(err, !!g.json);
      }
    });

  d.command('stop')
    .description('stop cwmd gracefully (in-flight calls finish first)')
    .action(async (_o: unknown, cmd: Command) => {
      const g = globals(cmd);
      try {
        const socket = socketOf(cmd);
        const r = await stopDaemonOrService(socket);
        if (g.json) printJson({ stopped: r.wasRunning, pid: r.pid, socket });
        else out(r.wasRunning ? `cwmd (pid ${r.pid ?? '?'}) stopped` : `cwmd is not running on ${socket}`);
      } catch (err) {
        exitWithError(err, !!g.json);
      }
    });

  d.command('restart')
    .description('stop and start cwmd (e.g. after an upgrade)')
    .action(async (_o: unknown, cmd: Command) => {
      const g = globals(cmd);
      try {
        const socket = socketOf(cmd);
        await stopDaemonOrService(socket);
        const r = await startDaemonOrService(socket);
        if (g.json) printJson({ running: true, pid: r.pid, socket });
        else out(`cwmd restarted (pid ${r.pid}) on ${socket}`);
      } catch (err) {
        exitWithError(err, !!g.json);
      }
    });

  d.command('status')
    .description('is cwmd running? version, pid, uptime, socket')
    .action(async (_o: unknown, cmd: Command) => statusAction(cmd));
}

export async function statusAction(cmd: Command): Promise<void> {
  const g = globals(cmd);
  const socket = socketOf(cmd);
  let c: CwmClient | null = null;
  try {
    c = await CwmClient.connect({ socket });
    const s = await c.call('daemon.status');
    if (g.json) {
      printJson({ running: true, ...s });
      return;
    }
    out(
      kv([
        ['cwmd', `running (pid ${s.pid}), version ${s.version}, protocol ${s.protocolVersion}`],
        ['uptime', `${Math.round(s.uptimeSeconds)}s (since ${s.startedAt}, ${ago(s.startedAt)})`],
        ['socket', s.socket],
        ['data dir', s.dataDir],
        ['config', s.configFile],
        ['log', s.logFile],
        [
          'engine',
          `${s.engine.kind} at ${s.engine.url}${s.engine.lmcacheUrl ? ` (LMCache ${s.engine.lmcacheUrl})` : ''}`,
        ],
        ['gateway', s.gateway ? s.gateway.url : 'off'],
        ['sessions', s.counts.sessions],
        ['windows', s.counts.windows],
        ['chunks', s.counts.chunks],
        ['registry size', bytes(s.registryBytes)],
        ['connections', s.connections],
      ]),
    );
  } catch (err) {
    exitWithError(err, !!g.json);
  } finally {
    c?.close();
  }
}
