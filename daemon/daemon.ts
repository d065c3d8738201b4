import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { LlamaCppBackend } from './backends/llamacpp/backend.js';
import type { EngineBackend } from './backends/types.js';
import { VllmBackend } from './backends/vllm/backend.js';
import { type LoadedConfig, loadConfig, restartNeeded } from './config.js';
import { Gateway } from './gateway/index.js';
import { bundleMethods } from './methods/bundle.js';
import { daemonMethods } from './methods/daemon.js';
import { opsMethods } from './methods/ops.js';
import { sessionMethods } from './methods/session.js';
import { windowMethods } from './methods/window.js';
import { Metrics } from './metrics.js';
import { Monitor } from './monitor/index.js';
import { type CwmPaths, checkSocketPath, isNamedPipe } from './paths.js';
import { CwmError, PROTOCOL_VERSION } from './protocol/index.js';
import { checkRegistry } from './registry/check.js';
import { loadOrCreateSecret, Registry } from './registry/db.js';
import { type Handlers, RpcServer } from './server/rpc-server.js';
import { prepareSocketDir, probeSocket } from './server/single-instance.js';
import { AuditLog } from './services/audit.js';
import type { ServiceContext } from './services/context.js';
import { SessionService } from './services/sessions.js';
import { WindowService } from './services/windows.js';
import { VERSION } from './version.js';

/** RPC methods whose failures count as failed window operations in cwm_operations_total. */
const FAILED_OPS: Record<string, string> = {
  'window.freeze': 'freeze',
  'window.clone': 'clone',
  'window.delete': 'delete',
};

export interface DaemonOptions {
  paths: CwmPaths;
  config: LoadedConfig;
  /** Flags given on the command line, re-applied over the file when it changes. */
  flags: Record<string, unknown>;
  log: Logger;
  /** A listening socket handed over by the service manager (systemd socket activation). */
  listenFd?: number | undefined;
}

export function createBackend(cfg: LoadedConfig, log: Logger): EngineBackend {
  const engine = cfg.config.engine;
  if (engine.kind === 'vllm') return new VllmBackend(engine, log.child({ component: 'vllm' }));
  if (engine.kind === 'llamacpp') return new LlamaCppBackend(engine, log.child({ component: 'llamacpp' }));
  throw new CwmError('UNSUPPORTED', `engine.kind "${engine.kind}" is not available in this build`, {
    hint: 'use engine.kind "vllm" or "llamacpp"',
  });
}

/** The daemon: one registry, one engine backend, one RPC server; the only writer of the registry. */
/** How often engine releases that could not be done (engine unreachable) are tried again. */
const RELEASE_RETRY_MS = 60_000;

export class Daemon {
  readonly startedAt = new Date();
  readonly metrics = new Metrics();
  private stopping: Promise<void> | null = null;
  private cfg: LoadedConfig;
  readonly ctx: ServiceContext;
  readonly sessions: SessionService;
  readonly windows: WindowService;
  rpc: RpcServer | null = null;
  private readonly extraClosers: (() => Promise<void>)[] = [];
  private stopResolve!: () => void;
  /** Resolves once the daemon has fully stopped. */
  readonly stopped = new Promise<void>((resolve) => {
    this.stopResolve = resolve;
  });

  private constructor(
    readonly opts: DaemonOptions,
    readonly reg: Registry,
    readonly backend: EngineBackend,
  ) {
    this.cfg = opts.config;
    const secret = loadOrCreateSecret(opts.paths.dataDir);
    this.ctx = {
      reg,
      backend,
      audit: new AuditLog(reg),
      log: opts.log,
      metrics: this.metrics,
      secret,
      cfg: () => this.cfg,
    };
    this.sessions = new SessionService(this.ctx);
    this.windows = new WindowService(this.ctx, this.sessions);
  }

  get config(): LoadedConfig {
    return this.cfg;
  }

  get log(): Logger {
    return this.opts.log;
  }

