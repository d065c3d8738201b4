import type { SimOptions } from './types.js';

export const DEFAULT_INSTANCE_ID = 'lmcache_default_instance';

export function resolveOptions(partial: Partial<SimOptions> = {}): SimOptions {
  const profile = partial.profile ?? 'vllm-0.12';
  const o: SimOptions = {
    host: '127.0.0.1',
    port: 0,
    lmcachePort: 0,
    model: 'sim/llama-3-8b-instruct',
    maxModelLen: 32768,
    blockSize: 16,
    gpuBlocks: 4096,
    lmcache: true,
    lmcacheChunkSize: 256,
    lmcacheCpuChunks: 64,
    lmcacheDiskChunks: 256,
    lmcacheInstanceId: DEFAULT_INSTANCE_ID,
    profile,
    promptTokensDetails: true,
    version: profile === 'vllm-0.10' ? '0.10.2' : '0.12.0',
    prefillUsPerToken: 20,
    loadUsPerToken: 1,
    decodeUsPerToken: 200,
    hashAlgo: 'fast',
    kvBytesPerToken: 131072,
    requestLogSize: 100,
    ...stripUndefined(partial),
  };
  validateOptions(o);
  return o;
}

function stripUndefined(p: Partial<SimOptions>): Partial<SimOptions> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(p)) if (v !== undefined) out[k] = v;
  return out as Partial<SimOptions>;
}

function positiveInt(name: string, v: number, min = 1): void {
  if (!Number.isInteger(v) || v < min) throw new Error(`sim option ${name} must be an integer ≥ ${min}, got ${v}`);
}

export function validateOptions(o: SimOptions): void {
  if (o.host !== '127.0.0.1' && o.host !== 'localhost') {
    throw new Error(`sim option host must be 127.0.0.1 (loopback only), got ${o.host}`);
  }
  positiveInt('port', o.port, 0);
  positiveInt('lmcachePort', o.lmcachePort, 0);
  positiveInt('maxModelLen', o.maxModelLen);
  positiveInt('blockSize', o.blockSize);
  positiveInt('gpuBlocks', o.gpuBlocks, 2);
  positiveInt('lmcacheChunkSize', o.lmcacheChunkSize);
  positiveInt('lmcacheCpuChunks', o.lmcacheCpuChunks, 0);
  positiveInt('lmcacheDiskChunks', o.lmcacheDiskChunks, 0);
  positiveInt('requestLogSize', o.requestLogSize, 0);
  if (o.lmcacheChunkSize % o.blockSize !== 0) {
    throw new Error('sim option lmcacheChunkSize must be a multiple of blockSize');
  }
  if (o.profile !== 'vllm-0.10' && o.profile !== 'vllm-0.12') throw new Error(`unknown sim profile ${o.profile}`);
  if (o.hashAlgo !== 'fast' && o.hashAlgo !== 'sha256_cbor') throw new Error(`unknown hashAlgo ${o.hashAlgo}`);
  for (const k of ['prefillUsPerToken', 'loadUsPerToken', 'decodeUsPerToken', 'kvBytesPerToken'] as const) {
    if (!Number.isFinite(o[k]) || o[k] < 0) throw new Error(`sim option ${k} must be a number ≥ 0`);
  }
}
