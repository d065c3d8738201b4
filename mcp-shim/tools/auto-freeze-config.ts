import { z } from 'zod';
import { ago } from '../../client/cli/output.js';
import { OpsSchemas } from '../../daemon/protocol/index.js';
import { defined, int, pct, result, run, type ToolDeps } from './tool.js';

type View = z.infer<typeof OpsSchemas.AutoFreezeGetResult>;

function describe(v: View): string {
  const p = v.policy;
  const limits = [`at ${pct(p.threshold)} of the model's context`];
  if (p.maxTokens !== null) limits.push(`or at ${int(p.maxTokens)} tokens`);
  return (
    `Auto-freeze is ${p.enabled ? 'ON' : 'OFF'}: a session is frozen ${limits.join(' ')}, at most once per ` +
    `${p.cooldownSeconds} s per session, checked every ${p.intervalSeconds} s` +
    ` (last check ${v.lastRunAt ? ago(v.lastRunAt) : 'never'}; under memory pressure: ${v.pressure.underPressure ? 'yes' : 'no'}).`
  );
}

export function registerAutoFreezeConfigTool(deps: ToolDeps): void {
  deps.server.registerTool(
    'auto_freeze_config',
    {
      title: 'Auto-freeze policy',
      description:
        'Read or change the auto-freeze policy: when on, cwm freezes a session by itself once its context fills ' +
        'past a threshold, so it can be thawed after the engine evicts it. Call with no arguments to read the ' +
        'policy; give any argument to change just that setting (the change is saved in the config file).',
      inputSchema: {
        enabled: z.boolean().optional().describe('Turn auto-freeze on or off.'),
        token_threshold: z
          .number()
          .gt(0)
          .lte(1)
          .optional()
          .describe("Freeze when a session fills this fraction of the model's context window (0 < x <= 1, e.g. 0.75)."),
        token_count_threshold: z
          .number()
          .int()
          .min(0)
          .optional()
          .describe('Also freeze once a session reaches this many tokens; 0 turns this limit off.'),
        cooldown_seconds: z
          .number()
          .int()
          .min(0)
          .optional()
          .describe('Seconds to wait before auto-freezing the same session again.'),
      },
      outputSchema: OpsSchemas.AutoFreezeGetResult,
      annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: true, openWorldHint: false },
    },
    (a) =>
      run(deps, async () => {
        const patch = defined({
          enabled: a.enabled,
          threshold: a.token_threshold,
          maxTokens: a.token_count_threshold === undefined ? undefined : a.token_count_threshold || null,
          cooldownSeconds: a.cooldown_seconds,
        });
        if (Object.keys(patch).length === 0) {
          const r = await deps.link.call('autofreeze.get', {}, { readOnly: true });
          return result(describe(r), r);
        }
        const r = await deps.link.call('autofreeze.set', patch, { readOnly: false });
        return result(`Updated. ${describe(r)}`, r);
      }),
  );
}
