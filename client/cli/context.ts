import type { Command } from 'commander';
import type { MethodName, ParamsOf, ResultOf } from '../../daemon/protocol/index.js';
import { VERSION } from '../../daemon/version.js';
import { CwmClient, defaultSocket } from '../rpc-client.js';
import { exitWithError, printJson } from './output.js';

export interface GlobalOpts {
  socket?: string;
  json?: boolean;
}

/** Options of the root program, wherever the command sits in the tree. */
export function globals(cmd: Command): GlobalOpts {
  let root = cmd;
  while (root.parent) root = root.parent;
  return { ...root.opts<GlobalOpts>(), ...cmd.optsWithGlobals<GlobalOpts>() };
}

export function socketOf(cmd: Command): string {
  return globals(cmd).socket ?? defaultSocket();
}

export async function connect(cmd: Command): Promise<CwmClient> {
  return CwmClient.connect({ socket: socketOf(cmd), client: { name: 'cwm-cli', version: VERSION } });
}

/** One RPC, then print: JSON with --json, otherwise the human renderer. Errors exit through exitWithError. */
export async function rpc<M extends MethodName>(
  cmd: Command,
  method: M,
  params: ParamsOf<M>,
  human: (r: ResultOf<M>) => void,
  opts: { timeoutMs?: number; during?: () => { stop(): void } } = {},
): Promise<void> {
  const g = globals(cmd);
  let client: CwmClient | null = null;
  const spinner = opts.during?.();
  try {
    client = await connect(cmd);
    const r = await client.call(method, params, opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {});
    spinner?.stop();
    if (g.json) printJson(r);
    else human(r);
  } catch (err) {
    spinner?.stop();
    exitWithError(err, !!g.json);
  } finally {
    client?.close();
  }
}

export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}