  static async start(opts: DaemonOptions): Promise<Daemon> {
    const { paths, log } = opts;
    if (opts.listenFd === undefined) {
      checkSocketPath(paths.socket);
      prepareSocketDir(paths.socket);
      // Singleton first, registry second: a failed second LevelDB open in one process would drop its lock.
      const probe = await probeSocket(paths.socket);
      if (probe.state === 'live') {
        throw new CwmError(
          'INVALID_STATE',
          `cwmd is already running (pid ${probe.pid ?? 'unknown'}) on ${paths.socket}`,
          {
            hint: 'stop it with `cwm daemon stop`, or use another --socket',
            details: { pid: probe.pid },
          },
        );
      }
      if (probe.state === 'stale' && !isNamedPipe(paths.socket)) {
        log.warn({ socket: paths.socket }, 'removing stale socket left by a previous daemon');
        fs.rmSync(paths.socket, { force: true });
      }
    }
    fs.mkdirSync(paths.dataDir, { recursive: true, mode: 0o700 });
    const reg = await Registry.open(path.join(paths.dataDir, 'registry'), log.child({ component: 'registry' }));
    reg.syncWrites = opts.config.config.daemon.syncWrites;
    let backend: EngineBackend;
    try {
      backend = createBackend(opts.config, log);
    } catch (err) {
      await reg.close();
      throw err;
    }
    const check = await checkRegistry(reg, false);
    let repaired = 0;
    if (!check.ok) {
      log.warn(
        { problems: check.problems.slice(0, 20), total: check.problems.length },
        'registry check found problems; repairing what can be derived',
      );
      repaired = (await checkRegistry(reg, true)).repaired;
    }
    const daemon = new Daemon(opts, reg, backend);
    const rpc = new RpcServer(daemon.handlers(), {
      maxLineBytes: opts.config.config.daemon.maxLineBytes,
      log: log.child({ component: 'rpc' }),
      partialLineTimeoutMs: 60_000,
      onCall: (method, seconds, ok) => {
        daemon.metrics.rpcSeconds.observe({ method, outcome: ok ? 'ok' : 'error' }, seconds);
        // Successes are counted by the windows service; failures that never reached it are counted here.
        const op = FAILED_OPS[method];
        if (!ok && op) daemon.metrics.operations.inc({ op, outcome: 'error' });
      },
    });
    daemon.rpc = rpc;
    try {
      await rpc.listen(opts.listenFd !== undefined ? { fd: opts.listenFd } : { path: paths.socket });
      if (opts.listenFd === undefined && !isNamedPipe(paths.socket)) fs.chmodSync(paths.socket, 0o600);
    } catch (err) {
      await reg.close();
      await backend.close();
      throw new CwmError('STORAGE_ERROR', `cannot listen on ${paths.socket}: ${(err as Error).message}`, {
        hint: 'check the socket directory; `cwm doctor` explains more',
        cause: err,
      });
    }
    try {
      await daemon.startServices();
    } catch (err) {
      await rpc.close(0).catch(() => {});
      await backend.close().catch(() => {});
      await reg.close();
      throw err;
    }
    await daemon.ctx.audit.record({
      action: 'daemon.start',
      actor: 'daemon',
      details: { version: VERSION, pid: process.pid },
    });
    if (repaired > 0) {
      // A repair deletes and rewrites registry records: it belongs in the audit trail like any destructive action.
      await daemon.ctx.audit.record({
        action: 'registry.repair',
        actor: 'daemon',
        details: { repaired, kinds: [...new Set(check.problems.map((p) => p.kind))] },
      });
    }
    log.info({ socket: paths.socket, dataDir: paths.dataDir, version: VERSION, engine: backend.url }, 'cwmd started');
    return daemon;
  }

  private cachedHandlers: Handlers | null = null;
  handlers(): Handlers {
    this.cachedHandlers ??= {
      ...daemonMethods({ status: () => this.status(), shutdown: (reason) => void this.stop(reason) }),
      ...sessionMethods(this.ctx, this.sessions),
      ...windowMethods(this.ctx, this.windows),
      ...bundleMethods(this.ctx, this.windows),
      ...opsMethods(this),
    };
    return this.cachedHandlers;
  }

  /** The gateway (when gateway.listen is set) and the monitor loop; both stop before the registry closes. */
  private async startServices(): Promise<void> {
    const cfg = this.cfg.config;
    if (cfg.gateway.listen) {
      // A non-loopback address is a config error and stops the start; a port that is taken is not: the daemon
      // runs, reports the gateway as down (status, health, doctor) and keeps trying to bind it.
      const gw = Gateway.create(
        { ctx: this.ctx, sessions: this.sessions, log: this.log.child({ component: 'gateway' }) },
        cfg.gateway.listen,
      );
      let retry: NodeJS.Timeout | null = null;
      let warned = false;
      const bind = async () => {
        retry = null;
        try {
          const url = await gw.listen();
          this.gatewayInfo = { url, listening: true };
          this.log.info({ url }, 'gateway listening');
        } catch (err) {
          this.gatewayInfo = { url: `http://${gw.listenAddress}`, listening: false };
          if (!warned) this.log.error({ err: (err as Error).message }, 'gateway not listening; retrying every 5 s');
          warned = true;
          retry = setTimeout(() => void bind(), 5000);
          retry.unref();
        }
      };
      await bind();
      this.onStop(async () => {
        if (retry) clearTimeout(retry);
        if (this.gatewayInfo) this.gatewayInfo.listening = false;
        await gw.close(this.cfg.config.daemon.shutdownGraceMs);
      });
    }
    this.metrics.addCollector(async () => {
      this.metrics.windows.set(await this.reg.count('c!'));
      const byState: Record<string, number> = { active: 0, frozen: 0, thawed: 0, ended: 0 };
      await this.sessions.settle();
      for await (const v of this.reg.sessions.values()) {
        const st = (v as { state: string }).state;
        byState[st] = (byState[st] ?? 0) + 1;
      }
      for (const [state, n] of Object.entries(byState)) this.metrics.sessions.set({ state }, n);
    });
    const monitor = new Monitor({
      ctx: this.ctx,
      windows: this.windows,
      log: this.log.child({ component: 'monitor' }),
    });
    monitor.start();
    this.monitorStatus = () => monitor.status();
    this.configListeners.push(() => monitor.rearm());
    this.onStop(() => monitor.stop());
    // Engine state a crash or an unreachable engine left unreleased (see WindowService.release): now, then every minute.
    let retrying: Promise<unknown> = this.windows.retryReleases().catch(() => {});
    const releases = setInterval(() => {
      retrying = this.windows.retryReleases().catch(() => {});
    }, RELEASE_RETRY_MS);
    releases.unref();
    this.onStop(async () => {
      clearInterval(releases);
      await retrying;
    });
  }

