/** Rendering of the systemd units (service, socket) and the launchd plist for a host: the install plan. */
import fs from 'node:fs';
import path from 'node:path';
import { resolvePaths } from '../../daemon/paths.js';
import { CwmError } from '../../daemon/protocol/index.js';
import {
  daemonMain,
  type Host,
  LAUNCHD_LABEL,
  launchdPlistPath,
  type Manager,
  managerFor,
  primaryGroupOf,
  runtimeDir,
  type Scope,
  SERVICE_NAME,
  unitDir,
  userNamespacesAvailable,
} from './host.js';

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
      // On macOS the data and config directories are the same one; each is created (and printed) once.
      dirs: [...new Set([logDir, dataDir, path.dirname(config), path.dirname(socket)])],
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
