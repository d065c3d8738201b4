/** Installing and uninstalling the cwmd service: write or remove its files and run the manager's commands. */
import fs from 'node:fs';
import path from 'node:path';
import { CwmError } from '../../daemon/protocol/index.js';
import { daemonMain, type Host } from './host.js';
import {
  type CmdResult,
  findService,
  hello,
  managerAvailable,
  managerMissing,
  runCommand,
  waitForService,
} from './manager.js';
import type { ServicePlan } from './render.js';

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

/**
 * Write the plan's files, enable and start the service; cwmd's pid once it answers, else null. `stopDaemon` stops a
 * cwmd started by hand on the service's socket (passed in: it belongs to the CLI), `onStopped` hears its pid.
 */
export async function installService(
  plan: ServicePlan,
  host: Host,
  stopDaemon: (socket: string) => Promise<unknown>,
  onStopped: (pid: number) => void,
): Promise<number | null> {
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
      await stopDaemon(plan.socket);
      onStopped(running.pid);
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
  return socket ? await waitForService({ ...plan, socket }).catch(() => null) : null;
}

/** Stop and disable the service and remove its files; the files removed (none: it was not installed). */
export async function uninstallService(plan: ServicePlan, host: Host): Promise<string[]> {
  const present = plan.files.filter((f) => fs.existsSync(f.path));
  if (present.length === 0) return [];
  await ensureManager(plan, host);
  if (plan.manager === 'systemd') {
    // disable --now also stops it; the reload afterwards forgets the removed files
    const ctl = plan.scope === 'user' ? ['systemctl', '--user'] : ['systemctl'];
    await runAll([[...ctl, 'disable', '--now', ...present.map((f) => path.basename(f.path))]], host, () => false);
    for (const f of present) fs.rmSync(f.path, { force: true });
    await runAll([[...ctl, 'daemon-reload']], host, () => false);
  } else {
    // bootout fails when the agent is not loaded; removing the plist is what matters then
    await runAll(plan.uninstall, host, () => true);
    for (const f of present) fs.rmSync(f.path, { force: true });
  }
  return present.map((f) => f.path);
}
