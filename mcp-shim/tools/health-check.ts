import { OpsSchemas } from '../../daemon/protocol/index.js';
import { ms, result, run, type ToolDeps } from './tool.js';

export function registerHealthCheckTool(deps: ToolDeps): void {
  deps.server.registerTool(
    'health_check',
    {
      title: 'Health check',
      description:
        'Is cwm working? Checks the daemon and its components: registry (storage), engine (the LLM server), lmcache ' +
        '(the KV cache store) and gateway. Overall status is ok, degraded (works with reduced function) or down. ' +
        'Give component to check just one.',
      inputSchema: {
        component: OpsSchemas.HealthParams.unwrap().shape.component.describe(
          'Check only this component (default: all).',
        ),
      },
      outputSchema: OpsSchemas.HealthResult,
      annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false },
    },
    (a) =>
      run(deps, async () => {
        const r = await deps.link.call('health.check', a.component === undefined ? {} : { component: a.component }, {
          readOnly: true,
        });
        const parts = r.components.map(
          (c) =>
            `- ${c.name}: ${c.status}${c.message ? ` (${c.message})` : ''}${c.latencyMs === null ? '' : `, ${ms(c.latencyMs)}`}`,
        );
        return result(
          [
            `cwm ${r.version} is ${r.status.toUpperCase()} (daemon up ${Math.round(r.uptimeSeconds)} s):`,
            ...parts,
          ].join('\n'),
          r,
        );
      }),
  );
}
