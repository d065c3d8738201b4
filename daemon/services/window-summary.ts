import type { BatchOp, Sublevel } from '../registry/db.js';
import type { WindowRecord } from '../registry/records.js';
import { createdKey } from './indexes.js';

/**
 * What `window.list` needs to filter and sort a window, without its chunk hashes, fingerprint or lineage. The page
 * itself is still read from LevelDB (`getMany` of the page's keys), so the result carries the current record.
 */
export interface WindowSummaryEntry {
  /** The key in the `windows` sublevel (the record's name in a consistent registry). */
  readonly key: string;
  readonly name: string;
  /** `createdKey(createdAt)`: the created-time sort key the indexes use. */
  readonly created: string;
  readonly tokens: number;
  readonly model: string;
  readonly session: string;
  readonly tags: readonly string[];
  /** `name.toLowerCase() + "\n" + description.toLowerCase()`, for case-insensitive substring search. */
  readonly text: string;
  /** Where the lower-cased name ends in `text` (a search containing "\n" must not match across the two). */
  readonly nameEnd: number;
}

/**
 * An in-memory summary of every window, for the `window.list` queries that no single index answers (free-text
 * search, two or more tags, tag + model, …): those used to load and JSON-decode every candidate record, chunk hashes
 * and all (930 ms for a search over 100k windows); filtering this map takes a few milliseconds.
 *
 * Kept in sync by construction: every write to the registry goes through `Registry.batch`, which calls `apply` with
 * its ops after LevelDB has accepted the batch (and `invalidate` when a batch fails, since a failed write's outcome is
 * not known until the log is recovered). A put on the `windows` sublevel upserts the entry from the written value, a
 * del removes it. Anything that ever writes the windows sublevel some other way must call `invalidate`.
 *
 * Built lazily on the first query that needs it, by one scan of the `windows` sublevel; concurrent first queries
 * share that build. Batches that land while the scan runs are recorded (as entries, at apply time) and replayed over
 * the scan's result in commit order: the replay ends each touched key in its latest state whatever the scan saw of
 * it, and an untouched key was last written before the scan began, so the scan read its current value.
 *
 * Memory: about 270 bytes per window on the V8 heap, 26 MiB at 100,000 windows (bench/windows.ts, whose names and
 * descriptions are 10-15 characters; longer ones add their length). The entry object, the name and the lower-cased
 * search text dominate; models, sessions and tag lists are interned, so windows sharing them share one copy.
 */
export class WindowSummary {
  private entries: Map<string, WindowSummaryEntry> | null = null;
  private building: Promise<ReadonlyMap<string, WindowSummaryEntry>> | null = null;
  /** Changes written while a build's scan runs; null when no build is running. */
  private pending: [string, WindowSummaryEntry | null][] | null = null;
  /** Bumped by invalidate, so a build that started before it does not install its (possibly stale) result. */
  private generation = 0;
  private readonly strings = new Map<string, string>();
  private readonly tagLists = new Map<string, readonly string[]>();

  constructor(private readonly windows: Sublevel) {}

  /** Whether the summary is built (for tests and status). */
  get built(): boolean {
    return this.entries !== null;
  }

  /** The summary, building it first if needed. The map is live: read it synchronously, do not keep it. */
  get(): Promise<ReadonlyMap<string, WindowSummaryEntry>> {
    if (this.entries) return Promise.resolve(this.entries);
    this.building ??= this.build();
    return this.building;
  }

  /** Drop the summary (and any build in progress): the next query rebuilds it from the registry. */
  invalidate(): void {
    this.generation++;
    this.entries = null;
    this.building = null;
    this.pending = null;
    this.strings.clear();
    this.tagLists.clear();
  }

  /** Called by Registry.batch once LevelDB has written `ops`; only ops on the windows sublevel matter. */
  apply(ops: readonly BatchOp[]): void {
    const target = this.entries ?? this.pending;
    if (target === null) return;
    for (const op of ops) {
      if (op.sublevel !== this.windows) continue;
      // The entry is made now: callers may change the value object after the batch (clone's `pinned`, …).
      const entry = op.type === 'put' ? this.entryOf(op.key, op.value as WindowRecord) : null;
      if (this.entries) {
        if (entry) this.entries.set(op.key, entry);
        else this.entries.delete(op.key);
      } else {
        this.pending?.push([op.key, entry]);
      }
    }
  }

  private async build(): Promise<ReadonlyMap<string, WindowSummaryEntry>> {
    const generation = this.generation;
    const pending: [string, WindowSummaryEntry | null][] = [];
    // Set before the scan starts (synchronously, before the iterator is created): no batch applied after this
    // point is missed, and one applied before it was committed before the scan, which therefore reads it.
    this.pending = pending;
    const map = new Map<string, WindowSummaryEntry>();
    try {
      for await (const [key, value] of this.windows.iterator()) {
        if (this.generation !== generation) break;
        map.set(key, this.entryOf(key, value as WindowRecord));
      }
    } catch (err) {
      if (this.generation === generation) {
        this.pending = null;
        this.building = null;
      }
      throw err;
    }
    if (this.generation !== generation) return this.get();
    for (const [key, entry] of pending) {
      if (entry) map.set(key, entry);
      else map.delete(key);
    }
    this.entries = map;
    this.pending = null;
    this.building = null;
    return map;
  }

  private intern(s: string): string {
    const hit = this.strings.get(s);
    if (hit !== undefined) return hit;
    this.strings.set(s, s);
    return s;
  }

  private entryOf(key: string, w: WindowRecord): WindowSummaryEntry {
    const tagKey = JSON.stringify(w.tags);
    let tags = this.tagLists.get(tagKey);
    if (tags === undefined) {
      tags = Object.freeze(w.tags.map((t) => this.intern(t)));
      this.tagLists.set(tagKey, tags);
    }
    const lowerName = w.name.toLowerCase();
    return {
      key,
      name: w.name === key ? key : w.name,
      created: createdKey(w.createdAt),
      tokens: w.tokens,
      model: this.intern(w.model),
      session: this.intern(w.session),
      tags,
      text: `${lowerName}\n${w.description.toLowerCase()}`,
      nameEnd: lowerName.length,
    };
  }
}

/** The case-insensitive substring test `window.list` applies: on the name or on the description, never across. */
export function matchesSearch(e: WindowSummaryEntry, lowerSearch: string): boolean {
  if (!lowerSearch.includes('\n')) return e.text.includes(lowerSearch);
  return e.text.slice(0, e.nameEnd).includes(lowerSearch) || e.text.slice(e.nameEnd + 1).includes(lowerSearch);
}
