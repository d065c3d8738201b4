import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { ErrorCode, McpError, type ReadResourceResult } from '@modelcontextprotocol/sdk/types.js';
import { CwmError, isCwmError } from '../daemon/protocol/index.js';
import type { ToolDeps } from './tools/tool.js';
import { withoutSalts } from './tools/tool.js';

const LIST_LIMIT = 100;

/** Resources have no isError form: a failure is a JSON-RPC error whose message carries the hint. */
function readError(err: unknown): McpError {
  const e = isCwmError(err) ? err : new CwmError('INTERNAL', err instanceof Error ? err.message : String(err));
  return new McpError(ErrorCode.InternalError, `${e.message}${e.hint ? ` (hint: ${e.hint})` : ''}`, {
    code: e.code,
    hint: e.hint,
    retryable: e.retryable,
  });
}

function json(uri: URL, value: unknown): ReadResourceResult {
  return {
    contents: [{ uri: uri.href, mimeType: 'application/json', text: JSON.stringify(withoutSalts(value), null, 2) }],
  };
}

export function registerResources(deps: Omit<ToolDeps, 'server'> & { server: McpServer }): void {
  const { server, link } = deps;
  server.registerResource(
    'windows',
    'cwm://windows',
    {
      title: 'Frozen windows',
      description: `The ${LIST_LIMIT} most recent windows (JSON, the same fields as window_list).`,
      mimeType: 'application/json',
    },
    async (uri) => {
      try {
        return json(uri, await link.call('window.list', { limit: LIST_LIMIT }, { readOnly: true }));
      } catch (err) {
        throw readError(err);
      }
    },
  );
  server.registerResource(
    'sessions',
    'cwm://sessions',
    {
      title: 'Sessions',
      description: `The ${LIST_LIMIT} most recently used sessions (JSON, the same fields as session_list).`,
      mimeType: 'application/json',
    },
    async (uri) => {
      try {
        return json(uri, await link.call('session.list', { limit: LIST_LIMIT }, { readOnly: true }));
      } catch (err) {
        throw readError(err);
      }
    },
  );
  server.registerResource(
    'cache-stats',
    'cwm://cache-stats',
    {
      title: 'Cache statistics',
      description: 'Registry, engine KV cache and thaw statistics (JSON, the same fields as cache_stats).',
      mimeType: 'application/json',
    },
    async (uri) => {
      try {
        return json(uri, await link.call('cache.stats', {}, { readOnly: true }));
      } catch (err) {
        throw readError(err);
      }
    },
  );
}
