import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { loadConfig } from '../../../daemon/config.js';
import { checkSocketPath, resolvePaths } from '../../../daemon/paths.js';
import { isCwmError } from '../../../daemon/protocol/index.js';
import { CwmClient } from '../../rpc-client.js';
import { globals, socketOf } from '../context.js';
import { out, printJson } from '../output.js';

interface Check {
  check: string;
  ok: boolean;
  detail: string;
  fix: string | null;
}

/** Explain what is wrong with the setup, each problem with a fix. Exit 1 when anything failed. */
export function registerDoctor(program: Command): void {
  program
    .command('doctor')
    .description('check socket, daemon, data dir, config, engine and LMCache; explain each problem with a fix')
    .option('--registry', 'also check every registry invariant (chunks, refcounts, indexes, lineage)')
    .option('--repair', 'with --registry: rebuild what can be derived (refcounts, indexes, counters)')
    .action(async (o: { registry?: boolean; repair?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const socket = socketOf(cmd);
      const paths = resolvePaths({ socket });
      const checks: Check[] = [];
      const add = (check: string, ok: boolean, detail: string, fix: string | null = null) =>
        checks.push({ check, ok, detail, fix });

      try {
        checkSocketPath(socket);
        add('socket path', true, socket);
      } catch (err) {
        add('socket path', false, (err as Error).message, isCwmError(err) ? err.hint : null);
      }
      const dir = path.dirname(socket);
      if (fs.existsSync(dir)) {
        const st = fs.statSync(dir);
        const uid = process.getuid?.();
        const okMode = (st.mode & 0o022) === 0 && (uid === undefined || st.uid === uid);
        add(
          'socket directory',
          okMode,
          `${dir} mode ${(st.mode & 0o777).toString(8)}`,
          okMode ? null : `chmod 700 ${dir} (it must be yours and private)`,
        );
      }
      try {
        const c = loadConfig(paths.configFile);
        add(
          'config',
          true,
          c.fileExists ? `${paths.configFile} is valid` : `${paths.configFile} does not exist (defaults apply)`,
        );
      } catch (err) {
        add('config', false, (err as Error).message, isCwmError(err) ? err.hint : null);
      }
      let client: CwmClient | null = null;
      try {
        client = await CwmClient.connect({ socket, connectTimeoutMs: 3000 });
        const s = await client.call('daemon.status');
        add('daemon', true, `running (pid ${s.pid}, version ${s.version})`);
        add('data dir', true, `${s.dataDir} (${s.counts.windows} windows, ${s.counts.sessions} sessions)`);
        // The file may be valid now and still not be what the daemon runs on: a rejected edit, or a restart pending.
        const cfg = await client.call('config.show');
        if (cfg.lastError) {
          add(
            'config (daemon)',
            false,
            `the daemon rejected the last edit of ${cfg.file} and keeps the previous config: ${cfg.lastError}`,
            'fix the named key; the daemon reloads the file when it is saved',
          );
        }
        if (cfg.pendingRestart.length > 0) {
          add(
            'config (daemon)',
            false,
            `changed in ${cfg.file} but only applied after a restart: ${cfg.pendingRestart.join(', ')}`,
            'restart the daemon: `cwm daemon stop` then `cwm daemon start`',
          );
        }
        const h = await client.call('health.check', {});
        for (const c of h.components) {
          if (c.name === 'registry') continue;
          const fix =
            c.status === 'down'
              ? c.name === 'engine'
                ? `start the engine, or point engine.url / CWM_ENGINE_URL at it (now ${s.engine.url})`
                : c.name === 'lmcache'
                  ? 'start the LMCache controller, or unset engine.lmcacheUrl'
                  : 'check gateway.listen (it must be a free loopback port)'
              : null;
          add(c.name, c.status === 'ok' || c.status === 'disabled', `${c.status}: ${c.message}`, fix);
        }
        if (o.registry) {
          const r = await client.call('registry.check', { repair: !!o.repair }, { timeoutMs: 600_000 });
          add(
            'registry',
            r.ok || r.repaired > 0,
            r.ok
              ? `all invariants hold (${r.checked.windows} windows, ${r.checked.chunks} chunks, ${r.checked.sessions} sessions)`
              : `${r.problems.length} problem(s)${r.repaired ? `, repaired ${r.repaired}` : ''}: ${r.problems
                  .slice(0, 5)
                  .map((p) => p.message)
                  .join('; ')}`,
            r.ok || r.repaired ? null : 'run `cwm doctor --registry --repair`',
          );
        }
      } catch (err) {
        add('daemon', false, (err as Error).message, isCwmError(err) ? err.hint : null);
        if (fs.existsSync(paths.dataDir)) add('data dir', true, `${paths.dataDir} exists`);
        else add('data dir', true, `${paths.dataDir} does not exist yet (created at first start)`);
      } finally {
        client?.close();
      }
      const failed = checks.filter((c) => !c.ok).length;
      if (g.json) printJson({ ok: failed === 0, checks });
      else {
        for (const c of checks) {
          out(`${c.ok ? 'ok  ' : 'FAIL'}  ${c.check}: ${c.detail}`);
          if (!c.ok && c.fix) out(`      fix: ${c.fix}`);
        }
        out(failed === 0 ? 'everything looks fine' : `${failed} problem(s) found`);
      }
      process.exitCode = failed === 0 ? 0 : 1;
    });
}
