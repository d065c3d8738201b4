import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { CwmError } from './protocol/index.js';

const HostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'expected host:port, e.g. 127.0.0.1:8765');

export const ConfigSchema = z
  .object({
    engine: z
      .object({
        kind: z.enum(['vllm', 'llamacpp']).default('vllm'),
        url: z.url().default('http://127.0.0.1:8000'),
        lmcacheUrl: z.url().nullable().default(null),
        lmcacheInstanceId: z.string().min(1).default('lmcache_default_instance'),
        slotDir: z.string().nullable().default(null),
        apiKey: z.string().nullable().default(null),
        timeoutMs: z.number().int().positive().default(120_000),
        retries: z.number().int().min(0).max(10).default(3),
      })
      .strict()
      .prefault({}),
    gateway: z
      .object({
        listen: HostPort.nullable().default('127.0.0.1:8765'),
        token: z.string().min(16, 'the gateway token must be at least 16 characters').nullable().default(null),
        clientSalt: z.enum(['replace', 'reject']).default('replace'),
      })
      .strict()
      .prefault({}),
    autoFreeze: z
      .object({
        enabled: z.boolean().default(true),
        threshold: z.number().gt(0).lte(1).default(0.8),
        maxTokens: z.number().int().positive().nullable().default(null),
        cooldownSeconds: z.number().int().min(0).default(60),
        intervalSeconds: z.number().positive().default(5),
      })
      .strict()
      .prefault({}),
    pressure: z
      .object({
        kvHigh: z.number().gt(0).lte(1).default(0.9),
        kvLow: z.number().gt(0).lte(1).default(0.75),
        hostAvailableMin: z.number().gte(0).lt(1).default(0.1),
        hostAvailableOk: z.number().gt(0).lte(1).default(0.2),
        idleSeconds: z.number().min(0).default(30),
        maxFreezesPerRun: z.number().int().min(1).default(8),
      })
      .strict()
      .prefault({})
      .refine((p) => p.kvLow < p.kvHigh, { message: 'pressure.kvLow must be below pressure.kvHigh', path: ['kvLow'] })
      .refine((p) => p.hostAvailableMin < p.hostAvailableOk, {
        message: 'pressure.hostAvailableMin must be below pressure.hostAvailableOk',
        path: ['hostAvailableMin'],
      }),
    daemon: z
      .object({
        maxLineBytes: z
          .number()
          .int()
          .min(1024)
          .max(1024 * 1024 * 1024)
          .default(16 * 1024 * 1024),
        shutdownGraceMs: z.number().int().min(0).default(10_000),
        logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info'),
        /** fsync every registry write: acknowledged operations then survive power loss too, at a cost per write. */
        syncWrites: z.boolean().default(false),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type Config = z.output<typeof ConfigSchema>;
export type ConfigSource = 'default' | 'file' | 'env' | 'flag';

/** Keys whose change only takes effect after a restart (they shape sockets and connections made at start). */
export const RESTART_KEYS = ['engine', 'gateway.listen', 'daemon.maxLineBytes'] as const;

/** CWM_* environment variables → config paths. */
export const ENV_MAP: Record<string, { key: string; parse: (v: string) => unknown }> = {
  CWM_ENGINE: { key: 'engine.kind', parse: (v) => v },
  CWM_ENGINE_URL: { key: 'engine.url', parse: (v) => v },
  CWM_LMCACHE_URL: { key: 'engine.lmcacheUrl', parse: nullable },
  CWM_SLOT_DIR: { key: 'engine.slotDir', parse: nullable },
  CWM_ENGINE_API_KEY: { key: 'engine.apiKey', parse: nullable },
  CWM_GATEWAY: { key: 'gateway.listen', parse: (v) => (v === 'off' || v === '' ? null : v) },
  CWM_GATEWAY_TOKEN: { key: 'gateway.token', parse: nullable },
  CWM_AUTOFREEZE: { key: 'autoFreeze.enabled', parse: bool },
  CWM_AUTOFREEZE_THRESHOLD: { key: 'autoFreeze.threshold', parse: Number },
  CWM_MAX_LINE_BYTES: { key: 'daemon.maxLineBytes', parse: Number },
  CWM_LOG_LEVEL: { key: 'daemon.logLevel', parse: (v) => v },
  CWM_SYNC_WRITES: { key: 'daemon.syncWrites', parse: bool },
};

function nullable(v: string): string | null {
  return v === '' || v === 'null' ? null : v;
}

function bool(v: string): boolean | string {
  if (/^(1|true|yes|on)$/i.test(v)) return true;
  if (/^(0|false|no|off)$/i.test(v)) return false;
  return v;
}

export interface LoadedConfig {
  config: Config;
  sources: Record<string, ConfigSource>;
  file: string;
  fileExists: boolean;
  /** Raw file content as parsed JSON (for writing back policy changes without baking in defaults). */
  fileJson: Record<string, unknown>;
}

type Json = Record<string, unknown>;

function setPath(obj: Json, key: string, value: unknown): void {
  const parts = key.split('.');
  let cur = obj;
  for (const p of parts.slice(0, -1)) {
    if (typeof cur[p] !== 'object' || cur[p] === null) cur[p] = {};
    cur = cur[p] as Json;
  }
  cur[parts[parts.length - 1] as string] = value;
}

function leafPaths(obj: unknown, prefix = ''): string[] {
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) return prefix ? [prefix] : [];
  return Object.entries(obj).flatMap(([k, v]) => leafPaths(v, prefix ? `${prefix}.${k}` : k));
}

function deepMerge(a: Json, b: Json): Json {
  const out: Json = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const prev = out[k];
    out[k] =
      typeof v === 'object' && v !== null && !Array.isArray(v) && typeof prev === 'object' && prev !== null
        ? deepMerge(prev as Json, v as Json)
        : v;
  }
  return out;
}

export function formatZodIssues(err: z.ZodError): string {
  return err.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
}

/** Read and parse the config file; missing is fine (defaults), unreadable or invalid JSON is an error. */
export function readConfigFile(file: string): { json: Json; exists: boolean } {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { json: {}, exists: false };
    throw new CwmError('CONFIG_INVALID', `cannot read config file ${file}: ${(err as Error).message}`, {
      hint: 'check the file permissions',
    });
  }
  if (text.trim() === '') return { json: {}, exists: true };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new CwmError('CONFIG_INVALID', `config file ${file} is not valid JSON: ${(err as Error).message}`, {
      hint: 'fix the JSON syntax; `cwm config show` prints the effective config',
    });
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new CwmError('CONFIG_INVALID', `config file ${file} must hold a JSON object`, {
      hint: 'see docs/OPERATIONS.md for the config shape',
    });
  }
  return { json: json as Json, exists: true };
}

