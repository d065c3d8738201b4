import { z } from 'zod';
import { TAG_RULE, tag, WINDOW_NAME_RULE, WindowSchemas, windowName } from '../../daemon/protocol/index.js';
import { defined, int, result, run, type ToolDeps } from './tool.js';

export function registerWindowCloneTool(deps: ToolDeps): void {
  deps.server.registerTool(
    'window_clone',
    {
      title: 'Clone a window',
      description:
        "Branch a window under a new name: the clone shares the source's tokens and cached KV (nothing is copied), " +
        'records the source as its parent, and can be thawed, tagged and deleted on its own. Use it to keep a ' +
        'known-good context while exploring alternatives from it.',
      inputSchema: {
        source_window: windowName.describe('The window to clone (a name from window_list).'),
        new_window_name: windowName.describe(`Name for the clone; must not exist yet. ${WINDOW_NAME_RULE}.`),
        description: z
          .string()
          .max(4096)
          .optional()
          .describe('Description of the clone (default: "Clone of <source_window>").'),
        tags: z.array(tag).max(32).optional().describe(`Tags of the clone (default: the source's tags); ${TAG_RULE}.`),
      },
      outputSchema: WindowSchemas.CloneResult,
      annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
    },
    (a) =>
      run(deps, async () => {
        const r = await deps.link.call(
          'window.clone',
          {
            name: a.source_window,
            newName: a.new_window_name,
            ...defined({ description: a.description, tags: a.tags }),
          },
          { readOnly: false },
        );
        return result(
          `Cloned "${a.source_window}" as "${r.name}" (${int(r.tokens)} tokens, shared with its parent "${r.parent ?? a.source_window}"; model ${r.model}).`,
          r,
        );
      }),
  );
}
