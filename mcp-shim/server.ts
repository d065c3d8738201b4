import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { Logger } from 'pino';
import { VERSION } from '../daemon/version.js';
import { registerResources } from './resources.js';
import { registerTools } from './tools/index.js';
import type { DaemonRpc } from './tools/tool.js';

export const INSTRUCTIONS =
  'cwm keeps LLM conversations ("sessions") running on a self-hosted engine (vLLM, llama.cpp) resumable: ' +
  'window_freeze snapshots a session as a named window with its KV cache kept, window_thaw restores a window ' +
  'into a new session without recomputing the prompt, window_clone branches one. Find names with window_list ' +
  'and session_list; window_status shows one in detail. Errors say what to do next in their "Hint:" line.';

/** The MCP server: every tool and resource is one RPC to cwmd through the link. */
export function createServer(link: DaemonRpc, log: Logger): McpServer {
  const server = new McpServer(
    { name: 'cwm', title: 'cwm context-window manager', version: VERSION },
    { capabilities: { tools: {}, resources: {} }, instructions: INSTRUCTIONS },
  );
  registerTools({ server, link, log });
  registerResources({ server, link, log });
  return server;
}
