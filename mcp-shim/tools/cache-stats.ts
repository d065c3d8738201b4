import { bytes } from '../../client/cli/output.js';
import { OpsSchemas } from '../../daemon/protocol/index.js';
import { int, pct, result, run, type ToolDeps } from './tool.js';

export function registerCacheStatsTool(deps: ToolDeps): void {
  deps.server.registerTool(
    'cache_stats',
    {
      title: 'Cache statistics',
      description:
        "What cwm has stored (windows, chunks, bytes, tokens), the engine's KV cache state (usage, prefix-cache hit " +
        'rate, LMCache hits) and how well thaws were served from the cache so far.',
      inputSchema: {},
      outputSchema: OpsSchemas.CacheStatsResult,
      annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false },
    },
    () =>
      run(deps, async () => {
        const r = await deps.link.call('cache.stats', {}, { readOnly: true });
        const e = r.engine;
        const engine = e.reachable
          ? `Engine (${e.kind}): reachable, KV cache usage ${pct(e.kvUsage)}, prefix-cache hit rate ${pct(e.hitRate)}` +
            (e.externalPrefixCacheHits === null ? '' : `, ${int(e.externalPrefixCacheHits)} LMCache hits`)
          : `Engine (${e.kind}): not reachable${e.error ? ` (${e.error})` : ''}`;
        const t = r.thaws;
        const total = t.cachedTokens + t.recomputedTokens;
        return result(
          [
            `Registry: ${int(r.registry.windows)} windows, ${int(r.registry.chunks)} chunks, ` +
              `${bytes(r.registry.bytesStored)}, ${int(r.registry.tokensStored)} tokens.`,
            `${engine}.`,
            `Thaws: ${int(t.count)}; ${int(t.cachedTokens)} tokens from cache, ${int(t.recomputedTokens)} recomputed` +
              (total > 0 ? ` (${pct(t.cachedTokens / total)} cached).` : '.'),
          ].join('\n'),
          r,
        );
      }),
  );
}
