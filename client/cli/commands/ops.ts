import type { Command } from 'commander';
import { CwmError } from '../../../daemon/protocol/index.js';
import { globals, rpc } from '../context.js';
import { bytes, exitWithError, kv, out, table } from '../output.js';

function num(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n)) throw new CwmError('INVALID_PARAMS', `not a number: ${v}`);
  return n;
}

export function registerOps(program: Command): void {
  const af = program.command('autofreeze').description('show or change the auto-freeze policy (applies live)');
  af.command('show', { isDefault: true })
    .description('print the policy, where each value comes from, and the last pressure readings')
    .action(async (_o: unknown, cmd: Command) => {
      await rpc(cmd, 'autofreeze.get', undefined, (r) =>
        out(
          kv([
            ['enabled', `${r.policy.enabled} (${r.source.enabled})`],
            ['threshold', `${r.policy.threshold} of max_model_len (${r.source.threshold})`],
            ['maxTokens', `${r.policy.maxTokens ?? '-'} (${r.source.maxTokens})`],
            ['cooldown', `${r.policy.cooldownSeconds}s (${r.source.cooldownSeconds})`],
            ['interval', `${r.policy.intervalSeconds}s (${r.source.intervalSeconds})`],
            ['last run', r.lastRunAt],
            ['kv usage', r.pressure.kvUsage === null ? '-' : `${(r.pressure.kvUsage * 100).toFixed(1)}%`],
            [
              'host memory available',
              r.pressure.hostAvailable === null ? '-' : `${(r.pressure.hostAvailable * 100).toFixed(1)}%`,
            ],
            ['under pressure', r.pressure.underPressure],
          ]),
        ),
      );
    });
  af.command('set')
    .description('change the policy (written to the config file, applied at once)')
    .option('--enable', 'turn auto-freeze on')
    .option('--disable', 'turn auto-freeze off')
    .option('--threshold <fraction>', 'freeze at this fraction of max_model_len (0-1]', num)
    .option('--max-tokens <n>', 'freeze at this many tokens (or "none")', (v) => (v === 'none' ? null : num(v)))
    .option('--cooldown <seconds>', 'minimum time between auto-freezes of one session', num)
    .option('--interval <seconds>', 'how often the monitor checks', num)
    .action(
      async (
        o: {
          enable?: boolean;
          disable?: boolean;
          threshold?: number;
          maxTokens?: number | null;
          cooldown?: number;
          interval?: number;
        },
        cmd: Command,
      ) => {
        if (o.enable && o.disable)
          exitWithError(new CwmError('INVALID_PARAMS', '--enable and --disable together'), !!globals(cmd).json);
        const p = {
          ...(o.enable ? { enabled: true } : {}),
          ...(o.disable ? { enabled: false } : {}),
          ...(o.threshold !== undefined ? { threshold: o.threshold } : {}),
          ...(o.maxTokens !== undefined ? { maxTokens: o.maxTokens } : {}),
          ...(o.cooldown !== undefined ? { cooldownSeconds: o.cooldown } : {}),
          ...(o.interval !== undefined ? { intervalSeconds: o.interval } : {}),
        };
        await rpc(cmd, 'autofreeze.set', p, (r) =>
          out(
            `auto-freeze ${r.policy.enabled ? 'on' : 'off'}: threshold ${r.policy.threshold}, maxTokens ${r.policy.maxTokens ?? '-'}, cooldown ${r.policy.cooldownSeconds}s`,
          ),
        );
      },
    );

  program
    .command('audit')
    .description('recent audit events: freezes, thaws, deletes, automatic actions, config changes')
    .option('--limit <n>', 'how many', (v) => Number(v), 50)
    .option('--action <name>', 'only this action (e.g. window.delete, autofreeze.freeze)')
    .option('--since <iso-time>', 'only events at or after this time')
    .action(async (o: { limit: number; action?: string; since?: string }, cmd: Command) => {
      await rpc(
        cmd,
        'audit.list',
        { limit: o.limit, ...(o.action ? { action: o.action } : {}), ...(o.since ? { since: o.since } : {}) },
        (r) =>
          out(
            r.events.length === 0
              ? 'no audit events'
              : table(r.events, [
                  { header: 'TIME', get: (e) => e.time },
                  { header: 'ACTION', get: (e) => e.action },
                  { header: 'ACTOR', get: (e) => e.actor },
                  { header: 'TARGET', get: (e) => e.target },
                  { header: 'OUTCOME', get: (e) => e.outcome },
                  { header: 'REASON', get: (e) => e.reason },
                ]),
          ),
      );
    });

  const config = program.command('config').description('the daemon configuration');
  config
    .command('show', { isDefault: true })
    .description('print the effective config and where each value came from (default, file, env, flag)')
    .action(async (_o: unknown, cmd: Command) => {
      await rpc(cmd, 'config.show', undefined, (r) => {
        const rows = Object.entries(r.sources).map(([key, source]) => ({
          key,
          value: JSON.stringify(
            key.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], r.config),
          ),
          source,
        }));
        out(`config file: ${r.file}`);
        out(
          table(rows, [
            { header: 'KEY', get: (x) => x.key },
            {
              header: 'VALUE',
              get: (x) =>
                (x.key === 'gateway.token' || x.key === 'engine.apiKey') && x.value !== 'null' ? '"********"' : x.value,
            },
            { header: 'SOURCE', get: (x) => x.source },
          ]),
        );
        if (r.lastError) out(`last config error (still using the previous config): ${r.lastError}`);
        if (r.pendingRestart.length > 0) out(`changed, applies after a restart: ${r.pendingRestart.join(', ')}`);
      });
    });

  program
    .command('cache')
    .description('cache statistics: registry storage, engine prefix-cache hits, thaws')
    .action(async (_o: unknown, cmd: Command) => {
      await rpc(cmd, 'cache.stats', undefined, (r) =>
        out(
          kv([
            ['windows', r.registry.windows],
            [
              'chunks',
              `${r.registry.chunks} (${bytes(r.registry.bytesStored)} for ${r.registry.tokensStored} distinct tokens)`,
            ],
            [
              'engine',
              r.engine.reachable ? `${r.engine.kind}, reachable` : `${r.engine.kind}, unreachable: ${r.engine.error}`,
            ],
            ['kv usage', r.engine.kvUsage === null ? '-' : `${(r.engine.kvUsage * 100).toFixed(1)}%`],
            ['prefix cache hit rate', r.engine.hitRate === null ? '-' : `${(r.engine.hitRate * 100).toFixed(1)}%`],
            [
              'thaws',
              `${r.thaws.count} (${r.thaws.cachedTokens} tokens from cache, ${r.thaws.recomputedTokens} recomputed)`,
            ],
          ]),
        ),
      );
    });
}
