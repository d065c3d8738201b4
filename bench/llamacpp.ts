/**
 * bench/llamacpp: thaw vs recompute on a real llama-server with the ~90M-parameter random-weight model, through the
 * real daemon (engine.kind llamacpp), at 1K and 4K tokens.
 *
 * - recompute: a cold prefill of the context plus the first token (`cache_prompt: false`, server `--cache-ram 0`,
 *   so no host prompt cache can serve a prefix).
 * - thaw: llama-server is restarted (KV gone from memory), then `window.thaw` (daemon: size + sha256 + token-list
 *   check, slot restore) plus the first token (the server evaluates only the last context token).
 * - freeze: `window.freeze` of a session whose slot already holds the context (one token re-evaluated, slot saved,
 *   file checksummed); state-file bytes per token.
 * Target: thaw at least 20x faster than recompute at 4K.
 * Run: npm run build && npx tsx bench/llamacpp.ts   (BENCH_REPS=N, default 5)
 */
import fs from 'node:fs';
import path from 'node:path';
import { FIRST_NORMAL_TOKEN, N_VOCAB, TOKEN_BOS } from '../scripts/llama/gen-gguf.js';
import { startDaemon } from '../test/helpers/daemon.js';
import { ensureModel, postJson, startLlamaServer } from '../test/llamacpp/harness.js';
import { median, printTable, writeResults } from './lib.js';

const MODEL = 'bench';
const SIZES = [1024, 4096];
const REPS = Number(process.env.BENCH_REPS ?? 5);
const THREADS = 2;
const SLOTS = 2;
const CTX = 16_384;

interface CompletionBody {
  tokens?: number[];
  timings: { cache_n: number; prompt_n: number; prompt_ms: number; predicted_ms: number };
}

/** Deterministic context of n token ids: BOS + normal tokens. */
function makeContext(n: number, seed: number): number[] {
  const ids = [TOKEN_BOS];
  let x = seed;
  while (ids.length < n) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    ids.push(FIRST_NORMAL_TOKEN + ((x >>> 8) % (N_VOCAB - FIRST_NORMAL_TOKEN)));
  }
  return ids;
}

