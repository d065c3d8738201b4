import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Level } from 'level';
import type { Logger } from 'pino';
import { CwmError } from '../protocol/index.js';
import { packTokensBase64, unpackTokensBase64 } from './codec.js';
import { Mutex } from './mutex.js';
import type { SessionData, SessionRecord, WindowData, WindowRecord } from './records.js';

export const SCHEMA_VERSION = 1;

export interface BatchOp {
  type: 'put' | 'del';
  sublevel: Sublevel;
  key: string;
  value?: unknown;
}

/** A typed sublevel handle. The level typings for cross-sublevel batches are awkward, so it is narrowed here once. */
export interface Sublevel {
  get(key: string): Promise<unknown>;
  getMany(keys: string[]): Promise<unknown[]>;
  iterator(opts?: IterOpts): AsyncIterableIterator<[string, unknown]>;
  keys(opts?: IterOpts): AsyncIterableIterator<string>;
  values(opts?: IterOpts): AsyncIterableIterator<unknown>;
  put(key: string, value: unknown): Promise<void>;
}

export interface IterOpts {
  gt?: string;
  gte?: string;
  lt?: string;
  lte?: string;
  reverse?: boolean;
  limit?: number;
}

/** Migrations run in order at open, inside the singleton daemon, before anything else touches the registry. */
type Migration = (reg: Registry, log: Logger) => Promise<void>;
const MIGRATIONS: Record<number, Migration> = {};

export class Registry {
  readonly mutex = new Mutex();
  readonly sessions: Sublevel;
  readonly sessionData: Sublevel;
  readonly windows: Sublevel;
  readonly windowData: Sublevel;
  readonly chunks: Sublevel;
  readonly refs: Sublevel;
  readonly idx: Sublevel;
  readonly counts: Sublevel;
  readonly audit: Sublevel;
  readonly meta: Sublevel;
  private readonly countCache = new Map<string, number>();

  private constructor(
    readonly db: Level<string, unknown>,
    readonly location: string,
  ) {
    const json = (name: string) => db.sublevel(name, { valueEncoding: 'json' }) as unknown as Sublevel;
    this.sessions = json('sessions');
    this.sessionData = json('sessiondata');
    this.windows = json('windows');
    this.windowData = json('windowdata');
    this.chunks = db.sublevel('chunks', { valueEncoding: 'buffer' }) as unknown as Sublevel;
    this.refs = json('refs');
    this.idx = db.sublevel('idx', { valueEncoding: 'utf8' }) as unknown as Sublevel;
    this.counts = json('counts');
    this.audit = json('audit');
    this.meta = json('meta');
  }

  /** Open once per process (a failed second open would drop LevelDB's cross-process lock: see npm-deps.md). */
  static async open(location: string, log: Logger): Promise<Registry> {
    fs.mkdirSync(location, { recursive: true, mode: 0o700 });
    const db = new Level<string, unknown>(location, { valueEncoding: 'json' });
    try {
      await db.open();
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      if (cause?.code === 'LEVEL_LOCKED') {
        throw new CwmError('STORAGE_ERROR', `the registry at ${location} is locked by another process`, {
          hint: 'another cwmd is using this data dir; stop it or choose another --data-dir',
          cause: err,
        });
      }
      throw new CwmError('STORAGE_ERROR', `cannot open the registry at ${location}: ${cause?.message ?? String(err)}`, {
        hint: 'check the data dir permissions and free space; `cwm doctor` explains more',
        cause: err,
      });
    }
    const reg = new Registry(db, location);
    await reg.migrate(log);
    return reg;
  }

