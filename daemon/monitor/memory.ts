import fs from 'node:fs';
import path from 'node:path';
import si from 'systeminformation';

export interface MemoryReading {
  /** Bytes available to us: the host's, or the cgroup's room under its limit when that is tighter. */
  available: number;
  total: number;
  /** available / total, 0..1. */
  fraction: number;
  source: 'host' | 'cgroup-v1' | 'cgroup-v2';
}

export interface CgroupMemory {
  limit: number;
  /** Usage without reclaimable page cache (inactive_file), as the kernel's OOM accounting sees it. */
  usage: number;
  version: 1 | 2;
  dir: string;
}

/** v1 reports "no limit" as a huge page-aligned number (PAGE_COUNTER_MAX); anything past 2^60 is unlimited. */
const V1_UNLIMITED = 2 ** 60;

function readText(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

function statValue(stat: string | null, key: string): number {
  if (stat === null) return 0;
  const m = new RegExp(`^${key} (\\d+)$`, 'm').exec(stat);
  return m ? Number(m[1]) : 0;
}

/** `/proc/self/cgroup` → the v2 path ("0::/x") and the v1 memory controller path ("4:memory:/x"). */
export function parseProcCgroup(text: string): { v2: string | null; v1memory: string | null } {
  let v2: string | null = null;
  let v1memory: string | null = null;
  for (const line of text.split('\n')) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line.trim());
    if (!m) continue;
    if (m[1] === '0' && m[2] === '') v2 = m[3] as string;
    else if ((m[2] as string).split(',').includes('memory')) v1memory = m[3] as string;
  }
  return { v2, v1memory };
}

/** The directory and its ancestors up to (and including) the mount root. */
function chain(mount: string, rel: string): string[] {
  const out: string[] = [];
  let dir = path.join(mount, rel);
  for (;;) {
    out.push(dir);
    if (dir === mount || !dir.startsWith(mount)) break;
    dir = path.dirname(dir);
  }
  return out;
}

/**
 * The tightest cgroup memory limit that applies to this process (v2 memory.max, or v1 memory.limit_in_bytes),
 * looking at the process's own cgroup and its ancestors; null when none is set. `root` is for tests.
 */
export function readCgroupMemory(root = '/'): CgroupMemory | null {
  const proc = parseProcCgroup(readText(path.join(root, 'proc/self/cgroup')) ?? '');
  const found: CgroupMemory[] = [];
  const v2mount = path.join(root, 'sys/fs/cgroup');
  if (proc.v2 !== null && fs.existsSync(path.join(v2mount, 'cgroup.controllers'))) {
    for (const dir of chain(v2mount, proc.v2)) {
      const max = readText(path.join(dir, 'memory.max'))?.trim();
      if (max === undefined || max === 'max') continue;
      const current = Number(readText(path.join(dir, 'memory.current'))?.trim() ?? Number.NaN);
      const limit = Number(max);
      if (!Number.isFinite(limit) || !Number.isFinite(current)) continue;
      const inactive = statValue(readText(path.join(dir, 'memory.stat')), 'inactive_file');
      found.push({ limit, usage: Math.max(0, current - inactive), version: 2, dir });
    }
  }
  const v1mount = path.join(root, 'sys/fs/cgroup/memory');
  if (proc.v1memory !== null && fs.existsSync(v1mount)) {
    for (const dir of chain(v1mount, proc.v1memory)) {
      const limit = Number(readText(path.join(dir, 'memory.limit_in_bytes'))?.trim() ?? Number.NaN);
      if (!Number.isFinite(limit) || limit >= V1_UNLIMITED) continue;
      const usage = Number(readText(path.join(dir, 'memory.usage_in_bytes'))?.trim() ?? Number.NaN);
      if (!Number.isFinite(usage)) continue;
      const inactive = statValue(readText(path.join(dir, 'memory.stat')), 'total_inactive_file');
      found.push({ limit, usage: Math.max(0, usage - inactive), version: 1, dir });
    }
  }
  if (found.length === 0) return null;
  return found.reduce((a, b) => (b.limit - b.usage < a.limit - a.usage ? b : a));
}

/** Combine the host reading with a cgroup limit: whichever leaves the smaller fraction available wins. */
export function combineMemory(host: { available: number; total: number }, cg: CgroupMemory | null): MemoryReading {
  const hostReading: MemoryReading = {
    available: host.available,
    total: host.total,
    fraction: host.total > 0 ? host.available / host.total : 0,
    source: 'host',
  };
  if (cg === null || cg.limit <= 0) return hostReading;
  const available = Math.max(0, cg.limit - cg.usage);
  const fraction = available / cg.limit;
  if (fraction >= hostReading.fraction) return hostReading;
  return { available, total: cg.limit, fraction, source: cg.version === 2 ? 'cgroup-v2' : 'cgroup-v1' };
}

/** Host memory from systeminformation (it reads /proc/meminfo), narrowed by a cgroup limit where one is set. */
export async function readMemory(): Promise<MemoryReading> {
  const m = await si.mem();
  return combineMemory({ available: m.available, total: m.total }, readCgroupMemory());
}
