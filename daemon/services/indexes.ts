import type { BatchOp, Registry } from '../registry/db.js';
import type { WindowRecord } from '../registry/records.js';

/**
 * Secondary indexes over windows, all in the `idx` sublevel with empty values. Every key ends in the window name,
 * and created-time keys sort chronologically, so a filtered, sorted page is one bounded range read.
 *   c!<created>!<name>            all windows by creation time
 *   t!<tag>!<created>!<name>      by tag
 *   m!<model>!<created>!<name>    by model (URI-encoded)
 *   s!<session>!<created>!<name>  by source session
 *   k!<tokens>!<name>             by token count
 *   p!<parent>!<name>             children of a window (lineage)
 *   L!<lineageRoot>!<name>        windows sharing a salt lineage
 * Counters (counts sublevel) hold the size of each c/t/m/s range, so `total` needs no scan.
 */
export function createdKey(iso: string): string {
  return Date.parse(iso).toString(36).padStart(10, '0');
}

const enc = (s: string) => encodeURIComponent(s);

export function windowIndexKeys(w: WindowRecord): { keys: string[]; counters: string[] } {
  const c = createdKey(w.createdAt);
  const keys = [
    `c!${c}!${w.name}`,
    `m!${enc(w.model)}!${c}!${w.name}`,
    `s!${w.session}!${c}!${w.name}`,
    `k!${w.tokens.toString().padStart(10, '0')}!${w.name}`,
    `L!${w.lineageRoot}!${w.name}`,
    ...w.tags.map((t) => `t!${t}!${c}!${w.name}`),
  ];
  if (w.parent) keys.push(`p!${w.parent}!${w.name}`);
  const counters = ['c!', `m!${enc(w.model)}!`, `s!${w.session}!`, ...w.tags.map((t) => `t!${t}!`)];
  return { keys, counters };
}

export function modelPrefix(model: string): string {
  return `m!${enc(model)}!`;
}

/** Index puts/dels plus counter deltas for adding (+1) or removing (-1) a window. */
export function indexOps(
  reg: Registry,
  w: WindowRecord,
  sign: 1 | -1,
  ops: BatchOp[],
  deltas: Map<string, number>,
): void {
  const { keys, counters } = windowIndexKeys(w);
  for (const key of keys) {
    ops.push(sign === 1 ? { type: 'put', sublevel: reg.idx, key, value: '' } : { type: 'del', sublevel: reg.idx, key });
  }
  for (const k of counters) deltas.set(k, (deltas.get(k) ?? 0) + sign);
}

export function nameFromIndexKey(key: string): string {
  return key.slice(key.lastIndexOf('!') + 1);
}