  private async migrate(log: Logger): Promise<void> {
    const current = (await this.meta.get('schemaVersion')) as number | undefined;
    if (current === undefined) {
      await this.meta.put('schemaVersion', SCHEMA_VERSION);
      return;
    }
    if (current > SCHEMA_VERSION) {
      throw new CwmError(
        'REGISTRY_CORRUPT',
        `the registry has schema ${current}, newer than this cwmd (${SCHEMA_VERSION})`,
        {
          hint: 'upgrade cwm, or point --data-dir at another directory',
        },
      );
    }
    for (let v = current + 1; v <= SCHEMA_VERSION; v++) {
      const m = MIGRATIONS[v];
      if (m) await m(this, log);
      await this.meta.put('schemaVersion', v);
      log.info({ from: v - 1, to: v }, 'registry migrated');
    }
  }

  async close(): Promise<void> {
    await this.db.close();
  }

  async batch(ops: BatchOp[]): Promise<void> {
    if (ops.length === 0) return;
    // biome-ignore lint/suspicious/noExplicitAny: level's batch generics cannot express mixed-encoding sublevels
    await this.db.batch(ops as any, {});
  }

  /** Counter read through an in-memory cache; the daemon is the only writer, under the mutex. */
  async count(key: string): Promise<number> {
    const cached = this.countCache.get(key);
    if (cached !== undefined) return cached;
    const v = ((await this.counts.get(key)) as number | undefined) ?? 0;
    this.countCache.set(key, v);
    return v;
  }

  /** Queue counter deltas into a batch; call commitCounts after the batch is written. */
  async countOps(deltas: Map<string, number>, ops: BatchOp[]): Promise<Map<string, number>> {
    const next = new Map<string, number>();
    for (const [key, d] of deltas) {
      if (d === 0) continue;
      const v = (await this.count(key)) + d;
      next.set(key, v);
      if (v === 0) ops.push({ type: 'del', sublevel: this.counts, key });
      else ops.push({ type: 'put', sublevel: this.counts, key, value: v });
    }
    return next;
  }

  commitCounts(next: Map<string, number>): void {
    for (const [k, v] of next) this.countCache.set(k, v);
  }

  invalidateCounts(): void {
    this.countCache.clear();
  }

  async getSession(id: string): Promise<SessionRecord | undefined> {
    return (await this.sessions.get(id)) as SessionRecord | undefined;
  }

  async getSessionData(id: string): Promise<SessionData | undefined> {
    const raw = (await this.sessionData.get(id)) as (Omit<SessionData, 'tokenIds'> & { tokens?: string }) | undefined;
    if (!raw) return undefined;
    const { tokens, ...rest } = raw;
    return tokens === undefined ? rest : { ...rest, tokenIds: unpackTokensBase64(tokens) };
  }

  /** A put of session data in its storage form (see SessionData). */
  sessionDataOp(id: string, data: SessionData): BatchOp {
    const { tokenIds, ...rest } = data;
    const value = tokenIds === undefined ? rest : { ...rest, tokens: packTokensBase64(tokenIds) };
    return { type: 'put', sublevel: this.sessionData, key: id, value };
  }

  async getWindow(name: string): Promise<WindowRecord | undefined> {
    return (await this.windows.get(name)) as WindowRecord | undefined;
  }

  async getWindowData(name: string): Promise<WindowData | undefined> {
    return (await this.windowData.get(name)) as WindowData | undefined;
  }

  /** Bytes on disk under the registry directory (LevelDB files). */
  sizeOnDisk(): number {
    let total = 0;
    try {
      for (const f of fs.readdirSync(this.location)) {
        try {
          total += fs.statSync(path.join(this.location, f)).size;
        } catch {
          // a compaction may remove a file between readdir and stat
        }
      }
    } catch {
      return 0;
    }
    return total;
  }
}

/**
 * The daemon secret that salts are derived from. A 0600 file in the data dir, created on first start.
 * It never leaves the daemon.
 */
export function loadOrCreateSecret(dataDir: string): Buffer {
  const file = path.join(dataDir, 'secret');
  try {
    const buf = fs.readFileSync(file);
    if (buf.length >= 32) return buf;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const secret = randomBytes(32);
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, secret, { mode: 0o600 });
  fs.renameSync(tmp, file);
  return secret;
}
