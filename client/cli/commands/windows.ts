import readline from 'node:readline/promises';
import type { Command } from 'commander';
import type { WindowInfo } from '../../../daemon/protocol/index.js';
import { collect, globals, rpc } from '../context.js';
import { ago, bytes, exitWithError, kv, out, progress, table, warn } from '../output.js';

export function windowTable(windows: WindowInfo[]): string {
  return table(windows, [
    { header: 'WINDOW', get: (w) => w.name },
    { header: 'TOKENS', get: (w) => w.tokens, align: 'right' },
    { header: 'MODEL', get: (w) => w.model },
    { header: 'SESSION', get: (w) => w.session },
    { header: 'PINNED', get: (w) => w.pinned },
    { header: 'CACHE', get: (w) => w.residency },
    { header: 'TAGS', get: (w) => w.tags.join(',') || '-' },
    { header: 'PARENT', get: (w) => w.parent },
    { header: 'CREATED', get: (w) => ago(w.createdAt) },
    { header: 'DESCRIPTION', get: (w) => clip(w.description, DESCRIPTION_WIDTH) },
  ]);
}

const DESCRIPTION_WIDTH = 40;

/** The first `n` characters (whole code points), with an ellipsis when cut; `cwm show` prints it whole. */
function clip(text: string, n: number): string {
  const cps = [...text];
  return cps.length <= n ? text : `${cps.slice(0, n - 1).join('')}…`;
}

function warnAll(ws: string[]): void {
  for (const w of ws) warn(w);
}

