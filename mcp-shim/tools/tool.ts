import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import type { Logger } from 'pino';
import type { MethodName, ParamsOf, ResultOf } from '../../daemon/protocol/index.js';
import { toolError } from '../errors.js';

/** What tools need from the daemon connection (DaemonLink in production, a fake in unit tests). */
export interface DaemonRpc {
  call<M extends MethodName>(method: M, params: ParamsOf<M>, opts: { readOnly: boolean }): Promise<ResultOf<M>>;
}

export interface ToolDeps {
  server: McpServer;
  link: DaemonRpc;
  log: Logger;
}

const SECRET_KEYS = new Set(['cacheSalt', 'salt', 'cache_salt']);

/** Salts never leave the daemon through the shim, whatever a future daemon puts in a result. */
export function withoutSalts<T>(value: T): T {
  if (Array.isArray(value)) return value.map(withoutSalts) as T;
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) if (!SECRET_KEYS.has(k)) out[k] = withoutSalts(v);
  return out as T;
}

/** A successful result: a short text for the model, the full result as structuredContent. */
export function result(text: string, data: object, warnings: readonly string[] = []): CallToolResult {
  const lines = [text, ...warnings.map((w) => `Warning: ${w}`)];
  return {
    content: [{ type: 'text', text: lines.join('\n') }],
    structuredContent: withoutSalts(data) as Record<string, unknown>,
  };
}

/** Run a tool body; every failure becomes an isError result (never a protocol error). */
export async function run(deps: ToolDeps, body: () => Promise<CallToolResult>): Promise<CallToolResult> {
  try {
    return await body();
  } catch (err) {
    return toolError(err, deps.log);
  }
}

/** Copy the defined entries only (exactOptionalPropertyTypes: an absent argument must stay absent). */
export function defined<T extends Record<string, unknown>>(o: T): { [K in keyof T]?: Exclude<T[K], undefined> } {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v;
  return out as { [K in keyof T]?: Exclude<T[K], undefined> };
}

export function int(n: number): string {
  return n.toLocaleString('en-US');
}

export function pct(x: number | null): string {
  return x === null ? 'n/a' : `${(x * 100).toFixed(x < 0.1 ? 1 : 0)}%`;
}

export function ms(x: number | null): string {
  return x === null ? 'n/a' : x < 10 ? `${x.toFixed(1)} ms` : `${Math.round(x)} ms`;
}

export function clip(s: string, n = 80): string {
  const one = s.replace(/\s+/g, ' ').trim();
  return one.length > n ? `${one.slice(0, n - 1)}…` : one;
}
