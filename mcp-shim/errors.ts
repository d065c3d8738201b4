import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import type { Logger } from 'pino';
import { CwmError, isCwmError } from '../daemon/protocol/index.js';

/**
 * The one mapping from a failure to an MCP tool result: `isError` with the message and the hint as text (the only
 * thing a model reads), plus the stable code under _meta for programs. No structuredContent: clients validate it
 * against the tool's outputSchema even on errors.
 */
export function toolError(err: unknown, log?: Logger): CallToolResult {
  const e = isCwmError(err)
    ? err
    : new CwmError('INTERNAL', `cwm-mcp: unexpected error: ${err instanceof Error ? err.message : String(err)}`);
  if (!isCwmError(err)) log?.error({ err }, 'unexpected error in a tool');
  const lines = [`Error (${e.code}): ${e.message}`];
  if (e.hint) lines.push(`Hint: ${e.hint}`);
  if (e.retryable) lines.push('This may succeed if retried.');
  return {
    isError: true,
    content: [{ type: 'text', text: lines.join('\n') }],
    _meta: { 'cwm/error': { code: e.code, hint: e.hint, retryable: e.retryable } },
  };
}
