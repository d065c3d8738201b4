/**
 * Helpers for tests and benchmarks against a real llama-server (built by `npm run llama:build`) serving a
 * random-weight GGUF (scripts/llama/gen-gguf.ts).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, writeSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureLlamaServer, findLlamaServer, REPO_ROOT } from '../../scripts/llama/build.js';
import { type ModelSize, type ModelSpec, writeModel } from '../../scripts/llama/gen-gguf.js';

const GEN_SOURCE = fileURLToPath(new URL('../../scripts/llama/gen-gguf.ts', import.meta.url));

/**
 * The llama-server binary. `CWM_LLAMA_SERVER` overrides the path; `CWM_LLAMA_BUILD=1` builds it when missing
 * (~6 min); otherwise a missing build is an error telling to run `npm run llama:build`.
 */
export async function llamaServerBinary(): Promise<string> {
  const override = process.env.CWM_LLAMA_SERVER;
  if (override !== undefined && override !== '') {
    if (!existsSync(override)) throw new Error(`CWM_LLAMA_SERVER=${override} does not exist`);
    return override;
  }
  const found = await findLlamaServer();
  if (found !== undefined) return found;
  if (process.env.CWM_LLAMA_BUILD === '1') return ensureLlamaServer();
  throw new Error(
    'llama-server is not built: run `npm run llama:build` first (~6 min on 2 cores), ' +
      'or set CWM_LLAMA_BUILD=1 to build on demand, or CWM_LLAMA_SERVER=/path/to/llama-server',
  );
}

export interface ModelOptions {
  size?: ModelSize;
  seed?: number;
  ctx?: number;
  spec?: Partial<ModelSpec>;
}

/**
 * Path of a generated model, cached under `.cache/models/` by its arguments and the generator's source hash
 * (so a changed generator never serves a stale file).
 */
export async function ensureModel(opts: ModelOptions = {}): Promise<string> {
  const size = opts.size ?? 'tiny';
  const key = createHash('sha256')
    .update(readFileSync(GEN_SOURCE))
    .update(JSON.stringify({ size, seed: opts.seed, ctx: opts.ctx, spec: opts.spec }))
    .digest('hex')
    .slice(0, 16);
  const out = path.join(REPO_ROOT, '.cache', 'models', `${size}-${key}.gguf`);
  if (existsSync(out)) return out;
  const wo: Parameters<typeof writeModel>[0] = { out, size };
  if (opts.seed !== undefined) wo.seed = opts.seed;
  if (opts.ctx !== undefined) wo.ctx = opts.ctx;
  if (opts.spec !== undefined) wo.spec = opts.spec;
  await writeModel(wo);
  return out;
}

/** A port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => (port > 0 ? resolve(port) : reject(new Error('no port'))));
    });
  });
}

export interface LlamaServerOptions {
  /** GGUF path; default: the cached tiny model */
  model?: string;
  /** -c (total context, split across slots); default 4096 */
  ctx?: number;
  /** -np; default 1 */
  slots?: number;
  /** -t; default 2 */
  threads?: number;
  /** --slot-save-path; default: a fresh temp dir */
  slotDir?: string;
  /** appended to the command line */
  extraArgs?: readonly string[];
  /** /health wait; default 60 s */
  startTimeoutMs?: number;
}

export interface StopOptions {
  /** default SIGTERM (then SIGKILL after 5 s); SIGKILL simulates a crash */
  signal?: NodeJS.Signals;
}

export interface LlamaServer {
  /** http://127.0.0.1:PORT (stable across restart()) */
  readonly url: string;
  readonly port: number;
  readonly slotDir: string;
  readonly model: string;
  /** pid of the current process (changes on restart) */
  readonly pid: number;
  /** the server's stdout+stderr, appended across restarts */
  readonly logFile: string;
  /** temp dir holding the log (and the slot dir unless one was given) */
  readonly workDir: string;
  readonly args: readonly string[];
  stop(opts?: StopOptions): Promise<void>;
  /** stop, then start again with the same arguments and port; waits for /health */
  restart(opts?: StopOptions): Promise<void>;
  /** stop and delete the temp dir (log and default slot dir); set CWM_KEEP_TMP=1 to keep it */
  dispose(): Promise<void>;
}

