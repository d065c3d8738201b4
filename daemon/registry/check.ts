import { indexOps, windowIndexKeys } from '../services/indexes.js';
import { decodeTokens } from './codec.js';
import type { BatchOp, Registry } from './db.js';
import type { SessionRecord, WindowRecord } from './records.js';

export interface Problem {
  kind: string;
  key: string;
  message: string;
}

interface ChunkRef {
  n: number;
  bytes: number;
  tokens: number;
}

/**
 * Registry invariants: every window's chunks exist and decode, refcounts equal the number of window references,
 * no chunk without references, every index entry points at a live window and every window has its index entries,
 * counters match, lineage parents exist or are marked deleted. With repair, everything derivable is rebuilt.
 */
export async function checkRegistry(reg: Registry, repair: boolean) {
  const problems: Problem[] = [];
  const expectedRefs = new Map<string, number>();
  const windows: WindowRecord[] = [];
  const names = new Set<string>();
  for await (const [name, v] of reg.windows.iterator()) {
    const w = v as WindowRecord;
    windows.push(w);
    names.add(name);
    if (w.name !== name)
      problems.push({ kind: 'window-key', key: name, message: `record name "${w.name}" differs from its key` });
    for (const h of w.chunkHashes) expectedRefs.set(h, (expectedRefs.get(h) ?? 0) + 1);
  }
  const chunkKeys = new Set<string>();
  for await (const [hash, buf] of reg.chunks.iterator()) {
    chunkKeys.add(hash);
    try {
      decodeTokens(buf as Buffer);
    } catch (err) {
      problems.push({ kind: 'chunk-corrupt', key: hash, message: (err as Error).message });
    }
  }
  let tokenTotal = 0;
  let byteTotal = 0;
  const refs = new Map<string, ChunkRef>();
  for await (const [hash, v] of reg.refs.iterator()) refs.set(hash, v as ChunkRef);
  for (const w of windows) {
    let tokens = 0;
    for (const h of w.chunkHashes) {
      if (!chunkKeys.has(h))
        problems.push({
          kind: 'chunk-missing',
          key: w.name,
          message: `window "${w.name}" references missing chunk ${h}`,
        });
      tokens += refs.get(h)?.tokens ?? 0;
    }
    if (refs.size > 0 && w.chunkHashes.every((h) => refs.has(h)) && tokens !== w.tokens) {
      problems.push({
        kind: 'token-count',
        key: w.name,
        message: `window "${w.name}" says ${w.tokens} tokens, its chunks hold ${tokens}`,
      });
    }
    if (w.parent && !names.has(w.parent) && !w.parentDeleted) {
      problems.push({
        kind: 'lineage',
        key: w.name,
        message: `parent "${w.parent}" of "${w.name}" is missing and not marked deleted`,
      });
    }
  }
  for (const [hash, n] of expectedRefs) {
    const ref = refs.get(hash);
    if (!ref)
      problems.push({ kind: 'ref-missing', key: hash, message: `chunk ${hash} has no refcount (expected ${n})` });
    else if (ref.n !== n)
      problems.push({ kind: 'ref-mismatch', key: hash, message: `chunk ${hash} refcount ${ref.n}, expected ${n}` });
  }
  for (const [hash, ref] of refs) {
    if (!expectedRefs.has(hash))
      problems.push({ kind: 'ref-orphan', key: hash, message: `chunk ${hash} is referenced by no window` });
    else {
      tokenTotal += ref.tokens;
      byteTotal += ref.bytes;
    }
  }
  for (const hash of chunkKeys) {
    if (!expectedRefs.has(hash) && !refs.has(hash))
      problems.push({ kind: 'chunk-orphan', key: hash, message: `chunk ${hash} is referenced by no window` });
  }
  const expectedIdx = new Set<string>();
  const expectedCounts = new Map<string, number>();
  for (const w of windows) {
    const { keys, counters } = windowIndexKeys(w);
    for (const k of keys) expectedIdx.add(k);
    for (const c of counters) expectedCounts.set(c, (expectedCounts.get(c) ?? 0) + 1);
  }
  const actualIdx = new Set<string>();
  for await (const key of reg.idx.keys()) {
    actualIdx.add(key);
    if (!expectedIdx.has(key))
      problems.push({ kind: 'index-stale', key, message: `index entry ${key} points at no window` });
  }
  for (const key of expectedIdx)
    if (!actualIdx.has(key)) problems.push({ kind: 'index-missing', key, message: `index entry ${key} is missing` });
  let sessions = 0;
  for await (const [id, v] of reg.sessions.iterator()) {
    sessions++;
    // A thawed session may read its context from its window (SessionData.fromWindow): that window must exist.
    if ((v as SessionRecord).sourceWindow === null) continue;
    const data = await reg.getSessionData(id);
    if (data?.fromWindow !== undefined && !names.has(data.fromWindow)) {
      problems.push({
        kind: 'session-context',
        key: id,
        message: `session "${id}" reads its context from window "${data.fromWindow}", which is missing`,
      });
    }
  }
  expectedCounts.set('sessions', sessions);
  expectedCounts.set('chunks', expectedRefs.size);
  expectedCounts.set('tokens', tokenTotal);
  expectedCounts.set('bytes', byteTotal);
  const actualCounts = new Map<string, number>();
  for await (const [k, v] of reg.counts.iterator()) if (!k.startsWith('sf!')) actualCounts.set(k, v as number);
  for (const [k, v] of expectedCounts) {
    if ((actualCounts.get(k) ?? 0) !== v)
      problems.push({ kind: 'count', key: k, message: `counter ${k} is ${actualCounts.get(k) ?? 0}, expected ${v}` });
  }
  for (const [k, v] of actualCounts) {
    if (!expectedCounts.has(k) && v !== 0)
      problems.push({ kind: 'count', key: k, message: `counter ${k} is ${v}, expected 0` });
  }

  let repaired = 0;
  if (repair && problems.length > 0) {
    const ops: BatchOp[] = [];
    for (const hash of refs.keys())
      if (!expectedRefs.has(hash)) ops.push({ type: 'del', sublevel: reg.refs, key: hash });
    for (const hash of chunkKeys)
      if (!expectedRefs.has(hash)) ops.push({ type: 'del', sublevel: reg.chunks, key: hash });
    for (const [hash, n] of expectedRefs) {
      const ref = refs.get(hash);
      if (ref && ref.n !== n) ops.push({ type: 'put', sublevel: reg.refs, key: hash, value: { ...ref, n } });
    }
    for (const key of actualIdx) ops.push({ type: 'del', sublevel: reg.idx, key });
    const scratch = new Map<string, number>();
    for (const w of windows) {
      indexOps(reg, w, 1, ops, scratch);
      if (w.parent && !names.has(w.parent) && !w.parentDeleted)
        ops.push({ type: 'put', sublevel: reg.windows, key: w.name, value: { ...w, parentDeleted: true } });
    }
    for (const k of actualCounts.keys()) ops.push({ type: 'del', sublevel: reg.counts, key: k });
    for (const [k, v] of expectedCounts) if (v !== 0) ops.push({ type: 'put', sublevel: reg.counts, key: k, value: v });
    await reg.batch(ops);
    reg.invalidateCounts();
    repaired = problems.length;
  }
  return {
    ok: problems.length === 0,
    checked: { windows: windows.length, chunks: chunkKeys.size, sessions },
    problems,
    repaired,
  };
}
