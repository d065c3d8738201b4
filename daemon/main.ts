#!/usr/bin/env node
import { Command, InvalidArgumentError } from 'commander';
import { loadConfig } from './config.js';
import { watchConfig } from './config-watch.js';
import { Daemon } from './daemon.js';
import { createLogger } from './logger.js';
import { resolvePaths } from './paths.js';
import { isCwmError } from './protocol/index.js';
import { VERSION } from './version.js';

function int(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

/** systemd socket activation: LISTEN_PID is us and LISTEN_FDS ≥ 1 ⇒ the socket is fd 3. */
function activationFd(env: NodeJS.ProcessEnv): number | undefined {
  if (env.LISTEN_FDS && Number(env.LISTEN_FDS) >= 1 && (!env.LISTEN_PID || Number(env.LISTEN_PID) === process.pid)) {
    return 3;
  }
  return undefined;
}

const program = new Command('cwmd')
  .description('cwm daemon: owns the window registry, talks to the engine, serves JSON-RPC on a Unix socket')
  .version(VERSION)
  .option('--socket <path>', 'socket path (CWM_SOCKET)')
  .option('--data-dir <dir>', 'registry directory (CWM_DATA_DIR)')
  .option('--config <file>', 'config file (CWM_CONFIG)')
  .option('--log-file <file>', 'log file (CWM_LOG_FILE)')
  .option('--engine <kind>', 'engine kind: vllm | llamacpp (CWM_ENGINE)')
  .option('--engine-url <url>', 'engine base URL (CWM_ENGINE_URL)')
  .option('--lmcache-url <url>', 'LMCache controller URL (CWM_LMCACHE_URL)')
  .option('--slot-dir <dir>', 'llama.cpp --slot-save-path directory (CWM_SLOT_DIR)')
  .option('--gateway <host:port|off>', 'OpenAI gateway listen address, loopback only (CWM_GATEWAY)')
  .option('--max-line-bytes <n>', 'largest JSON-RPC line accepted (CWM_MAX_LINE_BYTES)', int)
  .option('--log-level <level>', 'trace|debug|info|warn|error (CWM_LOG_LEVEL)')
  .option('--quiet', 'do not mirror logs to stderr')
  .showHelpAfterError();

program.parse();
const o = program.opts<{
  socket?: string;
  dataDir?: string;
  config?: string;
  logFile?: string;
  engine?: string;
  engineUrl?: string;
  lmcacheUrl?: string;
  slotDir?: string;
  gateway?: string;
  maxLineBytes?: number;
  logLevel?: string;
  quiet?: boolean;
}>();

const paths = resolvePaths({ socket: o.socket, dataDir: o.dataDir, configFile: o.config, logFile: o.logFile });
const flags: Record<string, unknown> = {
  'engine.kind': o.engine,
  'engine.url': o.engineUrl,
  'engine.lmcacheUrl': o.lmcacheUrl,
  'engine.slotDir': o.slotDir,
  'gateway.listen': o.gateway === 'off' ? null : o.gateway,
  'daemon.maxLineBytes': o.maxLineBytes,
  'daemon.logLevel': o.logLevel,
};

function fail(message: string, hint: string | null, code = 1): never {
  process.stderr.write(`${message}\n`);
  if (hint) process.stderr.write(`hint: ${hint}\n`);
  process.exit(code);
}

let config: ReturnType<typeof loadConfig>;
try {
  config = loadConfig(paths.configFile, process.env, flags);
} catch (err) {
  if (isCwmError(err)) fail(err.message, err.hint, 2);
  throw err;
}

const { log, flush } = createLogger({
  file: paths.logFile,
  level: config.config.daemon.logLevel,
  foreground: !o.quiet,
});

process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection (the daemon keeps running)'));
process.on('uncaughtException', (err) => {
  log.fatal({ err }, 'uncaught exception; exiting so the service manager can restart cwmd');
  flush();
  process.exit(1);
});

let daemon: Daemon;
try {
  daemon = await Daemon.start({ paths, config, flags, log, listenFd: activationFd(process.env) });
} catch (err) {
  flush();
  if (isCwmError(err)) fail(err.message, err.hint);
  fail((err as Error).message, 'see the log file for details');
}

for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.on(sig, () => {
    void daemon.stop(`signal ${sig}`);
  });
}
process.on('SIGHUP', () => {
  daemon.reloadConfig();
});

const stopWatching = await watchConfig(daemon).catch((err: unknown) => {
  log.warn({ err }, 'config file is not watched');
  return async () => {};
});
daemon.onStop(stopWatching);

await daemon.stopped;
flush();
// Pending timers or keep-alive sockets must not hold the process after a clean stop.
process.exit(0);