export function registerWindows(program: Command): void {
  program
    .command('freeze')
    .description("freeze a session's exact context (and pin its KV cache) as a named window")
    .argument('<session>', 'session id')
    .argument('<window>', 'name for the new window')
    .option('--description <text>', 'what this window is')
    .option('--tag <tag>', 'tag (repeatable, lower-case)', collect, [])
    .option('--no-prefill', 'do not make the engine compute the KV now; the window is then not cached')
    .action(
      async (
        session: string,
        name: string,
        o: { description?: string; tag: string[]; prefill: boolean },
        cmd: Command,
      ) => {
        const json = !!globals(cmd).json;
        await rpc(
          cmd,
          'window.freeze',
          { session, name, ...(o.description ? { description: o.description } : {}), tags: o.tag, prefill: o.prefill },
          (r) => {
            out(
              `froze ${r.session} as "${r.name}": ${r.tokens} tokens in ${r.chunks} chunks (${r.newChunks} new, ${bytes(r.bytesStored)}), ` +
                `${r.pinned ? 'KV pinned' : r.cached ? 'KV cached, not pinned' : 'KV not cached'}, ${r.durationMs.toFixed(0)} ms`,
            );
            warnAll(r.warnings);
          },
          { during: () => progress('freezing', !json) },
        );
      },
    );

  program
    .command('thaw')
    .description('restore a window into a new session: replay its exact tokens and load its KV from cache')
    .argument('<window>', 'window name')
    .option('--session <id>', 'id for the new session (default: derived from the window name)')
    .option('--no-warm', 'do not send the warm-up request now')
    .action(async (name: string, o: { session?: string; warm: boolean }, cmd: Command) => {
      const json = !!globals(cmd).json;
      await rpc(
        cmd,
        'window.thaw',
        { name, warm: o.warm, ...(o.session ? { newSession: o.session } : {}) },
        (r) => {
          out(
            kv([
              ['window', r.name],
              ['new session', r.session],
              ['tokens', r.tokens],
              [
                'from cache',
                r.warmed
                  ? `${r.cachedTokens} tokens (${(r.efficiency * 100).toFixed(1)}% of ${r.maxCacheableTokens} cacheable)`
                  : 'not warmed',
              ],
              ['recomputed', r.warmed ? r.recomputedTokens : '-'],
              ['time to first token', r.ttftMs === null ? '-' : `${r.ttftMs.toFixed(1)} ms`],
              ['residency', r.residency],
              ['took', `${r.durationMs.toFixed(0)} ms`],
            ]),
          );
          warnAll(r.warnings);
        },
        { during: () => progress(`thawing ${name}`, !json) },
      );
    });

  program
    .command('clone')
    .description('branch a window: a new name sharing its tokens and KV (no data copied)')
    .argument('<window>', 'source window')
    .argument('<new>', 'name of the clone')
    .option('--description <text>', 'description (default: "Clone of <window>")')
    .option('--tag <tag>', 'tags (repeatable; default: the source tags)', collect)
    .action(async (name: string, newName: string, o: { description?: string; tag?: string[] }, cmd: Command) => {
      await rpc(
        cmd,
        'window.clone',
        { name, newName, ...(o.description ? { description: o.description } : {}), ...(o.tag ? { tags: o.tag } : {}) },
        (r) => out(`cloned "${name}" as "${r.name}" (${r.tokens} tokens, shared)`),
      );
    });

  program
    .command('delete')
    .description('delete a window; chunks and cached KV are freed when nothing else uses them')
    .argument('<window>', 'window name')
    .option('--cascade', 'also delete its clones, recursively')
    .option('-y, --yes', 'do not ask for confirmation')
    .action(async (name: string, o: { cascade?: boolean; yes?: boolean }, cmd: Command) => {
      const json = !!globals(cmd).json;
      // Ask only when a person is there to answer; scripts and pipes are never blocked.
      if (!o.yes && process.stdin.isTTY && process.stdout.isTTY && !json) {
        const rl = readline.createInterface({ input: process.stdin, output: process.stdout });
        const answer = await rl.question(`delete window "${name}"${o.cascade ? ' and all its clones' : ''}? [y/N] `);
        rl.close();
        if (!/^y(es)?$/i.test(answer.trim())) {
          out('not deleted');
          return;
        }
      }
      await rpc(cmd, 'window.delete', { name, cascade: !!o.cascade }, (r) => {
        out(
          `deleted ${r.deleted.map((d) => `"${d}"`).join(', ')}: ${r.chunksFreed} chunks freed (${bytes(r.bytesFreed)})${r.lmcacheCleared ? `, ${r.lmcacheCleared} cached tokens released` : ''}`,
        );
        warnAll(r.warnings);
      });
    });

  program
    .command('windows')
    .description('list windows (newest first)')
    .option('--tag <tag>', 'only windows with this tag (repeatable: all must match)', collect)
    .option('--model <model>', 'only this model')
    .option('--session <id>', 'only windows frozen from this session')
    .option('--search <text>', 'substring of name or description')
    .option('--sort <key>', 'created | name | tokens', 'created')
    .option('--asc', 'ascending order')
    .option('--limit <n>', 'page size', (v) => Number(v), 20)
    .option('--offset <n>', 'skip this many', (v) => Number(v), 0)
    .action(
      async (
        o: {
          tag?: string[];
          model?: string;
          session?: string;
          search?: string;
          sort: string;
          asc?: boolean;
          limit: number;
          offset: number;
        },
        cmd: Command,
      ) => {
        if (!['created', 'name', 'tokens'].includes(o.sort)) {
          exitWithError(new Error(`--sort must be created, name or tokens (got "${o.sort}")`), !!globals(cmd).json);
        }
        await rpc(
          cmd,
          'window.list',
          {
            ...(o.tag ? { tags: o.tag } : {}),
            ...(o.model ? { model: o.model } : {}),
            ...(o.session ? { session: o.session } : {}),
            ...(o.search ? { search: o.search } : {}),
            sort: o.sort as 'created' | 'name' | 'tokens',
            order: o.asc ? 'asc' : 'desc',
            limit: o.limit,
            offset: o.offset,
          },
          (r) =>
            out(
              r.windows.length === 0
                ? r.total === 0
                  ? 'no windows'
                  : `no windows on this page (${r.total} in all)`
                : `${windowTable(r.windows)}\n(${r.offset + 1}-${r.offset + r.windows.length} of ${r.total})`,
            ),
        );
      },
    );

  program
    .command('show')
    .description('show one window, with its lineage')
    .argument('<window>', 'window name')
    .option('--messages', 'include the frozen messages')
    .option('--show-salt', 'print the cache_salt (a secret: anyone with it can read this KV on the engine)')
    .action(async (name: string, o: { messages?: boolean; showSalt?: boolean }, cmd: Command) => {
      await rpc(cmd, 'window.get', { name, lineage: true, messages: !!o.messages, salt: !!o.showSalt }, (w) => {
        out(
          kv([
            ['window', w.name],
            ['description', w.description || '-'],
            ['tokens', w.tokens],
            ['chunks', `${w.chunks} (${bytes(w.bytesStored)})`],
            [
              'model',
              `${w.model} (max_model_len ${w.fingerprint.maxModelLen ?? '?'}, ${w.fingerprint.engineKind} ${w.fingerprint.engineVersion ?? ''})`.trim(),
            ],
            ['from session', w.session],
            ['tags', w.tags.join(', ') || '-'],
            ['pinned', w.pinned],
            ['cache', `${w.residency}${w.residencyCheckedAt ? ` (checked ${ago(w.residencyCheckedAt)})` : ''}`],
            [
              'state file',
              w.stateFile ? `${bytes(w.stateFile.size)} sha256 ${w.stateFile.sha256.slice(0, 16)}…` : null,
            ],
            ['created', w.createdAt],
            ['parent', w.lineage?.missingParent ? `${w.lineage.missingParent} (deleted)` : w.parent],
            ['ancestors', w.lineage?.ancestors.join(' <- ') || '-'],
            ['clones', w.lineage?.children.join(', ') || '-'],
            ...(w.cacheSalt ? ([['cache_salt', w.cacheSalt]] as [string, string][]) : []),
          ]),
        );
        if (w.messages) out(JSON.stringify(w.messages, null, 2));
      });
    });
}
