/**
 * Prometheus text exposition for the simulator, with vLLM V1 names (reference §2) and LMCache names (§4.8).
 * Labels are printed alphabetically (as in the reference sample), counters carry `_total`, values print as
 * Python floats (`12.0`). Profile 'vllm-0.10' uses the old `gpu_cache_usage_perc` / `gpu_prefix_cache_*`
 * names and has no `external_prefix_cache_*` or `engine_sleep_state`; 'vllm-0.12' uses the new names.
 */
import type { Engine } from './engine.js';
import type { SimProfile } from './types.js';

export const TTFT_BUCKETS = [
  0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0,
  640.0, 2560.0,
];
export const E2E_BUCKETS = [
  0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0,
  7680.0,
];

/** vLLM `build_1_2_5_buckets(max)`: 1, 2, 5, 10, 20, 50, … up to max. */
export function tokenBuckets(max: number): number[] {
  const out: number[] = [];
  for (let exp = 1; ; exp *= 10) {
    for (const m of [1, 2, 5]) {
      const v = m * exp;
      if (v > max) return out;
      out.push(v);
    }
  }
}

export class Histogram {
  readonly bounds: readonly number[];
  counts: number[];
  sum = 0;
  count = 0;

  constructor(bounds: readonly number[]) {
    this.bounds = bounds;
    this.counts = new Array(bounds.length).fill(0);
  }

  observe(v: number): void {
    this.sum += v;
    this.count++;
    for (let i = 0; i < this.bounds.length; i++) {
      if (v <= (this.bounds[i] as number)) this.counts[i] = (this.counts[i] as number) + 1;
    }
  }

  reset(): void {
    this.counts = new Array(this.bounds.length).fill(0);
    this.sum = 0;
    this.count = 0;
  }
}

/** Python-style float formatting: integers as `12.0`. */
export function fmt(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Number.POSITIVE_INFINITY) return '+Inf';
  if (v === Number.NEGATIVE_INFINITY) return '-Inf';
  if (Number.isInteger(v) && Math.abs(v) < 1e16) return `${v}.0`;
  return String(v);
}

