import { z } from 'zod';
import { ago } from '../../client/cli/output.js';
import { sessionId, TAG_RULE, tag, type WindowInfo, WindowSchemas } from '../../daemon/protocol/index.js';
import { clip, defined, int, result, run, type ToolDeps } from './tool.js';

const SORT = { created_at: 'created', name: 'name', token_count: 'tokens' } as const;

export function windowLine(w: WindowInfo): string {
  const bits = [
    `${int(w.tokens)} tokens`,
    w.model,
    `session ${w.session}`,
    `cache ${w.residency}`,
    `created ${ago(w.createdAt)}`,
  ];
  if (w.parent) bits.push(`clone of ${w.parent}`);
  if (w.tags.length > 0) bits.push(`tags ${w.tags.join(',')}`);
  return `- ${w.name}: ${bits.join('; ')}${w.description ? ` — ${clip(w.description)}` : ''}`;
}

export function registerWindowListTool(deps: ToolDeps): void {
  deps.server.registerTool(
    'window_list',
    {
      title: 'List windows',
      description:
        'List frozen windows, newest first by default, with filters. Each entry gives the name, token count, ' +
        'model, source session, cache residency (ready = KV cached, partial, lost = will be recomputed, unknown), ' +
        'tags and parent (for clones). Results are paged: use limit and offset when total is larger than the page.',
      inputSchema: {
        tags: z.array(tag).max(32).optional().describe(`Only windows that have ALL of these tags; ${TAG_RULE}.`),
        model: z.string().max(256).optional().describe('Only windows of this model id (exact match).'),
        session_id: sessionId.optional().describe('Only windows frozen from this session.'),
        search: z
          .string()
          .max(256)
          .optional()
          .describe('Case-insensitive text to find in the window name or description.'),
        sort_by: z.enum(['created_at', 'name', 'token_count']).optional().describe('Sort key (default created_at).'),
        sort_order: z.enum(['asc', 'desc']).optional().describe('Sort order (default desc).'),
        limit: z.number().int().min(1).max(100).optional().describe('Page size, 1-100 (default 20).'),
        offset: z.number().int().min(0).optional().describe('Windows to skip, for paging (default 0).'),
      },
      outputSchema: WindowSchemas.ListWindowsResult,
      annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false },
    },
    (a) =>
      run(deps, async () => {
        const r = await deps.link.call(
          'window.list',
          defined({
            tags: a.tags,
            model: a.model,
            session: a.session_id,
            search: a.search,
            sort: a.sort_by === undefined ? undefined : SORT[a.sort_by],
            order: a.sort_order,
            limit: a.limit,
            offset: a.offset,
          }),
          { readOnly: true },
        );
        if (r.total === 0) return result('No windows match.', r);
        const from = r.offset + 1;
        const to = r.offset + r.windows.length;
        const head =
          r.windows.length === 0
            ? `No windows on this page (offset ${r.offset}); ${int(r.total)} match in total.`
            : `Windows ${from}-${to} of ${int(r.total)}:`;
        const more = to < r.total ? `\n(${int(r.total - to)} more: call again with offset ${to})` : '';
        return result(`${head}\n${r.windows.map(windowLine).join('\n')}${more}`, r);
      }),
  );
}
