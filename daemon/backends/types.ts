import type { ChatMessage, Residency } from '../protocol/index.js';
import type { SessionRecord, StateFileRecord, WindowRecord } from '../registry/records.js';

export interface ModelInfo {
  id: string;
  maxModelLen: number | null;
}

export interface EngineMetrics {
  kvUsage: number | null;
  prefixCacheQueries: number | null;
  prefixCacheHits: number | null;
  externalPrefixCacheHits: number | null;
  requestsRunning: number | null;
  requestsWaiting: number | null;
  blockSize: number | null;
}

export interface HealthReport {
  ok: boolean;
  latencyMs: number | null;
  message: string;
}

export interface KvFreezeInput {
  session: SessionRecord;
  windowId: string;
  windowName: string;
  model: string;
  tokens: number[];
  salt: string;
  prefill: boolean;
}

export interface KvFreezeResult {
  pinned: boolean;
  cached: boolean;
  residency: Residency;
  stateFile: StateFileRecord | null;
  engineMs: number;
  warnings: string[];
}

export interface KvThawInput {
  window: WindowRecord;
  session: SessionRecord;
  tokens: number[];
  salt: string;
  warm: boolean;
}

export interface KvThawResult {
  warmed: boolean;
  cachedTokens: number;
  recomputedTokens: number;
  maxCacheableTokens: number;
  ttftMs: number | null;
  engineMs: number;
  residency: Residency;
  residencyByTier: Record<string, number> | null;
  /** Engine slot the new session is bound to (llama.cpp), if any. */
  slot: number | null;
  warnings: string[];
}

export interface KvReleaseInput {
  window: WindowRecord;
  tokens: number[];
  salt: string;
  /** Token count of the longest prefix still needed by another window of the same salt lineage. */
  keepTokens: number;
  /** No other window references this window's engine state (state file / pins). */
  lastReference: boolean;
}

export interface KvReleaseResult {
  cleared: number;
  warnings: string[];
  retry?: boolean;
}

export interface KvPinInput {
  window: WindowRecord;
  tokens: number[];
  salt: string;
}

/**
 * One engine. The windows service owns the registry; a backend owns everything about KV on its engine:
 * making it exist at freeze, proving it at thaw, and releasing it at delete.
 */
export interface EngineBackend {
  readonly kind: 'vllm' | 'llamacpp';
  readonly url: string;
  readonly lmcacheUrl: string | null;
  models(): Promise<ModelInfo[]>;
  version(): Promise<string | null>;
  /** Exact token ids of a chat context, as the next turn's prompt begins (no generation prompt). */
  tokenizeChat(model: string, messages: ChatMessage[]): Promise<number[]>;
  /** Prompt-form tokenization; `addSpecial: false` for a continuation (no BOS in the middle of a context). */
  tokenizePrompt(model: string, prompt: string, addSpecial?: boolean): Promise<number[]>;
  metrics(): Promise<EngineMetrics>;
  health(): Promise<HealthReport>;
  lmcacheHealth(): Promise<HealthReport | null>;
  freezeKv(input: KvFreezeInput): Promise<KvFreezeResult>;
  thawKv(input: KvThawInput): Promise<KvThawResult>;
  /** A clone shares the parent's KV: take another reference (an LMCache pin, a state-file refcount). */
  retainKv(input: KvPinInput): Promise<{ pinned: boolean; warnings: string[] }>;
  /**
   * Give back what freezeKv/retainKv took. `retry: true` means it could not be done now (engine unreachable, a
   * file that would not go) and must be tried again later: the windows service keeps it in its release journal.
   */
  releaseKv(input: KvReleaseInput): Promise<KvReleaseResult>;
  /** Fields the gateway adds to a request body for this session (cache_salt for vLLM, id_slot for llama.cpp). */
  decorateRequest(body: Record<string, unknown>, ctx: { salt: string; session: SessionRecord }): Promise<void>;
  /** The engine slot a session is bound to right now (llama.cpp), kept on SessionRecord.slot when it records. */
  slotOf?(session: string): number | null;
  close(): Promise<void>;
}