function esc(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

type Labels = Record<string, string>;

function labelText(labels: Labels): string {
  const keys = Object.keys(labels).sort();
  if (keys.length === 0) return '';
  return `{${keys.map((k) => `${k}="${esc(labels[k] as string)}"`).join(',')}}`;
}

class Writer {
  private lines: string[] = [];

  family(name: string, type: 'gauge' | 'counter' | 'histogram', help: string): void {
    this.lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  }

  sample(name: string, labels: Labels, value: number): void {
    this.lines.push(`${name}${labelText(labels)} ${fmt(value)}`);
  }

  gauge(name: string, help: string, labels: Labels, value: number): void {
    this.family(name, 'gauge', help);
    this.sample(name, labels, value);
  }

  counter(name: string, help: string, labels: Labels, value: number): void {
    this.family(`${name}_total`, 'counter', help);
    this.sample(`${name}_total`, labels, value);
  }

  histogram(name: string, help: string, labels: Labels, h: Histogram): void {
    this.family(name, 'histogram', help);
    for (let i = 0; i < h.bounds.length; i++) {
      this.sample(`${name}_bucket`, { ...labels, le: fmt(h.bounds[i] as number) }, h.counts[i] as number);
    }
    this.sample(`${name}_bucket`, { ...labels, le: '+Inf' }, h.count);
    this.sample(`${name}_count`, labels, h.count);
    this.sample(`${name}_sum`, labels, h.sum);
  }

  text(): string {
    return `${this.lines.join('\n')}\n`;
  }
}

export interface MetricsContext {
  profile: SimProfile;
  model: string;
  engine: Engine;
  /** Reported KV usage (the real value, or the admin override). */
  kvUsage: number;
  blockSize: number;
  gpuBlocks: number;
  hashAlgoLabel: string;
  kvBytesPerToken: number;
}

export function renderMetrics(ctx: MetricsContext): string {
  const w = new Writer();
  const e = ctx.engine;
  const c = e.counters;
  const old = ctx.profile === 'vllm-0.10';
  const base: Labels = { engine: '0', model_name: ctx.model };

  w.gauge('vllm:num_requests_running', 'Number of requests in model execution batches.', base, e.numRunning);
  w.gauge('vllm:num_requests_waiting', 'Number of requests waiting to be processed.', base, e.numWaiting);
  if (old) {
    w.gauge('vllm:gpu_cache_usage_perc', 'GPU KV-cache usage. 1 means 100 percent usage.', base, ctx.kvUsage);
    w.counter(
      'vllm:gpu_prefix_cache_queries',
      'GPU prefix cache queries, in terms of number of queried tokens.',
      base,
      c.prefixQueries,
    );
    w.counter(
      'vllm:gpu_prefix_cache_hits',
      'GPU prefix cache hits, in terms of number of cached tokens.',
      base,
      c.prefixHits,
    );
  } else {
    w.family(
      'vllm:engine_sleep_state',
      'gauge',
      'Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; ' +
        'weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.',
    );
    w.sample('vllm:engine_sleep_state', { ...base, sleep_state: 'awake' }, 1);
    w.sample('vllm:engine_sleep_state', { ...base, sleep_state: 'weights_offloaded' }, 0);
    w.sample('vllm:engine_sleep_state', { ...base, sleep_state: 'discard_all' }, 0);
    w.gauge('vllm:kv_cache_usage_perc', 'KV-cache usage. 1 means 100 percent usage.', base, ctx.kvUsage);
    w.counter(
      'vllm:prefix_cache_queries',
      'Prefix cache queries, in terms of number of queried tokens.',
      base,
      c.prefixQueries,
    );
    w.counter('vllm:prefix_cache_hits', 'Prefix cache hits, in terms of number of cached tokens.', base, c.prefixHits);
    w.counter(
      'vllm:external_prefix_cache_queries',
      'External prefix cache queries from KV connector cross-instance cache sharing, in terms of number of queried tokens.',
      base,
      c.externalQueries,
    );
    w.counter(
      'vllm:external_prefix_cache_hits',
      'External prefix cache hits from KV connector cross-instance cache sharing, in terms of number of cached tokens.',
      base,
      c.externalHits,
    );
  }
  w.counter('vllm:num_preemptions', 'Cumulative number of preemption from the engine.', base, c.preemptions);
  w.counter('vllm:prompt_tokens', 'Number of prefill tokens processed.', base, c.promptTokens);
  w.counter('vllm:generation_tokens', 'Number of generation tokens processed.', base, c.generationTokens);
  w.family('vllm:request_success_total', 'counter', 'Count of successfully processed requests.');
  for (const reason of ['stop', 'length', 'abort'] as const) {
    w.sample('vllm:request_success_total', { ...base, finished_reason: reason }, c.finished[reason]);
  }
  w.histogram('vllm:request_prompt_tokens', 'Number of prefill tokens processed.', base, e.promptHist);
  w.histogram('vllm:request_generation_tokens', 'Number of generation tokens processed.', base, e.generationHist);
  w.histogram('vllm:time_to_first_token_seconds', 'Histogram of time to first token in seconds.', base, e.ttft);
  w.histogram('vllm:e2e_request_latency_seconds', 'Histogram of e2e request latency in seconds.', base, e.e2e);
  w.gauge(
    'vllm:cache_config_info',
    'Information of the LLMEngine CacheConfig',
    {
      block_size: String(ctx.blockSize),
      cache_dtype: 'auto',
      calculate_kv_scales: 'False',
      cpu_offload_gb: '0',
      enable_prefix_caching: 'True',
      engine: '0',
      gpu_memory_utilization: '0.9',
      is_attention_free: 'False',
      num_cpu_blocks: 'None',
      num_gpu_blocks: String(ctx.gpuBlocks),
      num_gpu_blocks_override: 'None',
      prefix_caching_hash_algo: ctx.hashAlgoLabel,
      sliding_window: 'None',
      swap_space: '4',
    },
    1,
  );

  const lm = e.lmcache;
  if (lm !== null) {
    const s = lm.stats();
    const k = s.counters;
    const l: Labels = { model_name: ctx.model, worker_id: '0' };
    const chunkBytes = lm.chunkSize * ctx.kvBytesPerToken;
    w.counter(
      'lmcache:num_retrieve_requests',
      'Total number of retrieve requests sent to lmcache',
      l,
      k.retrieveRequests,
    );
    w.counter('lmcache:num_store_requests', 'Total number of store requests sent to lmcache', l, k.storeRequests);
    w.counter('lmcache:num_lookup_requests', 'Total number of lookup requests sent to lmcache', l, k.lookupRequests);
    w.counter('lmcache:num_requested_tokens', 'Total number of tokens requested from lmcache', l, k.requestedTokens);
    w.counter('lmcache:num_hit_tokens', 'Total number of tokens hit in lmcache', l, k.hitTokens);
    w.counter(
      'lmcache:num_lookup_tokens',
      'Total number of tokens requested in lookup from lmcache',
      l,
      k.lookupTokens,
    );
    w.counter('lmcache:num_lookup_hits', 'Total number of tokens hit in lookup from lmcache', l, k.lookupHitTokens);
    w.counter('lmcache:num_stored_tokens', 'Total number of tokens stored in lmcache', l, k.storedTokens);
    w.counter('lmcache:local_cpu_evict_count', 'Total number of evictions in local cpu backend', l, k.cpuEvictions);
    w.counter(
      'lmcache:local_cpu_evict_keys_count',
      'Total number of evicted keys in local cpu backend',
      l,
      k.cpuEvictions,
    );
    w.counter(
      'lmcache:local_cpu_evict_failed_count',
      'Total number of failed evictions in local cpu backend',
      l,
      k.storeFailures,
    );
    w.gauge(
      'lmcache:retrieve_hit_rate',
      'The hit rate for retrieve requests',
      l,
      k.requestedTokens > 0 ? k.hitTokens / k.requestedTokens : 0,
    );
    w.gauge(
      'lmcache:lookup_hit_rate',
      'The hit rate for lookup requests',
      l,
      k.lookupTokens > 0 ? k.lookupHitTokens / k.lookupTokens : 0,
    );
    w.gauge('lmcache:local_cache_usage', 'Local cache usage (bytes) of lmcache', l, s.cpuChunks * chunkBytes);
    w.gauge('lmcache:local_storage_usage', 'Local storage usage (bytes) of lmcache', l, s.diskChunks * chunkBytes);
    w.gauge('lmcache:active_memory_objs_count', 'The number of active memory objects', l, s.cpuChunks);
    w.gauge('lmcache:pinned_memory_objs_count', 'The number of pinned memory objects', l, s.pinnedChunks);
  }
  return w.text();
}
