import { z } from 'zod';
import { SessionSchemas } from '../../daemon/protocol/index.js';
import { defined, int, result, run, type ToolDeps } from './tool.js';
import { sessionLine } from './window-status.js';

export function registerSessionListTool(deps: ToolDeps): void {
  deps.server.registerTool(
    'session_list',
    {
      title: 'List sessions',
      description:
        'List the conversations cwm knows (recorded through its gateway or API), most recently used first: id, ' +
        'state (active, frozen, thawed, ended), model, token count and turns. Use a session id with window_freeze ' +
        'or window_status.',
      inputSchema: {
        state_filter: SessionSchemas.SessionState.optional().describe('Only sessions in this state.'),
        model: z.string().max(256).optional().describe('Only sessions of this model id (exact match).'),
        limit: z.number().int().min(1).max(100).optional().describe('At most this many sessions, 1-100 (default 20).'),
      },
      outputSchema: SessionSchemas.ListSessionsResult,
      annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false },
    },
    (a) =>
      run(deps, async () => {
        const r = await deps.link.call(
          'session.list',
          { limit: a.limit ?? 20, ...defined({ state: a.state_filter, model: a.model }) },
          { readOnly: true },
        );
        if (r.sessions.length === 0) return result('No sessions match.', r);
        const more = r.total > r.sessions.length ? ` (${int(r.total - r.sessions.length)} more not shown)` : '';
        return result(
          `${int(r.sessions.length)} of ${int(r.total)} sessions${more}:\n${r.sessions.map(sessionLine).join('\n')}`,
          r,
        );
      }),
  );
}
