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
  readonly underPressure: Gauge<'reason'>;
  readonly gatewayRecords: Counter<'outcome'>;
  readonly gatewayInFlight: Gauge;
  readonly pendingReleases: Gauge;
  readonly monitorRuns: Counter<'outcome'>;
  readonly configReloads: Counter<'outcome'>;
  private collectors: (() => Promise<void>)[] = [];

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
    this.underPressure = new Gauge({
      name: 'cwm_under_pressure',
      help: 'Memory pressure state of the monitor (1 while under pressure), by signal: kv_pressure, host_memory',
      labelNames: ['reason'],
      registers,
    });
    this.gatewayRecords = new Counter({
      name: 'cwm_gateway_records_total',
      help: 'Gateway exchanges recorded into sessions, by outcome (ok, coalesced into a newer one, skipped, error)',
      labelNames: ['outcome'],
      registers,
    });
    this.gatewayInFlight = new Gauge({
      name: 'cwm_gateway_in_flight',
      help: 'Gateway requests being forwarded right now',
      registers,
    });
    this.pendingReleases = new Gauge({
      name: 'cwm_pending_releases',
      help: 'Engine state (LMCache pins, state files) of deleted windows or aborted freezes not released yet',
      registers,
    });
    this.monitorRuns = new Counter({
      name: 'cwm_monitor_runs_total',
      help: 'Monitor loop runs by outcome (ok, error)',
      labelNames: ['outcome'],
      registers,
    });
    this.configReloads = new Counter({
      name: 'cwm_config_reloads_total',
      help: 'Config file reloads by outcome (ok, rejected)',
      labelNames: ['outcome'],
      registers,
    });
    this.zeroSeries();
  }

  /** Series that exist from the start (at 0), so dashboards and alerts see them before the first event. */
  private zeroSeries(): void {
    for (const op of ['freeze', 'thaw', 'clone', 'delete']) {
      for (const outcome of ['ok', 'error']) this.operations.inc({ op, outcome }, 0);
    }
    for (const source of ['cache', 'recomputed']) this.thawTokens.inc({ source }, 0);
    for (const reason of ['threshold', 'kv_pressure', 'host_memory']) {
      this.autoFreezes.inc({ reason }, 0);
      if (reason !== 'threshold') this.underPressure.set({ reason }, 0);
    }
    for (const outcome of ['ok', 'coalesced', 'skipped', 'error']) this.gatewayRecords.inc({ outcome }, 0);
    for (const outcome of ['ok', 'error']) this.monitorRuns.inc({ outcome }, 0);
    for (const outcome of ['ok', 'rejected']) this.configReloads.inc({ outcome }, 0);
  }

  /** Run before each scrape, to refresh gauges that are cheaper to read than to keep up to date. */
  addCollector(fn: () => Promise<void>): void {
    this.collectors.push(fn);
  }

  /** The Prometheus text exposition, gauges refreshed first (a failing collector leaves its gauges as they were). */
  async render(): Promise<{ contentType: string; text: string }> {
    await Promise.all(this.collectors.map((fn) => fn().catch(() => {})));
    return { contentType: this.registry.contentType, text: await this.registry.metrics() };
  }
}
