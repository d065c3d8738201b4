import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CHUNK_TOKENS, chunkHash, decodeTokens, encodeTokens, splitIntoChunks } from '../../daemon/registry/codec.js';

describe('token chunk codec', () => {
  it('round-trips token ids of every size, including the 32-bit edge', () => {
    const ids = [0, 1, 127, 128, 16383, 16384, 151_935, 2 ** 21, 2 ** 32 - 1];
    assert.deepEqual(decodeTokens(encodeTokens(ids)), ids);
    assert.deepEqual(decodeTokens(encodeTokens([])), []);
  });

  it('stores typical text tokens in under 2 bytes each', () => {
    // a vocabulary of 32k with a skewed (Zipf-like) distribution, as real text has
    let x = 12345;
    const ids = Array.from({ length: CHUNK_TOKENS }, () => {
      x = (x * 1103515245 + 12345) % 2 ** 31;
      return Math.floor(32000 * (x / 2 ** 31) ** 3);
    });
    const buf = encodeTokens(ids);
    assert.deepEqual(decodeTokens(buf), ids);
    assert.ok(buf.length < 2 * ids.length, `encoded ${buf.length} bytes for ${ids.length} tokens`);
  });

  it('rejects corrupt input instead of returning wrong tokens', () => {
    assert.throws(() => decodeTokens(Buffer.from([9, 1, 2])), /unknown format/);
    assert.throws(() => decodeTokens(Buffer.from([1, 0x80])), /truncated varint/);
  });

  it('chains hashes so equal chunks after different prefixes differ', () => {
    const a = Array.from({ length: CHUNK_TOKENS }, (_, i) => i);
    const b = Array.from({ length: CHUNK_TOKENS }, (_, i) => i + 1);
    const one = splitIntoChunks([...a, ...b]);
    const two = splitIntoChunks([...b, ...b]);
    assert.equal(one.length, 2);
    assert.notEqual(one[1]?.hash, two[1]?.hash);
    assert.equal(one[0]?.hash, chunkHash(null, a));
    assert.equal(one[1]?.hash, chunkHash(one[0]?.hash ?? null, b));
  });

  it('splits into 256-token chunks with a partial tail', () => {
    const ids = Array.from({ length: 600 }, (_, i) => i);
    const chunks = splitIntoChunks(ids);
    assert.deepEqual(
      chunks.map((c) => c.ids.length),
      [256, 256, 88],
    );
    assert.deepEqual(
      chunks.flatMap((c) => c.ids),
      ids,
    );
  });
});

describe('chunk cache', () => {
  it('returns what was stored, evicts least recently used first, and stays within its token bound', async () => {
    const { ChunkCache } = await import('../../daemon/registry/chunk-cache.js');
    const c = new ChunkCache(600);
    c.set(
      'a',
      Array.from({ length: 256 }, (_, i) => i),
    );
    c.set(
      'b',
      Array.from({ length: 256 }, (_, i) => i + 1),
    );
    assert.equal(c.get('a')?.[255], 255); // a is now the most recent
    c.set(
      'c',
      Array.from({ length: 256 }, (_, i) => i + 2),
    );
    assert.equal(c.get('b'), undefined, 'b was least recently used');
    assert.equal(c.get('a')?.length, 256);
    assert.equal(c.get('c')?.[0], 2);
    assert.equal(c.size, 2);
  });
});
