import { z } from 'zod';
import { ago, bytes } from '../../client/cli/output.js';
import {
  CwmError,
  type SessionInfo,
  SessionSchemas,
  sessionId,
  WindowSchemas,
  windowName,
} from '../../daemon/protocol/index.js';
import { int, result, run, type ToolDeps } from './tool.js';

const WindowStatus = WindowSchemas.GetWindowResult.omit({ cacheSalt: true, messages: true, tokenIds: true });
const SessionStatus = SessionSchemas.SessionInfo;

export function sessionLine(s: SessionInfo): string {
  const bits = [s.state, s.model, `${int(s.tokens)} tokens`, `${s.turns} turns`, `last used ${ago(s.lastUsedAt)}`];
  if (s.sourceWindow) bits.push(`thawed from ${s.sourceWindow}`);
  if (s.lastWindow) bits.push(`last frozen as ${s.lastWindow}`);
  return `- ${s.id}: ${bits.join('; ')}`;
}

export function registerWindowStatusTool(deps: ToolDeps): void {
  deps.server.registerTool(
    'window_status',
    {
      title: 'Window or session status',
      description:
        'Details of ONE window (give window_name) or ONE session (give session_id) - exactly one of the two. For a ' +
        'window: tokens, chunks, stored bytes, model, cache residency, tags, parent, and with include_lineage its ' +
        'ancestors and clones. For a session: state (active, frozen, thawed, ended), model, tokens, turns, and the ' +
        'window it was thawed from or last frozen as.',
      inputSchema: {
        window_name: windowName.optional().describe('The window to describe (omit when giving session_id).'),
        session_id: sessionId.optional().describe('The session to describe (omit when giving window_name).'),
        include_lineage: z
          .boolean()
          .optional()
          .describe('Windows only: also return ancestors, clones, root and depth (default false).'),
      },
      outputSchema: {
        kind: z.enum(['window', 'session']),
        window: WindowStatus.optional(),
        session: SessionStatus.optional(),
      },
      annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false },
    },
    (a) =>
      run(deps, async () => {
        if ((a.window_name === undefined) === (a.session_id === undefined)) {
          throw new CwmError('INVALID_PARAMS', 'window_status needs exactly one of window_name or session_id', {
            hint: 'call it with {"window_name": "..."} for a window or {"session_id": "..."} for a session',
          });
        }
        if (a.session_id !== undefined) {
          const s = await deps.link.call('session.get', { session: a.session_id }, { readOnly: true });
          const { cacheSalt: _salt, messages: _m, prompt: _p, ...session } = s;
          return result(`Session ${sessionLine(session).slice(2)}`, { kind: 'session', session });
        }
        const w = await deps.link.call(
          'window.get',
          { name: a.window_name as string, lineage: a.include_lineage ?? false },
          { readOnly: true },
        );
        const { cacheSalt: _salt, messages: _m, tokenIds: _t, ...window } = w;
        const lines = [
          `Window "${w.name}": ${int(w.tokens)} tokens in ${int(w.chunks)} chunks (${bytes(w.bytesStored)}), model ` +
            `${w.model}, from session ${w.session}, cache ${w.residency}${w.pinned ? ' (pinned)' : ''}, created ` +
            `${ago(w.createdAt)}.`,
        ];
        if (w.description) lines.push(`Description: ${w.description}`);
        if (w.tags.length > 0) lines.push(`Tags: ${w.tags.join(', ')}`);
        if (w.parent) lines.push(`Clone of: ${w.parent}`);
        if (w.lineage) {
          const l = w.lineage;
          lines.push(
            `Lineage: root ${l.root}, depth ${l.depth}; ancestors ${l.ancestors.join(' > ') || 'none'}; ` +
              `clones ${l.children.join(', ') || 'none'}${l.missingParent ? `; parent ${l.missingParent} was deleted` : ''}.`,
          );
        }
        return result(lines.join('\n'), { kind: 'window', window });
      }),
  );
}
