#!/usr/bin/env node
import os from 'node:os';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { Command } from 'commander';
import { pino } from 'pino';
import { currentHost, runtimeDir } from '../client/service/host.js';
import { resolvePaths } from '../daemon/paths.js';
import { VERSION } from '../daemon/version.js';
import { daemonStarter } from './autostart.js';
import { DaemonLink } from './link.js';
import { createServer } from './server.js';

// stdout is the MCP protocol: nothing else may ever be written to it. Logs go to stderr.
const program = new Command('cwm-mcp')
  .description('cwm MCP server (stdio): exposes cwm windows and sessions to editors and agents')
  .version(VERSION)
  .option('--socket <path>', 'daemon socket (CWM_SOCKET)')
  .option('--no-autostart', 'never start cwmd; tools report how to start it instead')
  .option('--log-level <level>', 'stderr log level: trace|debug|info|warn|error|silent (CWM_MCP_LOG_LEVEL)')
  .configureOutput({ writeOut: (s) => process.stderr.write(s) })
  .parse();
const o = program.opts<{ socket?: string; autostart: boolean; logLevel?: string }>();

const log = pino(
  { name: 'cwm-mcp', level: o.logLevel ?? process.env.CWM_MCP_LOG_LEVEL ?? 'info', base: { pid: process.pid } },
  pino.destination({ dest: 2, sync: true }),
);

// Editors start MCP servers with a minimal environment (often no XDG_RUNTIME_DIR); the daemon's default socket
// lives there, so find it the way the user's shell would.
const env = { ...process.env };
const rt = process.platform === 'linux' ? runtimeDir(env, os.userInfo().uid) : null;
if (rt && !env.XDG_RUNTIME_DIR) env.XDG_RUNTIME_DIR = rt;
const defaultSocket = resolvePaths({}, { ...env, CWM_SOCKET: undefined }).socket;
const socket = o.socket ?? env.CWM_SOCKET ?? defaultSocket;

const link = new DaemonLink({
  socket,
  autostart: o.autostart,
  starter: daemonStarter(currentHost(env), log, defaultSocket),
  log,
});
const server = createServer(link, log);

let closing = false;
function shutdown(reason: string): void {
  if (closing) return;
  closing = true;
  log.info({ reason }, 'cwm-mcp exiting');
  link.close();
  void server.close().finally(() => process.exit(0));
}

server.server.onclose = () => shutdown('client closed the connection');
process.stdin.on('end', () => shutdown('stdin closed'));
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(sig, () => shutdown(sig));

try {
  await server.connect(new StdioServerTransport());
} catch (err) {
  log.fatal({ err }, 'cannot serve MCP on stdio');
  process.exit(1);
}
log.info({ socket, autostart: o.autostart, version: VERSION }, 'cwm-mcp serving MCP on stdio');
// Connect (and start cwmd if allowed) now, so the first tool call does not pay for it.
void link.warmUp();
