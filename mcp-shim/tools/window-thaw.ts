import { z } from 'zod';
import { SESSION_ID_RULE, sessionId, WindowSchemas, windowName } from '../../daemon/protocol/index.js';
import { defined, int, ms, pct, result, run, type ToolDeps } from './tool.js';

export function registerWindowThawTool(deps: ToolDeps): void {
  deps.server.registerTool(
    'window_thaw',
    {
      title: 'Thaw a window into a new session',
      description:
        'Restore a frozen window into a NEW session that starts with exactly the frozen context, loading its KV ' +
        'cache instead of recomputing it. The window itself is unchanged and can be thawed again. Returns the new ' +
        'session id to continue the conversation with, and how many prompt tokens came from the cache versus were ' +
        'recomputed.',
      inputSchema: {
        window_name: windowName.describe('The window to thaw (a name from window_list).'),
        new_session_id: sessionId
          .optional()
          .describe(
            `Id for the new session; must not exist yet (default: derived from the window name). ${SESSION_ID_RULE}.`,
          ),
        warm_cache: z
          .boolean()
          .optional()
          .describe(
            'Send one warm-up request now so the KV cache is loaded into the engine before the first real turn ' +
              '(default true). false returns at once; the first turn then loads or recomputes it.',
          ),
      },
      outputSchema: WindowSchemas.ThawResult,
      annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
    },
    (a) =>
      run(deps, async () => {
        const r = await deps.link.call(
          'window.thaw',
          { name: a.window_name, ...defined({ newSession: a.new_session_id, warm: a.warm_cache }) },
          { readOnly: false },
        );
        const cache = r.warmed
          ? `${int(r.cachedTokens)} of ${int(r.tokens)} prompt tokens came from the cache (${pct(r.efficiency)} of the ` +
            `${int(r.maxCacheableTokens)} cacheable), ${int(r.recomputedTokens)} were recomputed` +
            (r.ttftMs === null ? '' : `, time to first token ${ms(r.ttftMs)}`)
          : 'the cache was not warmed (warm_cache false)';
        return result(
          `Thawed window "${r.name}" into new session "${r.session}" (${int(r.tokens)} tokens): ${cache}; ` +
            `cache residency ${r.residency}; took ${ms(r.durationMs)}. Continue the conversation as session "${r.session}".`,
          r,
          r.warnings,
        );
      }),
  );
}
