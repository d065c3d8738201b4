import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import type { Logger } from 'pino';
import { CwmError, type ErrorName, isCwmError } from '../daemon/protocol/index.js';

/**
 * The daemon's hints name CLI commands (`cwm windows`); for these codes a model is better served by the tool to call.
 */
const TOOL_HINTS: Partial<Record<ErrorName, string>> = {
  WINDOW_NOT_FOUND: 'call window_list to see the window names',
  SESSION_NOT_FOUND: 'call session_list to see the session ids',
  WINDOW_EXISTS: 'choose another window name, or delete the old window first with window_delete',
  SESSION_EXISTS: 'choose another new_session_id, or leave it out to get a fresh one',
};

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
  const hint = TOOL_HINTS[e.code] ?? e.hint;
  const lines = [`Error (${e.code}): ${e.message}`];
  if (hint) lines.push(`Hint: ${hint}`);
  if (e.retryable) lines.push('This may succeed if retried.');
  return {
    isError: true,
    content: [{ type: 'text', text: lines.join('\n') }],
    _meta: { 'cwm/error': { code: e.code, hint, retryable: e.retryable } },
  };
}
