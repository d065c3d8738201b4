import { z } from 'zod';
import { bytes } from '../../client/cli/output.js';
import { sessionId, TAG_RULE, tag, WINDOW_NAME_RULE, WindowSchemas, windowName } from '../../daemon/protocol/index.js';
import { defined, int, ms, result, run, type ToolDeps } from './tool.js';

export function registerWindowFreezeTool(deps: ToolDeps): void {
  deps.server.registerTool(
    'window_freeze',
    {
      title: 'Freeze a context window',
      description:
        "Snapshot a session's exact conversation (its token ids) as a named, immutable window and pin its KV cache " +
        'in the engine, so it can be thawed later without recomputing the prompt. Use it before a context is ' +
        'evicted, to bookmark a good state, or to branch (freeze, then window_clone). The session must exist ' +
        '(see session_list) and the window name must be new. Returns the token/chunk counts and whether the KV ' +
        'cache was pinned; warnings say when it was not (the window still thaws, by recomputing).',
      inputSchema: {
        session_id: sessionId.describe('The session to freeze (an id from session_list).'),
        window_name: windowName.describe(`Name for the new window; must not exist yet. ${WINDOW_NAME_RULE}.`),
        description: z.string().max(4096).optional().describe('What this context holds, to recognise it later.'),
        tags: z.array(tag).max(32).optional().describe(`Labels to filter by in window_list (at most 32); ${TAG_RULE}.`),
        prefill: z
          .boolean()
          .optional()
          .describe(
            'Make the engine compute and store the KV cache now (default true). false only records the tokens: ' +
              'faster, but the first thaw recomputes the prompt.',
          ),
      },
      outputSchema: WindowSchemas.FreezeResult,
      annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
    },
    (a) =>
      run(deps, async () => {
        const r = await deps.link.call(
          'window.freeze',
          {
            session: a.session_id,
            name: a.window_name,
            ...defined({ description: a.description, tags: a.tags, prefill: a.prefill }),
          },
          { readOnly: false },
        );
        const kv = r.pinned ? 'KV cache pinned' : r.cached ? 'KV cache stored, not pinned' : 'KV cache not stored';
        return result(
          `Froze session "${r.session}" as window "${r.name}": ${int(r.tokens)} tokens in ${int(r.chunks)} chunks ` +
            `(${int(r.newChunks)} new, ${bytes(r.bytesStored)}); ${kv}; took ${ms(r.durationMs)}. ` +
            `Thaw it with window_thaw {"window_name": "${r.name}"}.`,
          r,
          r.warnings,
        );
      }),
  );
}
