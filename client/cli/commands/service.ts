import { type Command, Option } from 'commander';
import { stopDaemon } from '../../daemon-process.js';
import { currentHost, type Host, type Scope } from '../../service/host.js';
import { installService, uninstallService } from '../../service/install.js';
import { serviceHint, serviceStatus } from '../../service/manager.js';
import { planService, type ServicePlan } from '../../service/render.js';
import { globals } from '../context.js';
import { exitWithError, kv, out, printJson, warn } from '../output.js';

/** `cwm service install | uninstall | status`: options, output and errors; the work is done in client/service/. */

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

export async function installAction(o: ServiceCliOpts, json: boolean): Promise<void> {
  const host = hostFor(o);
  const scope: Scope = o.system ? 'system' : 'user';
  const plan = planService({ scope, socketActivation: !!o.socketActivation, runAs: o.runAs }, host);
  if (o.dryRun) {
    if (json) printJson({ dryRun: true, ...plan });
    else printPlan(plan, 'install');
    return;
  }
  const pid = await installService(plan, host, stopDaemon, (stopped) => {
    if (!json) out(`stopped the cwmd that was running by hand (pid ${stopped}); the service takes over`);
  });
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
  const removed = await uninstallService(plan, host);
  if (removed.length === 0) {
    if (json) printJson({ uninstalled: false, reason: 'not installed' });
    else out(`the cwmd ${scope} service is not installed`);
    return;
  }
  if (json) printJson({ uninstalled: true, removed });
  else {
    for (const f of removed) out(`removed ${f}`);
    out('cwmd service stopped and uninstalled (your windows and data are kept)');
  }
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
        const st = await serviceStatus(hostFor(o), o.system ? 'system' : 'user', o.runAs);
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
