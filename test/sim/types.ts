import type { HashAlgo } from './hash.js';

/** 'vllm-0.12': new metric names, include_usage defaults false, strict cache_salt rule. 'vllm-0.10': old. */
export type SimProfile = 'vllm-0.10' | 'vllm-0.12';

export interface SimOptions {
  /** Bind address; only loopback is allowed ('127.0.0.1'). */
  host: string;
  /** vLLM port (0 = ephemeral). */
  port: number;
  /** LMCache controller port (0 = ephemeral). */
  lmcachePort: number;
  /** Served model name (`model` field, `model_name` metric label). */
  model: string;
  maxModelLen: number;
  blockSize: number;
  /** num_gpu_blocks (block 0 is the reserved null block). */
  gpuBlocks: number;
  /** Run the LMCache tier and controller (false = plain vLLM with local prefix caching only). */
  lmcache: boolean;
  lmcacheChunkSize: number;
  lmcacheCpuChunks: number;
  lmcacheDiskChunks: number;
  lmcacheInstanceId: string;
  profile: SimProfile;
  /** `--enable-prompt-tokens-details`: emit usage.prompt_tokens_details (else null). */
  promptTokensDetails: boolean;
  /** `/version` string; defaults by profile ('0.12.0' / '0.10.2'). */
  version: string;
  /** Latency model, microseconds per token: recomputed prompt tokens, tokens loaded from LMCache, decode. */
  prefillUsPerToken: number;
  loadUsPerToken: number;
  decodeUsPerToken: number;
  /** Block/chunk hash: 'fast' (default) or vLLM's exact 'sha256_cbor'. */
  hashAlgo: HashAlgo;
  /** KV bytes per token for LMCache byte gauges (Llama-3-8B: 2·32·8·128·2 = 131072). */
  kvBytesPerToken: number;
  /** How many request bodies /admin/requests keeps. */
  requestLogSize: number;
}

export type FaultMode = 'none' | '503' | 'slow' | 'drop' | 'reset-mid-stream' | 'down';
export type FaultTarget = 'vllm' | 'lmcache';

export interface FaultSpec {
  mode: FaultMode;
  /** 'slow': delay before the response headers, ms (default 1000). */
  delayMs?: number;
  /** Number of requests to affect, then the mode resets to 'none' (default: unlimited). */
  count?: number;
  /** Path prefixes to affect (default: every non-admin path, except /health for modes other than 'down'). */
  paths?: string[];
  /** Which server ('vllm' default, or the LMCache controller — a sim extension). */
  target?: FaultTarget;
}

export interface LoggedRequest {
  server: 'vllm' | 'lmcache';
  method: string;
  path: string;
  /** ms since the epoch. */
  time: number;
  body: unknown;
}
