import path from 'node:path';
import { watch } from 'chokidar';
import type { Daemon } from './daemon.js';

/**
 * Watch the config file (also when it does not exist yet): policy changes apply live, an invalid edit keeps the
 * last good config and is logged naming the key, and keys that need a restart are reported as such.
 */
export async function watchConfig(d: Daemon): Promise<() => Promise<void>> {
  const file = d.config.file;
  const watcher = watch(path.dirname(file), {
    ignoreInitial: true,
    depth: 0,
    awaitWriteFinish: { stabilityThreshold: 100, pollInterval: 20 },
  });
  const onChange = (p: string) => {
    if (path.resolve(p) !== path.resolve(file)) return;
    const r = d.reloadConfig();
    void d.ctx.audit
      .record({
        action: 'config.reload',
        actor: 'daemon',
        outcome: r.ok ? 'ok' : 'error',
        reason: r.error,
        details: { restartNeeded: r.restart },
      })
      .catch(() => {});
  };
  watcher.on('add', onChange).on('change', onChange).on('unlink', onChange);
  watcher.on('error', (err) => d.log.warn({ err }, 'config watcher error'));
  await new Promise<void>((resolve) => watcher.once('ready', () => resolve()));
  return () => watcher.close();
}
