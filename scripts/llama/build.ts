/**
 * Builds `llama-server` from the llama.cpp source bundled in the npm package node-llama-cpp (pinned),
 * offline, into the gitignored `.cache/llama-server/`. Skipped when the binary is already built with the
 * same recorded version and cmake flags. CLI: `npm run llama:build` (progress on stderr, binary path as the
 * last stdout line).
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const NODE_LLAMA_CPP_VERSION = '3.21.1';

/** cmake configure flags. Everything that would download (web UI, curl/openssl) is off. */
export const CMAKE_FLAGS: readonly string[] = [
  '-DCMAKE_BUILD_TYPE=Release',
  '-DLLAMA_BUILD_TESTS=OFF',
  '-DLLAMA_BUILD_EXAMPLES=OFF',
  '-DLLAMA_USE_PREBUILT_UI=OFF',
  '-DLLAMA_BUILD_UI=OFF',
  '-DLLAMA_OPENSSL=OFF',
  '-DLLAMA_BUILD_APP=OFF',
];

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface LlamaBuildPaths {
  /** private npm prefix holding node-llama-cpp */
  prefix: string;
  /** the git clone of the bundled llama.cpp source */
  src: string;
  /** cmake build dir */
  build: string;
  /** the built binary */
  binary: string;
  /** JSON stamp recording what the binary was built from */
  stamp: string;
}

export function llamaBuildPaths(root: string = REPO_ROOT): LlamaBuildPaths {
  const cache = path.join(root, '.cache');
  const dir = path.join(cache, 'llama-server');
  return {
    prefix: path.join(cache, 'node-llama-cpp'),
    src: path.join(dir, 'llama.cpp'),
    build: path.join(dir, 'build'),
    binary: path.join(dir, 'build', 'bin', 'llama-server'),
    stamp: path.join(dir, 'build-stamp.json'),
  };
}

interface BuildStamp {
  nodeLlamaCpp: string;
  llamaCppTag: string;
  llamaCppCommit: string;
  cmakeFlags: string[];
  builtAt: string;
  buildSeconds: number;
}

export interface EnsureOptions {
  /** repository root; default: the one holding this script */
  root?: string;
  /** progress sink; default: stderr */
  log?: (line: string) => void;
  /** parallel jobs for cmake --build; default 2 */
  jobs?: number;
}

const defaultLog = (line: string): void => {
  process.stderr.write(`[llama:build] ${line}\n`);
};

function run(cmd: string, args: readonly string[], cwd: string, log: (line: string) => void): Promise<void> {
  log(`$ ${cmd} ${args.join(' ')}`);
  return new Promise((resolve, reject) => {
    // Child output goes to our stderr so stdout stays reserved for the binary path.
    const child = spawn(cmd, args, { cwd, stdio: ['ignore', process.stderr, process.stderr] });
    child.on('error', (err) => reject(new Error(`cannot run ${cmd} (is it installed and on PATH?): ${err.message}`)));
    child.on('exit', (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`${cmd} ${args.slice(0, 3).join(' ')}… failed (${signal ?? `exit code ${code}`})`));
    });
  });
}

