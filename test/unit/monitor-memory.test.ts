import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { combineMemory, parseProcCgroup, readCgroupMemory } from '../../daemon/monitor/memory.js';

const roots: string[] = [];
function fakeRoot(files: Record<string, string>): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cwm-cg-'));
  roots.push(root);
  for (const [rel, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    fs.writeFileSync(path.join(root, rel), text);
  }
  return root;
}
after(() => {
  for (const r of roots) fs.rmSync(r, { recursive: true, force: true });
});

const GiB = 1024 ** 3;

describe('monitor: memory readings', () => {
  it('parses /proc/self/cgroup for v1 and v2', () => {
    assert.deepEqual(parseProcCgroup('0::/user.slice/x.scope\n'), { v2: '/user.slice/x.scope', v1memory: null });
    assert.deepEqual(parseProcCgroup('5:cpu,cpuacct:/\n4:memory:/docker/abc\n0::/\n'), {
      v2: '/',
      v1memory: '/docker/abc',
    });
  });

  it('reads a cgroup v2 memory.max, minus reclaimable page cache, the tightest level winning', () => {
    const root = fakeRoot({
      'proc/self/cgroup': '0::/app/worker\n',
      'sys/fs/cgroup/cgroup.controllers': 'memory\n',
      'sys/fs/cgroup/app/memory.max': `${4 * GiB}\n`,
      'sys/fs/cgroup/app/memory.current': `${1 * GiB}\n`,
      'sys/fs/cgroup/app/worker/memory.max': `${2 * GiB}\n`,
      'sys/fs/cgroup/app/worker/memory.current': `${1.5 * GiB}\n`,
      'sys/fs/cgroup/app/worker/memory.stat': `anon 1\ninactive_file ${0.5 * GiB}\n`,
    });
    const cg = readCgroupMemory(root);
    assert.equal(cg?.version, 2);
    assert.equal(cg?.limit, 2 * GiB);
    assert.equal(cg?.usage, 1 * GiB);
  });

  it('treats "max" and the v1 huge number as no limit', () => {
    const v2 = fakeRoot({
      'proc/self/cgroup': '0::/\n',
      'sys/fs/cgroup/cgroup.controllers': 'memory\n',
      'sys/fs/cgroup/memory.max': 'max\n',
      'sys/fs/cgroup/memory.current': '100\n',
    });
    assert.equal(readCgroupMemory(v2), null);
    const v1 = fakeRoot({
      'proc/self/cgroup': '4:memory:/pod\n',
      'sys/fs/cgroup/memory/pod/memory.limit_in_bytes': '9223372036854771712\n',
      'sys/fs/cgroup/memory/pod/memory.usage_in_bytes': '100\n',
    });
    assert.equal(readCgroupMemory(v1), null);
  });

  it('reads a cgroup v1 limit', () => {
    const root = fakeRoot({
      'proc/self/cgroup': '4:memory:/pod\n',
      'sys/fs/cgroup/memory/pod/memory.limit_in_bytes': `${8 * GiB}\n`,
      'sys/fs/cgroup/memory/pod/memory.usage_in_bytes': `${7 * GiB}\n`,
      'sys/fs/cgroup/memory/pod/memory.stat': `total_inactive_file ${1 * GiB}\n`,
    });
    assert.deepEqual(
      { ...readCgroupMemory(root), dir: undefined },
      { limit: 8 * GiB, usage: 6 * GiB, version: 1, dir: undefined },
    );
  });

  it('uses whichever of host and cgroup leaves the smaller fraction', () => {
    const host = { available: 20 * GiB, total: 24 * GiB };
    assert.equal(combineMemory(host, null).source, 'host');
    const tight = combineMemory(host, { limit: 4 * GiB, usage: 3.8 * GiB, version: 2, dir: '/' });
    assert.equal(tight.source, 'cgroup-v2');
    assert.ok(Math.abs(tight.fraction - 0.05) < 1e-9);
    assert.equal(combineMemory(host, { limit: 100 * GiB, usage: 1 * GiB, version: 1, dir: '/' }).source, 'host');
  });
});
