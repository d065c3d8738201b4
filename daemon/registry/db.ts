import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Level } from 'level';
import type { Logger } from 'pino';
import { CwmError } from '../protocol/index.js';
import { WindowSummary } from '../services/window-summary.js';
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

/** Free space cwmd keeps on the registry's volume: writes that would eat into it are refused with DISK_FULL. */
export const DISK_RESERVE_BYTES = 8 * 1024 * 1024;
/** A statfs answer is reused for this long, and only while the volume had this much more than the reserve free. */
const FREE_SPACE_TTL_MS = 1000;
const FREE_SPACE_MARGIN_BYTES = 256 * 1024 * 1024;

function isIoError(err: unknown): boolean {
  const e = err as { code?: string; message?: string; cause?: { code?: string } };
  return (
    e?.code === 'LEVEL_IO_ERROR' ||
    e?.code === 'ENOSPC' ||
    e?.cause?.code === 'LEVEL_IO_ERROR' ||
    /IO error|No space left on device/i.test(e?.message ?? '')
  );
}

/** A LevelDB write error as a CwmError: DISK_FULL (retryable) for ENOSPC, STORAGE_ERROR otherwise. */
export function storageError(err: unknown, location: string): CwmError {
  if (err instanceof CwmError) return err;
  const message = (err as Error)?.message ?? String(err);
  if (/No space left on device|ENOSPC/i.test(message)) {
    return new CwmError('DISK_FULL', `the disk holding the registry is full (${location}): nothing was changed`, {
      hint: 'free space on that volume, then retry; `cwm doctor --registry` checks the registry',
      retryable: true,
      cause: err,
    });
  }
  return new CwmError('STORAGE_ERROR', `the registry at ${location} could not be written: ${message}`, {
    hint: 'check the data dir volume (space, permissions, health); `cwm doctor --registry` checks the registry',
    cause: err,
  });
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
  /** Engine state (LMCache pins, state files) still to be released: see WindowService's release journal. */
  readonly releases: Sublevel;
  /** What window.list filters in memory; kept in step with the windows sublevel by batch() (see there). */
  readonly windowSummary: WindowSummary;
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
    this.releases = json('releases');
    this.windowSummary = new WindowSummary(this.windows);
    this.all = [
      this.sessions,
      this.sessionData,
      this.windows,
      this.windowData,
      this.chunks,
      this.refs,
      this.idx,
      this.counts,
      this.audit,
      this.meta,
      this.releases,
    ] as unknown as { open(): Promise<void> }[];
  }

  private readonly all: { open(): Promise<void> }[];

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
    // Migrations may rewrite windows by any means; the summary is built lazily after this, but make sure of it.
    reg.windowSummary.invalidate();
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
    this.windowSummary.invalidate();
    await this.db.close();
  }

  /**
   * The one write path of the registry: services, bundle import, repair (check.ts) and the audit log all write
   * through here (the only other write is migrate()'s `meta` put), and nothing else holds the LevelDB handle for
   * writing. That makes it the choke point for state derived from the records in memory: the window summary is
   * updated from these same ops once LevelDB has accepted them, so it can never show a write that failed nor miss
   * one that succeeded. A failed batch drops the summary (it is rebuilt by the next query that needs it): after an
   * I/O error the write's fate is only known once the log is recovered. Any new code that writes the `windows`
   * sublevel without this method must call `windowSummary.invalidate()`.
   */
  async batch(ops: BatchOp[]): Promise<void> {
    if (ops.length === 0) return;
    if (this.writeFailed) await this.heal();
    await this.checkSpace(ops);
    try {
      // biome-ignore lint/suspicious/noExplicitAny: level's batch generics cannot express mixed-encoding sublevels
      await this.db.batch(ops as any, { sync: this.syncWrites });
    } catch (err) {
      this.windowSummary.invalidate();
      if (!isIoError(err)) throw err;
      this.writeFailed = true;
      this.freeSeen = null;
      throw storageError(err, this.location);
    }
    this.windowSummary.apply(ops);
  }

  /**
   * fsync each batch (config daemon.syncWrites). Off, a batch is in LevelDB's log when it returns, which a process
   * crash cannot undo but an OS crash or power loss can; on, it is on the disk. See docs/RELIABILITY.md for the cost.
   */
  syncWrites = false;

  /** Free space kept in reserve on the registry's volume (LevelDB needs room to flush and compact); 0 = no check. */
  diskReserveBytes = DISK_RESERVE_BYTES;
  /** A write failed inside LevelDB: its log may end in a torn record (see heal). */
  private writeFailed = false;
  private healing: Promise<void> | null = null;

  /** Refuse a write up front when the volume is nearly full, rather than let LevelDB fail half-way through it. */
  /** The last statfs answer, and the bytes written since (an upper bound on what those writes used). */
  private freeSeen: { free: number; at: number; written: number } | null = null;

  private async checkSpace(ops: BatchOp[]): Promise<void> {
    if (this.diskReserveBytes <= 0) return;
    let bytes = 0;
    for (const op of ops) {
      bytes += 64 + op.key.length;
      if (Buffer.isBuffer(op.value)) bytes += op.value.length;
      else if (typeof op.value === 'string') bytes += op.value.length;
    }
    let free: number;
    const seen = this.freeSeen;
    if (
      seen !== null &&
      performance.now() - seen.at < FREE_SPACE_TTL_MS &&
      seen.free - seen.written - bytes > this.diskReserveBytes + FREE_SPACE_MARGIN_BYTES
    ) {
      // Plenty of room a moment ago: skip the statfs (it cost ~3% of the daemon's CPU under gateway load). A disk
      // filled by someone else within the TTL still fails safely: LevelDB's write error goes through heal().
      seen.written += bytes;
      return;
    }
    try {
      const st = await fs.promises.statfs(this.location);
      free = st.bavail * st.bsize;
    } catch {
      return;
    }
    this.freeSeen = { free, at: performance.now(), written: bytes };
    if (free < bytes + this.diskReserveBytes) {
      throw new CwmError(
        'DISK_FULL',
        `the disk holding the registry is full (${free} bytes free at ${this.location})`,
        {
          hint: `free space on that volume (cwmd keeps ${this.diskReserveBytes} bytes in reserve), then retry; nothing was changed`,
          retryable: true,
          details: { freeBytes: free, reserveBytes: this.diskReserveBytes },
        },
      );
    }
  }

  /**
   * After a failed write, LevelDB's log may end in a partial record, and a crash would make recovery drop everything
   * appended after it: acknowledged writes lost. So before writing again the database is closed and reopened:
   * recovery reads the log up to the torn record, writes what it holds to a table, and starts a fresh log. (A memtable
   * compaction would switch logs too, but LevelDB's CompactRange reports no errors, so its success cannot be known.)
   * While the volume is still short of space nothing is touched and writes fail with DISK_FULL; reads keep working.
   */
  private heal(cause?: unknown): Promise<void> {
    this.healing ??= (async () => {
      try {
        const st = await fs.promises.statfs(this.location).catch(() => null);
        if (st && st.bavail * st.bsize < Math.max(this.diskReserveBytes, 1024 * 1024)) {
          throw storageError(cause ?? new Error('ENOSPC: No space left on device'), this.location);
        }
        await this.db.close();
        await this.db.open();
        for (const sub of this.all) await sub.open();
        this.writeFailed = false;
      } finally {
        this.healing = null;
      }
    })();
    return this.healing;
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
