import fs from 'node:fs';
import path from 'node:path';
import { watch } from 'chokidar';
import type { Daemon } from './daemon.js';

/**
 * Watch the config file (also when it does not exist yet): policy changes apply live, an invalid edit keeps the
 * last good config and is logged naming the key, and keys that need a restart are reported as such.
 */
export async function watchConfig(d: Daemon): Promise<() => Promise<void>> {
  const file = d.config.file;
  // Watch the directory, not the file: the file may not exist yet, and editors replace it by rename.
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const dir = path.resolve(path.dirname(file));
  const target = path.resolve(file);
  const watcher = watch(dir, {
    // Only the config file itself: the directory may also hold the log or the registry, which change constantly.
    ignored: (p: string) => {
      const r = path.resolve(p);
      return r !== dir && r !== target;
    },
    ignoreInitial: true,
    depth: 0,
    awaitWriteFinish: { stabilityThreshold: 100, pollInterval: 20 },
  });
  const onChange = (p: string) => {
    if (path.resolve(p) !== target) return;
    const r = d.reloadConfig();
    void d.ctx.audit
      .record({
        action: 'config.reload',
        actor: 'daemon',
        outcome: r.ok ? 'ok' : 'error',
        reason: r.error,
        details: { file, restartNeeded: r.restart },
      })
      .catch(() => {});
  };
  watcher.on('add', onChange).on('change', onChange).on('unlink', onChange);
  watcher.on('error', (err) => d.log.warn({ err }, 'config watcher error'));
  await new Promise<void>((resolve) => watcher.once('ready', () => resolve()));
  return () => watcher.close();
}
