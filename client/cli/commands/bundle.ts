import path from 'node:path';
import type { Command } from 'commander';
import { rpc } from '../context.js';
import { bytes, out } from '../output.js';

/**
 * The bundle path is the CLI user's: it is resolved here, against this process's working directory, and the daemon
 * gets an absolute path (it has its own working directory). See docs/SECURITY.md for the trust boundary.
 */
export function resolveBundlePath(file: string, cwd = process.cwd()): string {
  return path.resolve(cwd, file);
}

export function registerBundle(program: Command): void {
  program
    .command('export')
    .description('write a window to one portable file: tokens, messages, lineage and (llama.cpp) the KV state')
    .argument('<window>', 'window name')
    .argument('<file>', 'bundle file to create (never overwritten)')
    .action(async (name: string, file: string, _o: unknown, cmd: Command) => {
      await rpc(cmd, 'window.export', { name, file: resolveBundlePath(file) }, (r) =>
        out(`exported "${r.name}" to ${r.file} (${bytes(r.bytes)}, sha256 ${r.sha256})`),
      );
    });

  program
    .command('import')
    .description('import a window from a bundle made by `cwm export`; every checksum is verified first')
    .argument('<file>', 'bundle file')
    .option('--name <name>', 'import under another window name')
    .action(async (file: string, o: { name?: string }, cmd: Command) => {
      await rpc(cmd, 'window.import', { file: resolveBundlePath(file), ...(o.name ? { name: o.name } : {}) }, (r) =>
        out(`imported "${r.name}": ${r.tokens} tokens in ${r.chunks} chunks`),
      );
    });
}