/** defaults < file < CWM_* env < flags, validated once; errors name the key. */
export function loadConfig(
  file: string,
  env: Readonly<Record<string, string | undefined>> = process.env,
  flags: Record<string, unknown> = {},
): LoadedConfig {
  const { json: fileJson, exists } = readConfigFile(file);
  const envJson: Json = {};
  for (const [name, { key, parse }] of Object.entries(ENV_MAP)) {
    const v = env[name];
    if (v !== undefined) setPath(envJson, key, parse(v));
  }
  const flagJson: Json = {};
  for (const [key, v] of Object.entries(flags)) if (v !== undefined) setPath(flagJson, key, v);

  const merged = deepMerge(deepMerge(fileJson, envJson), flagJson);
  const parsed = ConfigSchema.safeParse(merged);
  if (!parsed.success) {
    const origin = (p: string) =>
      leafPaths(flagJson).includes(p) ? 'flag' : leafPaths(envJson).includes(p) ? 'environment' : `file ${file}`;
    const issues = parsed.error.issues
      .map((i) => {
        const p = i.path.join('.');
        return `${p || '(root)'} (from ${origin(p)}): ${i.message}`;
      })
      .join('; ');
    throw new CwmError('CONFIG_INVALID', `invalid config: ${issues}`, {
      hint: 'fix the named key; `cwm config show` prints the effective config and where each value came from',
    });
  }
  const sources: Record<string, ConfigSource> = {};
  for (const p of leafPaths(parsed.data)) sources[p] = 'default';
  for (const p of leafPaths(fileJson)) if (p in sources) sources[p] = 'file';
  for (const p of leafPaths(envJson)) if (p in sources) sources[p] = 'env';
  for (const p of leafPaths(flagJson)) if (p in sources) sources[p] = 'flag';
  return { config: parsed.data, sources, file, fileExists: exists, fileJson };
}

/** Keys (dotted) whose values differ between two configs and need a restart to apply. */
export function restartNeeded(a: Config, b: Config): string[] {
  const out: string[] = [];
  const flat = (c: Config) => Object.fromEntries(leafPaths(c).map((p) => [p, JSON.stringify(getPath(c, p))]));
  const fa = flat(a);
  const fb = flat(b);
  for (const p of Object.keys(fb)) {
    if (fa[p] === fb[p]) continue;
    if (RESTART_KEYS.some((k) => p === k || p.startsWith(`${k}.`))) out.push(p);
  }
  return out;
}

export function getPath(obj: unknown, key: string): unknown {
  let cur: unknown = obj;
  for (const p of key.split('.')) {
    if (typeof cur !== 'object' || cur === null) return undefined;
    cur = (cur as Json)[p];
  }
  return cur;
}

/** Write a change into the config file atomically (temp + rename), keeping the user's other keys as they were. */
export function writeConfigPatch(file: string, patch: Json): void {
  const { json } = readConfigFile(file);
  const next = deepMerge(json, patch);
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(next, null, 2)}\n`, { mode: 0o600 });
  fs.renameSync(tmp, file);
}