const live = new Set<ChildProcess>();
let exitHooked = false;
function hookExit(): void {
  if (exitHooked) return;
  exitHooked = true;
  const killAll = (): void => {
    for (const c of live) c.kill('SIGKILL');
  };
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      killAll();
      process.kill(process.pid, sig);
    });
  }
}

function tail(file: string, lines = 30): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

async function waitHealthy(url: string, child: ChildProcess, logFile: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(
        `llama-server exited (${child.exitCode ?? child.signalCode}) during start; log:\n${tail(logFile)}`,
      );
    }
    try {
      const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`llama-server not healthy after ${timeoutMs} ms; log:\n${tail(logFile)}`);
}

/** Starts llama-server on 127.0.0.1 with a free port and waits for /health 200. Killed when this process exits. */
export async function startLlamaServer(opts: LlamaServerOptions = {}): Promise<LlamaServer> {
  const bin = await llamaServerBinary();
  const model = opts.model ?? (await ensureModel());
  const work = await mkdtemp(path.join(os.tmpdir(), 'cwm-llama-'));
  const slotDir = opts.slotDir ?? path.join(work, 'slots');
  await mkdir(slotDir, { recursive: true }); // llama-server refuses a missing --slot-save-path
  const logFile = path.join(work, 'server.log');
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const args = [
    '-m',
    model,
    '--host',
    '127.0.0.1',
    '--port',
    String(port),
    '-c',
    String(opts.ctx ?? 4096),
    '-np',
    String(opts.slots ?? 1),
    '-t',
    String(opts.threads ?? 2),
    '--slot-save-path',
    slotDir,
    '--metrics',
    '--cache-ram',
    '0',
    ...(opts.extraArgs ?? []),
  ];
  const timeoutMs = opts.startTimeoutMs ?? 60_000;
  hookExit();

  let child: ChildProcess | undefined;
  const launch = async (): Promise<void> => {
    const fd = openSync(logFile, 'a');
    writeSync(fd, `\n=== ${new Date().toISOString()} ${bin} ${args.join(' ')}\n`);
    const c = spawn(bin, args, { stdio: ['ignore', fd, fd] });
    closeSync(fd);
    live.add(c);
    c.on('exit', () => live.delete(c));
    child = c;
    await waitHealthy(url, c, logFile, timeoutMs);
  };
  const stop = async (so: StopOptions = {}): Promise<void> => {
    const c = child;
    if (c === undefined || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    c.kill(so.signal ?? 'SIGTERM');
    const timer = setTimeout(() => c.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };

  try {
    await launch();
  } catch (err) {
    await stop({ signal: 'SIGKILL' });
    throw err;
  }
  return {
    url,
    port,
    slotDir,
    model,
    logFile,
    workDir: work,
    args,
    get pid(): number {
      return child?.pid ?? -1;
    },
    stop,
    async restart(so: StopOptions = {}): Promise<void> {
      await stop(so);
      await launch();
    },
    async dispose(): Promise<void> {
      await stop();
      if (process.env.CWM_KEEP_TMP !== '1') await rm(work, { recursive: true, force: true });
    },
  };
}

export interface HttpResult<T = unknown> {
  status: number;
  body: T;
}

/** POST JSON and parse the answer (any status). */
export async function postJson<T = unknown>(url: string, body: unknown): Promise<HttpResult<T>> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // keep text
  }
  return { status: res.status, body: parsed as T };
}

export async function getJson<T = unknown>(url: string): Promise<HttpResult<T>> {
  const res = await fetch(url);
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // keep text
  }
  return { status: res.status, body: parsed as T };
}

/** Parses Prometheus text from /metrics into name → value (unlabelled series only). */
export async function metrics(url: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line.trim() === '') continue;
    const [name, value] = line.trim().split(/\s+/);
    if (name !== undefined && value !== undefined) out.set(name, Number(value));
  }
  return out;
}

/** Reads the server log (for assertion messages). */
export function serverLog(server: LlamaServer): Promise<string> {
  return readFile(server.logFile, 'utf8');
}