async function main() {
  const t0 = Date.now();
  process.stdout.write('bench/llamacpp: preparing the ~90M model and llama-server\n');
  const model = await ensureModel({ size: 'bench', ctx: CTX });
  const server = await startLlamaServer({
    model,
    ctx: CTX,
    slots: SLOTS,
    threads: THREADS,
    extraArgs: ['--alias', MODEL],
  });
  const d = await startDaemon({
    engineUrl: server.url,
    env: { CWM_ENGINE: 'llamacpp', CWM_SLOT_DIR: server.slotDir, CWM_LOG_LEVEL: 'warn' },
    config: { autoFreeze: { enabled: false } },
  });
  const c = await d.client();
  const completion = async (body: Record<string, unknown>) => {
    const s = performance.now();
    const r = await postJson<CompletionBody>(`${server.url}/completion`, {
      n_predict: 1,
      temperature: 0,
      return_tokens: true,
      ...body,
    });
    if (r.status !== 200) throw new Error(`/completion ${r.status}: ${JSON.stringify(r.body)}`);
    return { ms: performance.now() - s, body: r.body };
  };
  /** After a fresh start the first request pays one-off setup: spend it on a throwaway slot, then wipe that. */
  const warmUp = async () => {
    await completion({ prompt: makeContext(32, 99), id_slot: SLOTS - 1, cache_prompt: false });
    await postJson(`${server.url}/slots/${SLOTS - 1}?action=erase`, {});
  };
  const rows: Record<string, unknown>[] = [];
  try {
    await warmUp();
    for (const n of SIZES) {
      const ids = makeContext(n, n);
      const session = `bench-${n}`;
      await c.call('session.record', { session, model: MODEL, prompt: ids });

      // The first freeze computes the context into a slot (the session never ran); the second is the steady
      // state: the slot holds the context, freeze re-evaluates one token, saves and checksums.
      const first = await c.call('window.freeze', { session, name: `${session}-first`, prefill: true });
      const freezes: { total: number; engine: number }[] = [];
      let stateBytes = 0;
      for (let rep = 0; rep < REPS; rep++) {
        const name = `${session}-w${rep}`;
        const f = await c.call('window.freeze', { session, name, prefill: true });
        if (f.warnings.length > 0) throw new Error(`freeze warned: ${f.warnings.join('; ')}`);
        freezes.push({ total: f.durationMs, engine: f.engineMs });
        const w = await c.call('window.get', { name });
        stateBytes = fs.statSync(path.join(server.slotDir, `${w.id}.bin`)).size;
      }

      const recompute: { ms: number; promptMs: number }[] = [];
      let coldTokens: number[] | undefined;
      for (let rep = 0; rep < REPS; rep++) {
        const r = await completion({ prompt: ids, id_slot: SLOTS - 1, cache_prompt: false });
        if (r.body.timings.prompt_n !== n) throw new Error(`recompute evaluated ${r.body.timings.prompt_n} of ${n}`);
        recompute.push({ ms: r.ms, promptMs: r.body.timings.prompt_ms });
        coldTokens = r.body.tokens;
      }

      const thaws: { ms: number; thawMs: number; engineMs: number; firstMs: number }[] = [];
      for (let rep = 0; rep < REPS; rep++) {
        await server.restart();
        await warmUp();
        const s = performance.now();
        const th = await c.call('window.thaw', { name: `${session}-w0`, newSession: `${session}-t${rep}`, warm: true });
        const slot = (await c.call('session.get', { session: `${session}-t${rep}` })).slot;
        const thawMs = performance.now() - s;
        if (th.warnings.length > 0 || th.cachedTokens !== n || slot === null) {
          throw new Error(`thaw did not restore: ${JSON.stringify(th)}`);
        }
        const r = await completion({ prompt: ids, id_slot: slot, cache_prompt: true });
        const ms = performance.now() - s;
        if (r.body.timings.prompt_n !== 1) throw new Error(`thawed slot evaluated ${r.body.timings.prompt_n} tokens`);
        if (JSON.stringify(r.body.tokens) !== JSON.stringify(coldTokens)) throw new Error('first token differs');
        thaws.push({ ms, thawMs, engineMs: th.engineMs, firstMs: r.ms });
      }

      const recomputeMs = median(recompute.map((r) => r.ms));
      const thawMs = median(thaws.map((t) => t.ms));
      rows.push({
        tokens: n,
        thawMs,
        recomputeMs,
        ratio: recomputeMs / thawMs,
        thaw: {
          daemonThawMs: median(thaws.map((t) => t.thawMs)),
          engineRestoreMs: median(thaws.map((t) => t.engineMs)),
          firstTokenMs: median(thaws.map((t) => t.firstMs)),
          samples: thaws,
        },
        recompute: { prefillMs: median(recompute.map((r) => r.promptMs)), samples: recompute },
        freezeMs: median(freezes.map((f) => f.total)),
        freezeEngineMs: median(freezes.map((f) => f.engine)),
        firstFreezeMs: first.durationMs,
        stateBytes,
        bytesPerToken: stateBytes / n,
      });
      process.stdout.write(`  ${n} tokens done\n`);
    }
  } finally {
    c.close();
    await d.stop();
    await server.dispose();
    if (process.env.CWM_KEEP_TMP !== '1') fs.rmSync(d.dir, { recursive: true, force: true });
  }

  printTable(
    `llama.cpp thaw vs recompute (~90M model, ${THREADS} threads, median of ${REPS}; thaw = after a llama-server restart)`,
    ['tokens', 'thaw ms', 'thaw rpc', '1st token', 'recompute ms', 'ratio', 'freeze ms', 'bytes/token'],
    rows.map((r) => {
      const t = r.thaw as { daemonThawMs: number; firstTokenMs: number };
      return [
        String(r.tokens),
        r.thawMs as number,
        t.daemonThawMs,
        t.firstTokenMs,
        r.recomputeMs as number,
        r.ratio as number,
        r.freezeMs as number,
        Math.round(r.bytesPerToken as number),
      ];
    }),
  );
  const at4k = rows.find((r) => r.tokens === 4096);
  const ratio4k = (at4k?.ratio as number | undefined) ?? 0;
  const ok = ratio4k >= 20;
  process.stdout.write(
    `\ntarget: thaw >= 20x faster than recompute at 4K: ${ratio4k.toFixed(1)}x ${ok ? 'OK' : 'MISSED'}\n`,
  );
  writeResults('llamacpp', {
    model: { size: 'bench', params: '~90M', file: path.basename(model), ctx: CTX, slots: SLOTS, threads: THREADS },
    reps: REPS,
    target: { ratioAt4k: 20, met: ok },
    wallSeconds: (Date.now() - t0) / 1000,
    results: rows,
  });
  if (!ok) process.exitCode = 1;
}

await main();
