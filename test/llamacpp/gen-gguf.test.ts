/** The GGUF generator: deterministic output and a well-formed GGUF v3 layout (no server needed). */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { DEFAULT_CTX, N_VOCAB, writeModel } from '../../scripts/llama/gen-gguf.js';

const dir = await mkdtemp(path.join(os.tmpdir(), 'cwm-gguf-'));
after(() => rm(dir, { recursive: true, force: true }));

/** Minimal reader: header counts, the KV keys with scalar values, and tensor infos. */
function parse(buf: Buffer) {
  let o = 0;
  const u32 = () => {
    o += 4;
    return buf.readUInt32LE(o - 4);
  };
  const u64 = () => {
    o += 8;
    return Number(buf.readBigUInt64LE(o - 8));
  };
  const str = () => {
    const n = u64();
    o += n;
    return buf.toString('utf8', o - n, o);
  };
  const sizes: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
  const value = (t: number): unknown => {
    if (t === 8) return str();
    if (t === 9) {
      const et = u32();
      const n = u64();
      const arr: unknown[] = [];
      for (let i = 0; i < n; i++) arr.push(value(et));
      return arr;
    }
    if (t === 4) return u32();
    if (t === 6) {
      o += 4;
      return buf.readFloatLE(o - 4);
    }
    o += sizes[t] ?? 0;
    return buf[o - 1];
  };
  assert.equal(buf.toString('latin1', 0, 4), 'GGUF');
  o = 4;
  const version = u32();
  const nTensors = u64();
  const nKv = u64();
  const kv = new Map<string, unknown>();
  for (let i = 0; i < nKv; i++) {
    const k = str();
    kv.set(k, value(u32()));
  }
  const tensors: Array<{ name: string; ne: number[]; type: number; offset: number }> = [];
  for (let i = 0; i < nTensors; i++) {
    const name = str();
    const nd = u32();
    const ne: number[] = [];
    for (let d = 0; d < nd; d++) ne.push(u64());
    tensors.push({ name, ne, type: u32(), offset: u64() });
  }
  const dataStart = Math.ceil(o / 32) * 32;
  return { version, kv, tensors, dataStart };
}

test('same arguments give byte-identical files; another seed differs', async () => {
  const a = await writeModel({ out: path.join(dir, 'a.gguf'), size: 'tiny', seed: 3 });
  const b = await writeModel({ out: path.join(dir, 'b.gguf'), size: 'tiny', seed: 3 });
  const c = await writeModel({ out: path.join(dir, 'c.gguf'), size: 'tiny', seed: 4 });
  const [ba, bb, bc] = await Promise.all([a, b, c].map((m) => readFile(m.path)));
  assert.ok(ba && bb && bc);
  assert.ok(ba.equals(bb));
  assert.equal(ba.length, bc.length);
  assert.ok(!ba.equals(bc));
  assert.ok(a.bytes > 7_000_000 && a.bytes < 9_000_000, `tiny is ~8 MB, got ${a.bytes}`);
});

test('GGUF v3 layout: llama metadata, vocab, aligned tensors filling the file', async () => {
  const m = await writeModel({ out: path.join(dir, 't.gguf'), size: 'tiny' });
  const buf = await readFile(m.path);
  const g = parse(buf);
  assert.equal(g.version, 3);
  assert.equal(g.kv.get('general.architecture'), 'llama');
  assert.equal(g.kv.get('llama.context_length'), DEFAULT_CTX);
  assert.equal(g.kv.get('llama.embedding_length'), 256);
  assert.equal(g.kv.get('llama.block_count'), 4);
  assert.equal(g.kv.get('tokenizer.ggml.model'), 'llama');
  assert.equal((g.kv.get('tokenizer.ggml.tokens') as string[]).length, N_VOCAB);
  assert.match(String(g.kv.get('tokenizer.chat_template')), /add_generation_prompt/);
  assert.equal(g.tensors.length, 2 + 4 * 9 + 1);
  let end = 0;
  for (const t of g.tensors) {
    assert.equal(t.offset % 32, 0, t.name);
    end = t.offset + t.ne.reduce((x, y) => x * y, 1) * (t.type === 0 ? 4 : 2);
  }
  assert.equal(g.dataStart + end, buf.length);
});