  /** Called after each successful config reload (the monitor re-arms its timer). */
  private readonly configListeners: (() => void)[] = [];

  /** Add something to close at shutdown (gateway, monitor, watchers), in reverse order of registration. */
  onStop(fn: () => Promise<void>): void {
    this.extraClosers.push(fn);
  }

  gatewayInfo: { url: string; listening: boolean } | null = null;
  /** Set by the monitor when it runs: last run and pressure readings for autofreeze.get. */
  monitorStatus:
    | (() => {
        lastRunAt: string | null;
        pressure: { kvUsage: number | null; hostAvailable: number | null; underPressure: boolean };
      })
    | null = null;

  async status() {
    const reg = this.reg;
    // Sessions the gateway has not written yet count too (a new session appears the moment its first answer ends).
    await this.sessions.settle();
    return {
      version: VERSION,
      protocolVersion: PROTOCOL_VERSION,
      pid: process.pid,
      uptimeSeconds: (Date.now() - this.startedAt.getTime()) / 1000,
      startedAt: this.startedAt.toISOString(),
      socket: this.opts.paths.socket,
      dataDir: this.opts.paths.dataDir,
      configFile: this.opts.paths.configFile,
      logFile: this.opts.paths.logFile,
      counts: {
        sessions: await reg.count('sessions'),
        windows: await reg.count('c!'),
        chunks: await reg.count('chunks'),
      },
      registryBytes: reg.sizeOnDisk(),
      gateway: this.gatewayInfo,
      engine: { kind: this.backend.kind, url: this.backend.url, lmcacheUrl: this.backend.lmcacheUrl },
      connections: this.rpc?.connectionCount ?? 0,
      inFlight: this.rpc?.inFlight ?? 0,
    };
  }

  /** Re-read the config (file changed): apply policy live, keep the last good config when the new one is invalid. */
  reloadConfig(): { ok: boolean; error: string | null; restart: string[] } {
    try {
      const next = loadConfig(this.opts.paths.configFile, process.env, this.opts.flags);
      // Against the config the daemon started with: what it runs on until a restart, however many edits later.
      const restart = restartNeeded(this.opts.config.config, next.config);
      const newlyPending = restart.filter((k) => !this.pendingRestart.includes(k));
      this.cfg = next;
      this.opts.log.level = next.config.daemon.logLevel;
      this.reg.syncWrites = next.config.daemon.syncWrites;
      if (newlyPending.length > 0) {
        this.opts.log.warn({ keys: newlyPending }, 'config changed: these keys apply after a restart');
      }
      this.lastConfigError = null;
      this.pendingRestart = restart;
      this.metrics.configReloads.inc({ outcome: 'ok' });
      for (const fn of this.configListeners) fn();
      return { ok: true, error: null, restart };
    } catch (err) {
      this.metrics.configReloads.inc({ outcome: 'rejected' });
      this.lastConfigError = (err as Error).message;
      this.opts.log.error({ err: (err as Error).message }, 'config change rejected; keeping the last good config');
      return { ok: false, error: this.lastConfigError, restart: [] };
    }
  }

  lastConfigError: string | null = null;
  pendingRestart: string[] = [];

  stop(reason: string): Promise<void> {
    this.stopping ??= this.doStop(reason);
    return this.stopping;
  }

  private async doStop(reason: string): Promise<void> {
    const log = this.opts.log;
    log.info({ reason }, 'cwmd stopping');
    const { unfinished } = this.rpc ? await this.rpc.close(this.cfg.config.daemon.shutdownGraceMs) : { unfinished: 0 };
    if (unfinished > 0) log.warn({ unfinished }, 'calls still running at shutdown were cut off');
    for (const close of [...this.extraClosers].reverse()) {
      try {
        await close();
      } catch (err) {
        log.warn({ err }, 'error while stopping a component');
      }
    }
    try {
      await this.ctx.audit.record({ action: 'daemon.stop', actor: 'daemon', reason });
    } catch {
      // the registry may be unwritable (disk full); stopping matters more
    }
    await this.backend.close().catch(() => {});
    await this.reg.close();
    if (!isNamedPipe(this.opts.paths.socket) && this.opts.listenFd === undefined) {
      fs.rmSync(this.opts.paths.socket, { force: true });
    }
    log.info({ reason }, 'cwmd stopped');
    this.stopResolve();
  }
}
