import type { Command } from 'commander';
import { startDaemon, stopDaemon, tryConnect } from '../../daemon-process.js';
import { CwmClient } from '../../rpc-client.js';
import { currentHost } from '../../service/host.js';
import { startService, stopService, usableService } from '../../service/manager.js';
import { globals, socketOf } from '../context.js';
import { ago, bytes, exitWithError, kv, out, printJson, warn } from '../output.js';

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
