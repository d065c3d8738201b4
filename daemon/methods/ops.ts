import { writeConfigPatch } from '../config.js';
import type { Daemon } from '../daemon.js';
import { CwmError } from '../protocol/index.js';
import { checkRegistry } from '../registry/check.js';
import type { Handlers } from '../server/rpc-server.js';
import { VERSION } from '../version.js';

type Component = {
  name: string;
  status: 'ok' | 'degraded' | 'down' | 'disabled';
  message: string;
  latencyMs: number | null;
};

export function opsMethods(d: Daemon): Handlers {
  const autoFreezeView = () => {
    const c = d.config;
    const source: Record<string, string> = {};
    for (const k of Object.keys(c.config.autoFreeze)) source[k] = c.sources[`autoFreeze.${k}`] ?? 'default';
    return {
      policy: { ...c.config.autoFreeze },
      source,
      lastRunAt: d.monitorStatus?.().lastRunAt ?? null,
      pressure: d.monitorStatus?.().pressure ?? { kvUsage: null, hostAvailable: null, underPressure: false },
    };
  };
  return {
    'autofreeze.get': () => autoFreezeView(),
    'autofreeze.set': async (p) => {
      const patch = Object.fromEntries(Object.entries(p).filter(([, v]) => v !== undefined));
      if (Object.keys(patch).length === 0) {
        throw new CwmError('INVALID_PARAMS', 'autofreeze.set needs at least one field', {
          hint: 'e.g. {"threshold": 0.7} or {"enabled": false}',
        });
      }
      const overridden = Object.keys(patch).filter((k) => {
        const src = d.config.sources[`autoFreeze.${k}`];
        return src === 'env' || src === 'flag';
      });
      if (overridden.length > 0) {
        throw new CwmError(
          'INVALID_STATE',
          `autoFreeze.${overridden.join(', autoFreeze.')} is set by an environment variable or flag`,
          {
            hint: 'remove the CWM_* variable or flag and restart, then change it here',
          },
        );
      }
      // The file is the one place policy lives: the change survives restarts and the watcher sees it too.
      writeConfigPatch(d.config.file, { autoFreeze: patch });
      const r = d.reloadConfig();
      if (!r.ok) throw new CwmError('CONFIG_INVALID', r.error ?? 'invalid config', { hint: 'fix the config file' });
      await d.ctx.audit.record({ action: 'autofreeze.set', actor: 'rpc', details: patch });
      return autoFreezeView();
    },
    'audit.list': async (p) => ({
      events: await d.ctx.audit.list({ limit: p?.limit ?? 50, action: p?.action, since: p?.since }),
    }),
    'config.show': () => ({
      file: d.config.file,
      config: d.config.config as unknown as Record<string, unknown>,
      sources: d.config.sources,
      lastError: d.lastConfigError,
      pendingRestart: d.pendingRestart,
    }),
    'cache.stats': async () => {
      const reg = d.reg;
      let engine = {
        reachable: false,
        kind: d.backend.kind,
        kvUsage: null as number | null,
        prefixCacheQueries: null as number | null,
        prefixCacheHits: null as number | null,
        externalPrefixCacheHits: null as number | null,
        hitRate: null as number | null,
        error: null as string | null,
      };
      try {
        const m = await d.backend.metrics();
        const hits = (m.prefixCacheHits ?? 0) + (m.externalPrefixCacheHits ?? 0);
        engine = {
          ...engine,
          reachable: true,
          kvUsage: m.kvUsage,
          prefixCacheQueries: m.prefixCacheQueries,
          prefixCacheHits: m.prefixCacheHits,
          externalPrefixCacheHits: m.externalPrefixCacheHits,
          hitRate: m.prefixCacheQueries ? hits / m.prefixCacheQueries : null,
        };
      } catch (err) {
        engine.error = (err as Error).message;
      }
      const thawCount = await d.metrics.operations
        .get()
        .then((v) =>
          v.values.filter((x) => x.labels.op === 'thaw' && x.labels.outcome === 'ok').reduce((a, x) => a + x.value, 0),
        );
      const thawTok = await d.metrics.thawTokens.get();
      const tok = (src: string) =>
        thawTok.values.filter((x) => x.labels.source === src).reduce((a, x) => a + x.value, 0);
      return {
        registry: {
          windows: await reg.count('c!'),
          chunks: await reg.count('chunks'),
          bytesStored: await reg.count('bytes'),
          tokensStored: await reg.count('tokens'),
        },
        engine,
        thaws: { count: thawCount, cachedTokens: tok('cache'), recomputedTokens: tok('recomputed') },
      };
    },
    'health.check': async (p) => {
      const components: Component[] = [];
      const want = (n: string) => !p?.component || p.component === n;
      if (want('registry')) {
        const t0 = performance.now();
        try {
          await d.reg.meta.get('schemaVersion');
          components.push({
            name: 'registry',
            status: 'ok',
            message: `LevelDB at ${d.reg.location}`,
            latencyMs: performance.now() - t0,
          });
        } catch (err) {
          components.push({ name: 'registry', status: 'down', message: (err as Error).message, latencyMs: null });
        }
      }
      if (want('engine')) {
        const h = await d.backend.health();
        components.push({ name: 'engine', status: h.ok ? 'ok' : 'down', message: h.message, latencyMs: h.latencyMs });
      }
      if (want('lmcache')) {
        const h = await d.backend.lmcacheHealth();
        components.push(
          h
            ? { name: 'lmcache', status: h.ok ? 'ok' : 'down', message: h.message, latencyMs: h.latencyMs }
            : {
                name: 'lmcache',
                status: 'disabled',
                message: 'no LMCache controller configured (engine.lmcacheUrl)',
                latencyMs: null,
              },
        );
      }
      if (want('gateway')) {
        const g = d.gatewayInfo;
        components.push(
          g
            ? { name: 'gateway', status: g.listening ? 'ok' : 'down', message: g.url, latencyMs: null }
            : { name: 'gateway', status: 'disabled', message: 'gateway.listen is off', latencyMs: null },
        );
      }
      const status = components.some((c) => c.status === 'down' && (c.name === 'registry' || c.name === 'engine'))
        ? components.some((c) => c.name === 'registry' && c.status === 'down')
          ? 'down'
          : 'degraded'
        : components.some((c) => c.status === 'down')
          ? 'degraded'
          : 'ok';
      return { status, version: VERSION, uptimeSeconds: (Date.now() - d.startedAt.getTime()) / 1000, components };
    },
    'registry.check': async (p) => {
      const r = await d.reg.mutex.run(() => checkRegistry(d.reg, p?.repair ?? false));
      if (r.repaired > 0) {
        // A repair deletes and rewrites registry records: it belongs in the audit trail like any destructive action.
        await d.ctx.audit.record({
          action: 'registry.repair',
          actor: 'rpc',
          details: { repaired: r.repaired, kinds: [...new Set(r.problems.map((x) => x.kind))] },
        });
      }
      return r;
    },
  };
}
