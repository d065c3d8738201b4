/**
 * vLLM + LMCache simulator for tests and benchmarks. See README.md in this folder.
 *
 *   const sim = await startSimulator({ gpuBlocks: 256 });
 *   // sim.url → http://127.0.0.1:PORT (vLLM), sim.lmcacheUrl → http://127.0.0.1:PORT2 (controller)
 *   await sim.close();
 */

import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { counters, type SimCounters } from './admin.js';
import { createControllerServer } from './controller.js';
import type { Engine } from './engine.js';
import { resolveOptions } from './options.js';
import { createVllmServer } from './server.js';
import { SimState } from './state.js';
import type { FaultSpec, LoggedRequest, SimOptions } from './types.js';

export type { SimCounters } from './admin.js';
export { type ChatMessage, renderChat, renderChatText } from './chat-template.js';
export { generate } from './generate.js';
export { DEFAULT_INSTANCE_ID, resolveOptions } from './options.js';
export type { SimState } from './state.js';
export {
  BOS_ID,
  decode,
  END_HEADER_ID,
  EOS_ID,
  EOT_ID,
  encode,
  encodeWithSpecial,
  START_HEADER_ID,
  tokenStr,
  VOCAB_SIZE,
} from './tokenizer.js';
export type { FaultMode, FaultSpec, LoggedRequest, SimOptions, SimProfile } from './types.js';

export interface Simulator {
  /** vLLM base URL, e.g. http://127.0.0.1:41234 (no trailing slash). */
  readonly url: string;
  /** LMCache controller base URL (its own port). */
  readonly lmcacheUrl: string;
  readonly port: number;
  readonly lmcachePort: number;
  readonly options: Readonly<SimOptions>;
  /** Live state: engine (block pool, LMCache store, counters), faults, request log. */
  readonly state: SimState;
  readonly engine: Engine;
  /** Same JSON as GET /admin/counters. */
  counters(): SimCounters;
  /** Same as GET /admin/requests (default: last 20 vLLM /v1/* bodies, oldest first). */
  requests(limit?: number, filter?: { path?: string; server?: 'vllm' | 'lmcache' }): LoggedRequest[];
  setFaults(spec: FaultSpec): void;
  /** Force the reported kv_cache_usage_perc (null = real). */
  setKvUsage(value: number | null): void;
  /** Drop all unreferenced GPU prefix-cache blocks; returns hashes dropped. */
  evictGpu(): number;
  /** Drop LMCache chunks (all tiers); returns chunks removed. */
  clearLmcache(opts?: { keepPinned?: boolean }): number;
  /** Reset all state (caches, counters, faults, overrides, request log). */
  reset(): void;
  close(): Promise<void>;
}

function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) {
      resolve();
      return;
    }
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

export async function startSimulator(opts: Partial<SimOptions> = {}): Promise<Simulator> {
  const options = resolveOptions(opts);
  const state = new SimState(options);
  const vllm = createVllmServer(state);
  const ctrl = createControllerServer(state);
  const host = '127.0.0.1';
  let port: number;
  let lmcachePort: number;
  try {
    port = await listen(vllm, options.port, host);
    lmcachePort = await listen(ctrl, options.lmcachePort, host);
  } catch (e) {
    await Promise.all([closeServer(vllm), closeServer(ctrl)]);
    throw e;
  }
  let closed: Promise<void> | null = null;
  return {
    url: `http://${host}:${port}`,
    lmcacheUrl: `http://${host}:${lmcachePort}`,
    port,
    lmcachePort,
    options,
    state,
    engine: state.engine,
    counters: () => counters(state),
    requests: (limit, filter) => state.requests(limit, filter),
    setFaults: (spec) => state.faults[spec.target ?? 'vllm'].set(spec),
    setKvUsage: (value) => {
      state.kvUsageOverride = value;
    },
    evictGpu: () => state.engine.evictGpu(),
    clearLmcache: (o) => state.engine.lmcache?.clearAll(o?.keepPinned === true) ?? 0,
    reset: () => state.reset(),
    close: () => {
      closed ??= (async () => {
        state.engine.reset();
        await Promise.all([closeServer(vllm), closeServer(ctrl)]);
      })();
      return closed;
    },
  };
}