function git(args: readonly string[], cwd: string): string {
  return execFileSync('git', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

function tryGit(args: readonly string[], cwd: string): string | undefined {
  try {
    return git(args, cwd);
  } catch {
    return undefined;
  }
}

async function readJson(file: string): Promise<unknown> {
  return JSON.parse(await readFile(file, 'utf8')) as unknown;
}

function str(obj: unknown, key: string): string | undefined {
  if (typeof obj !== 'object' || obj === null) return undefined;
  const v = (obj as Record<string, unknown>)[key];
  return typeof v === 'string' ? v : undefined;
}

/** The stamp the current build must match, or undefined when node-llama-cpp is not installed yet. */
async function wantedStamp(p: LlamaBuildPaths): Promise<Omit<BuildStamp, 'builtAt' | 'buildSeconds'> | undefined> {
  const pkgDir = path.join(p.prefix, 'node_modules', 'node-llama-cpp');
  if (!existsSync(path.join(pkgDir, 'package.json'))) return undefined;
  const version = str(await readJson(path.join(pkgDir, 'package.json')), 'version');
  if (version !== NODE_LLAMA_CPP_VERSION) return undefined;
  const info = await readJson(path.join(pkgDir, 'llama', 'llama.cpp.info.json'));
  return {
    nodeLlamaCpp: version,
    llamaCppTag: str(info, 'tag') ?? 'unknown',
    llamaCppCommit: 'unknown', // filled in from the clone
    cmakeFlags: [...CMAKE_FLAGS],
  };
}

function stampMatches(have: unknown, want: { nodeLlamaCpp: string; cmakeFlags: string[] }): boolean {
  if (str(have, 'nodeLlamaCpp') !== want.nodeLlamaCpp) return false;
  const flags = (have as { cmakeFlags?: unknown }).cmakeFlags;
  return Array.isArray(flags) && flags.join('\n') === want.cmakeFlags.join('\n');
}

/**
 * Returns the path of an already built binary whose stamp matches the pinned version and flags, without
 * building or touching the network; undefined if there is none.
 */
export async function findLlamaServer(root: string = REPO_ROOT): Promise<string | undefined> {
  const p = llamaBuildPaths(root);
  if (!existsSync(p.binary) || !existsSync(p.stamp)) return undefined;
  try {
    const have = await readJson(p.stamp);
    return stampMatches(have, { nodeLlamaCpp: NODE_LLAMA_CPP_VERSION, cmakeFlags: [...CMAKE_FLAGS] })
      ? p.binary
      : undefined;
  } catch {
    return undefined;
  }
}

/** Ensures the binary exists (building it if needed, ~6 min on 2 cores) and returns its absolute path. */
export async function ensureLlamaServer(opts: EnsureOptions = {}): Promise<string> {
  const root = opts.root ?? REPO_ROOT;
  const log = opts.log ?? defaultLog;
  const jobs = opts.jobs ?? 2;
  const p = llamaBuildPaths(root);

  const ready = await findLlamaServer(root);
  if (ready !== undefined) {
    log(`up to date: ${ready}`);
    return ready;
  }
  await mkdir(path.dirname(p.build), { recursive: true });
  return withBuildLock(path.join(path.dirname(p.build), '.build.lock'), log, async () => {
    const builtMeanwhile = await findLlamaServer(root);
    if (builtMeanwhile !== undefined) return builtMeanwhile;
    return build(p, jobs, log);
  });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** mkdir-based lock so concurrent callers (parallel test files) do not build over each other. */
async function withBuildLock<T>(lock: string, log: (line: string) => void, fn: () => Promise<T>): Promise<T> {
  for (let waited = 0; ; waited++) {
    try {
      await mkdir(lock);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const owner = Number((await readFile(path.join(lock, 'pid'), 'utf8').catch(() => '')).trim());
      if (Number.isInteger(owner) && owner > 0 && isAlive(owner)) {
        if (waited % 30 === 0) log(`waiting for the build running in pid ${owner}`);
        await new Promise((r) => setTimeout(r, 2000));
      } else if (waited > 2) {
        log(`removing stale lock ${lock}`);
        await rm(lock, { recursive: true, force: true });
      } else {
        await new Promise((r) => setTimeout(r, 500)); // owner may not have written its pid yet
      }
    }
  }
  await writeFile(path.join(lock, 'pid'), String(process.pid));
  try {
    return await fn();
  } finally {
    await rm(lock, { recursive: true, force: true });
  }
}

async function build(p: LlamaBuildPaths, jobs: number, log: (line: string) => void): Promise<string> {
  const started = Date.now();

  let want = await wantedStamp(p);
  if (want === undefined) {
    log(`installing node-llama-cpp@${NODE_LLAMA_CPP_VERSION} (no optional deps, no scripts) into ${p.prefix}`);
    await mkdir(p.prefix, { recursive: true });
    await run(
      'npm',
      [
        'install',
        '--prefix',
        p.prefix,
        '--no-save',
        '--no-package-lock',
        '--omit=optional',
        '--ignore-scripts',
        '--no-audit',
        '--no-fund',
        `node-llama-cpp@${NODE_LLAMA_CPP_VERSION}`,
      ],
      p.prefix,
      log,
    );
    want = await wantedStamp(p);
    if (want === undefined)
      throw new Error(`node-llama-cpp@${NODE_LLAMA_CPP_VERSION} did not install into ${p.prefix}`);
  }
  log(`llama.cpp ${want.llamaCppTag} from node-llama-cpp@${want.nodeLlamaCpp}`);

  // Reuse an existing clone only if it is clean and at the bundle's commit (keeps cmake incremental);
  // otherwise clone afresh so the source is exactly the bundled one.
  const bundle = path.join(p.prefix, 'node_modules', 'node-llama-cpp', 'llama', 'gitRelease.bundle');
  if (!existsSync(bundle)) throw new Error(`source bundle missing: ${bundle}`);
  await rm(p.stamp, { force: true });
  const bundleHead = git(['bundle', 'list-heads', bundle], path.dirname(p.src))
    .split('\n')
    .find((l) => l.endsWith(' HEAD'))
    ?.split(' ')[0];
  const cloneHead = existsSync(path.join(p.src, '.git')) ? tryGit(['rev-parse', 'HEAD'], p.src) : undefined;
  const clean = cloneHead !== undefined && tryGit(['status', '--porcelain'], p.src) === '';
  if (bundleHead === undefined || cloneHead !== bundleHead || !clean) {
    await rm(p.src, { recursive: true, force: true });
    await run('git', ['-c', 'advice.detachedHead=false', 'clone', '--quiet', bundle, p.src], path.dirname(p.src), log);
  } else {
    log(`reusing clean clone at ${cloneHead}`);
  }
  want.llamaCppCommit = git(['rev-parse', 'HEAD'], p.src);
  log(`llama.cpp commit ${want.llamaCppCommit}`);

  await run('cmake', ['-S', p.src, '-B', p.build, ...CMAKE_FLAGS], p.src, log);
  await run('cmake', ['--build', p.build, `-j${jobs}`, '--target', 'llama-server'], p.src, log);
  if (!existsSync(p.binary)) throw new Error(`build finished but ${p.binary} is missing`);
  await run(p.binary, ['--version'], p.src, log);

  const buildSeconds = Math.round((Date.now() - started) / 100) / 10;
  const stamp: BuildStamp = { ...want, builtAt: new Date().toISOString(), buildSeconds };
  await writeFile(p.stamp, `${JSON.stringify(stamp, null, 2)}\n`);
  log(`built in ${buildSeconds} s`);
  return p.binary;
}

async function main(): Promise<void> {
  const jobsArg = process.argv.indexOf('--jobs');
  const jobs = jobsArg > 0 ? Number(process.argv[jobsArg + 1]) : 2;
  if (!Number.isInteger(jobs) || jobs < 1) throw new Error('--jobs must be a positive integer');
  const bin = await ensureLlamaServer({ jobs });
  process.stdout.write(`${bin}\n`);
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    process.stderr.write(`[llama:build] FAILED: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
}
