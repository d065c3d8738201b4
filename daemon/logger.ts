import fs from 'node:fs';
import path from 'node:path';
import { type DestinationStream, type Logger, multistream, pino } from 'pino';
import pretty from 'pino-pretty';

export interface LoggerHandle {
  log: Logger;
  /** Flush synchronously; call before exit. */
  flush(): void;
}

/** JSON lines to the log file; in the foreground also to stderr, pretty when stderr is a TTY. */
export function createLogger(opts: { file: string | null; level: string; foreground: boolean }): LoggerHandle {
  const streams: { stream: DestinationStream; level: pino.Level }[] = [];
  let fileDest: ReturnType<typeof pino.destination> | null = null;
  if (opts.file) {
    fs.mkdirSync(path.dirname(opts.file), { recursive: true, mode: 0o700 });
    // sync: a crash or SIGKILL must not lose the lines that explain it.
    fileDest = pino.destination({ dest: opts.file, sync: true, mkdir: true });
    streams.push({ stream: fileDest, level: 'trace' });
  }
  if (opts.foreground) {
    const stderr = process.stderr.isTTY ? pretty({ colorize: true, sync: true, destination: 2 }) : pino.destination(2);
    streams.push({ stream: stderr, level: 'trace' });
  }
  const log = pino(
    {
      level: opts.level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: {
        paths: ['token', '*.token', 'salt', '*.salt', 'cacheSalt', 'headers.authorization'],
        censor: '[REDACTED]',
      },
    },
    streams.length > 0 ? multistream(streams) : pino.destination('/dev/null'),
  );
  return {
    log,
    flush: () => {
      try {
        fileDest?.flushSync();
      } catch {
        // nothing more can be done at exit
      }
    },
  };
}
