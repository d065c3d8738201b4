import fs from 'node:fs';
import type { Command } from 'commander';
import { CwmError, type SessionInfo } from '../../../daemon/protocol/index.js';
import { globals, rpc } from '../context.js';
import { ago, exitWithError, kv, out, table } from '../output.js';

const STATES = ['active', 'frozen', 'thawed', 'ended'] as const;

export function sessionTable(sessions: SessionInfo[]): string {
  return table(sessions, [
    { header: 'SESSION', get: (s) => s.id },
    { header: 'STATE', get: (s) => s.state },
    { header: 'MODEL', get: (s) => s.model },
    { header: 'TOKENS', get: (s) => s.tokens, align: 'right' },
    {
      header: 'USED',
      get: (s) => (s.maxModelLen ? `${Math.round((100 * s.tokens) / s.maxModelLen)}%` : '-'),
      align: 'right',
    },
    { header: 'TURNS', get: (s) => s.turns, align: 'right' },
    { header: 'LAST USED', get: (s) => ago(s.lastUsedAt) },
    { header: 'FROM WINDOW', get: (s) => s.sourceWindow },
  ]);
}

/** A messages file: a JSON array of OpenAI chat messages, or {"messages": [...]}; "-" reads stdin. */
export function readMessages(file: string): unknown[] {
  let text: string;
  try {
    text = fs.readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (err) {
    throw new CwmError('INVALID_PARAMS', `cannot read ${file === '-' ? 'stdin' : file}: ${(err as Error).message}`, {
      hint: 'give a path to a JSON file, or - for stdin',
    });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new CwmError(
      'INVALID_PARAMS',
      `${file === '-' ? 'stdin' : file} is not valid JSON: ${(err as Error).message}`,
      {
        hint: 'the file holds a JSON array of chat messages, or {"messages": [...]}',
      },
    );
  }
  const messages = Array.isArray(json) ? json : (json as { messages?: unknown }).messages;
  if (!Array.isArray(messages)) {
    throw new CwmError(
      'INVALID_PARAMS',
      'expected a JSON array of chat messages, or an object with a "messages" array',
      {
        hint: 'e.g. [{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]',
      },
    );
  }
  return messages;
}

export function registerSessions(program: Command): void {
  program
    .command('sessions')
    .description('list sessions (newest activity first)')
    .option('--state <state>', `filter by state: ${STATES.join(', ')}`)
    .option('--model <model>', 'filter by model')
    .option('--limit <n>', 'page size', (v) => Number(v), 100)
    .option('--offset <n>', 'skip this many', (v) => Number(v), 0)
    .action(
      async (o: { state?: (typeof STATES)[number]; model?: string; limit: number; offset: number }, cmd: Command) => {
        await rpc(
          cmd,
          'session.list',
          {
            ...(o.state ? { state: o.state } : {}),
            ...(o.model ? { model: o.model } : {}),
            limit: o.limit,
            offset: o.offset,
          },
          (r) =>
            out(
              r.sessions.length === 0
                ? 'no sessions'
                : `${sessionTable(r.sessions)}\n(${r.sessions.length} of ${r.total})`,
            ),
        );
      },
    );

  const s = program.command('session').description('record and inspect sessions');
  s.command('record')
    .description('report a conversation held directly with the engine (tokens are counted by the engine)')
    .argument('<id>', 'session id')
    .requiredOption('--model <model>', 'the model the conversation ran on')
    .requiredOption('--messages <file>', 'JSON file of chat messages, or - for stdin')
    .action(async (id: string, o: { model: string; messages: string }, cmd: Command) => {
      let messages: unknown[];
      try {
        messages = readMessages(o.messages);
      } catch (err) {
        exitWithError(err, !!globals(cmd).json);
      }
      await rpc(cmd, 'session.record', { session: id, model: o.model, messages: messages as { role: string }[] }, (r) =>
        out(
          `recorded session ${r.id}: ${r.tokens} tokens${r.maxModelLen ? ` of ${r.maxModelLen}` : ''}, ${r.turns} turn(s)`,
        ),
      );
    });
  s.command('show')
    .description('show one session')
    .argument('<id>', 'session id')
    .option('--messages', 'include the recorded messages')
    .action(async (id: string, o: { messages?: boolean }, cmd: Command) => {
      await rpc(cmd, 'session.get', { session: id, messages: !!o.messages }, (r) => {
        out(
          kv([
            ['session', r.id],
            ['state', r.state],
            ['model', r.model],
            ['tokens', `${r.tokens}${r.maxModelLen ? ` of ${r.maxModelLen}` : ''}`],
            ['turns', r.turns],
            ['created', r.createdAt],
            ['last used', `${r.lastUsedAt} (${ago(r.lastUsedAt)})`],
            ['from window', r.sourceWindow],
            ['last window', r.lastWindow],
          ]),
        );
        if (r.messages) out(JSON.stringify(r.messages, null, 2));
      });
    });
  s.command('end')
    .description('mark a session ended (its windows stay)')
    .argument('<id>', 'session id')
    .action(async (id: string, _o: unknown, cmd: Command) => {
      await rpc(cmd, 'session.end', { session: id }, (r) => out(`session ${r.id} ended`));
    });
}
