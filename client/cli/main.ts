#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { VERSION } from '../../daemon/version.js';
import { registerBundle } from './commands/bundle.js';
import { registerDaemon, statusAction } from './commands/daemon.js';
import { registerDoctor } from './commands/doctor.js';
import { registerOps } from './commands/ops.js';
import { registerService } from './commands/service.js';
import { registerSessions } from './commands/sessions.js';
import { registerWindows } from './commands/windows.js';

// `cwm windows | head`: the reader closing the pipe is the normal end of the output, not a crash.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
}

const program = new Command('cwm')
  .description('cwm: freeze, thaw, clone and search LLM context windows with their KV cache kept alive')
  .version(VERSION)
  .option('--socket <path>', 'daemon socket (CWM_SOCKET)')
  .option('--json', 'machine-readable output on stdout')
  .showHelpAfterError()
  .exitOverride();

registerDaemon(program);
program
  .command('status')
  .description('daemon status: version, uptime, counts, engine, gateway')
  .action(async (_o: unknown, cmd: Command) => statusAction(cmd));
registerSessions(program);
registerWindows(program);
registerBundle(program);
registerOps(program);
registerDoctor(program);
registerService(program);

try {
  await program.parseAsync();
} catch (err) {
  if (err instanceof CommanderError) {
    // help and version exit 0; usage errors exit 2 (commander already printed the message)
    process.exit(err.exitCode === 0 ? 0 : 2);
  }
  throw err;
}
