import { z } from 'zod';
import { bytes } from '../../client/cli/output.js';
import { WindowSchemas, windowName } from '../../daemon/protocol/index.js';
import { int, result, run, type ToolDeps } from './tool.js';

export function registerWindowDeleteTool(deps: ToolDeps): void {
  deps.server.registerTool(
    'window_delete',
    {
      title: 'Delete a window',
      description:
        'Permanently delete a window. Its stored chunks and cached KV are freed once no other window (a clone or a ' +
        'parent) still uses them. Sessions are not touched. A window that has clones keeps them unless cascade is ' +
        'true. This cannot be undone.',
      inputSchema: {
        window_name: windowName.describe('The window to delete.'),
        cascade: z
          .boolean()
          .optional()
          .describe('Also delete every clone of this window, recursively (default false).'),
      },
      outputSchema: WindowSchemas.DeleteResult,
      annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false },
    },
    (a) =>
      run(deps, async () => {
        const r = await deps.link.call(
          'window.delete',
          { name: a.window_name, ...(a.cascade === undefined ? {} : { cascade: a.cascade }) },
          { readOnly: false },
        );
        const names = r.deleted.map((n) => `"${n}"`).join(', ');
        return result(
          `Deleted ${r.deleted.length === 1 ? 'window' : `${r.deleted.length} windows:`} ${names}; freed ` +
            `${int(r.chunksFreed)} chunks (${bytes(r.bytesFreed)}), cleared ${int(r.lmcacheCleared)} LMCache entries.`,
          r,
          r.warnings,
        );
      }),
  );
}
