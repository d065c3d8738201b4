import { Counter, Gauge, Histogram, Registry as PromRegistry } from 'prom-client';

/** Everything the daemon exports on the gateway's /metrics, prefixed cwm_. Label values are bounded enums. */
export class Metrics {
  readonly registry = new PromRegistry();
  readonly windows: Gauge;
  readonly sessions: Gauge<'state'>;
  readonly operations: Counter<'op' | 'outcome'>;
  readonly thawTokens: Counter<'source'>;
  readonly autoFreezes: Counter<'reason'>;
  readonly rpcSeconds: Histogram<'method' | 'outcome'>;
  readonly gatewaySeconds: Histogram<'route' | 'outcome'>;
  readonly gatewayRequests: Counter<'route' | 'status'>;
  readonly engineErrors: Counter<'code'>;
  readonly pressure: Gauge<'signal'>;

  constructor() {
    const registers = [this.registry];
    this.windows = new Gauge({ name: 'cwm_windows', help: 'Frozen windows in the registry', registers });
    this.sessions = new Gauge({ name: 'cwm_sessions', help: 'Sessions by state', labelNames: ['state'], registers });
    this.operations = new Counter({
      name: 'cwm_operations_total',
      help: 'Window operations (freeze, thaw, clone, delete, export, import) by outcome',
      labelNames: ['op', 'outcome'],
      registers,
    });
    this.thawTokens = new Counter({
      name: 'cwm_thaw_tokens_total',
      help: 'Tokens restored by thaws, by source: cache (loaded from KV) or recomputed',
      labelNames: ['source'],
      registers,
    });
    this.autoFreezes = new Counter({
      name: 'cwm_auto_freezes_total',
      help: 'Automatic freezes by reason (threshold, kv_pressure, host_memory)',
      labelNames: ['reason'],
      registers,
    });
    this.rpcSeconds = new Histogram({
      name: 'cwm_rpc_duration_seconds',
      help: 'JSON-RPC call latency',
      labelNames: ['method', 'outcome'],
      buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
      registers,
    });
    this.gatewaySeconds = new Histogram({
      name: 'cwm_gateway_duration_seconds',
      help: 'Gateway request latency, to the end of the response',
      labelNames: ['route', 'outcome'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120],
      registers,
    });
    this.gatewayRequests = new Counter({
      name: 'cwm_gateway_requests_total',
      help: 'Gateway requests by route and status class',
      labelNames: ['route', 'status'],
      registers,
    });
    this.engineErrors = new Counter({
      name: 'cwm_engine_errors_total',
      help: 'Failed engine calls by error code',
      labelNames: ['code'],
      registers,
    });
    this.pressure = new Gauge({
      name: 'cwm_pressure',
      help: 'Last pressure readings: kv_usage (0..1) and host_available (fraction of memory)',
      labelNames: ['signal'],
      registers,
    });
  }
}
