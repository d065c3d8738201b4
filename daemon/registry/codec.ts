import { createHash } from 'node:crypto';
import { deflateRawSync, inflateRawSync } from 'node:zlib';

/** Tokens per registry chunk; the same granularity as LMCache's chunks so a chunk maps to one KV object. */
export const CHUNK_TOKENS = 256;

const FORMAT_VARINT = 1;
const FORMAT_VARINT_DEFLATE = 2;
const FORMAT_PACKED = 3;
const FORMAT_PACKED_DEFLATE = 4;

/**
 * Fixed-width bit packing at the width of the largest id: 15 bits for a 32k vocabulary, 17 for 128k.
 * The accumulator stays below 2^40, well inside a double's exact range, so plain arithmetic is safe for 32-bit ids.
 */
function pack(ids: readonly number[]): Buffer {
  let max = 0;
  for (const id of ids) if (id > max) max = id;
  const width = Math.max(1, 32 - Math.clz32(max));
  const out = Buffer.alloc(1 + Math.ceil((ids.length * width) / 8));
  out[0] = width;
  const scale = 2 ** width;
  let acc = 0;
  let bits = 0;
  let o = 1;
  let mul = 1;
  for (const id of ids) {
    acc += id * mul;
    bits += width;
    mul *= scale;
    while (bits >= 8) {
      out[o++] = acc % 256;
      acc = Math.floor(acc / 256);
      mul /= 256;
      bits -= 8;
    }
  }
  if (bits > 0) out[o] = acc;
  return out;
}

function unpack(buf: Buffer, count: number): number[] {
  const width = buf[0] ?? 0;
  if (width < 1 || width > 32) throw new Error(`corrupt chunk: bad bit width ${width}`);
  if ((buf.length - 1) * 8 < count * width) throw new Error('corrupt chunk: truncated packed ids');
  const scale = 2 ** width;
  const ids = new Array<number>(count);
  let acc = 0;
  let bits = 0;
  let mul = 1;
  let i = 1;
  for (let n = 0; n < count; n++) {
    while (bits < width) {
      acc += (buf[i++] as number) * mul;
      mul *= 256;
      bits += 8;
    }
    ids[n] = acc % scale;
    acc = Math.floor(acc / scale);
    mul /= scale;
    bits -= width;
  }
  return ids;
}

function writeVarints(ids: readonly number[]): Buffer {
  const out = Buffer.allocUnsafe(ids.length * 5);
  let o = 0;
  for (const id of ids) {
    let v = id >>> 0;
    while (v >= 0x80) {
      out[o++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    out[o++] = v;
  }
  return out.subarray(0, o);
}

function readVarints(buf: Buffer): number[] {
  const ids: number[] = [];
  let v = 0;
  let shift = 0;
  for (let i = 0; i < buf.length; i++) {
    const b = buf[i] as number;
    v += (b & 0x7f) * 2 ** shift;
    if (b & 0x80) {
      shift += 7;
      if (shift > 28) throw new Error('corrupt chunk: varint too long');
    } else {
      ids.push(v);
      v = 0;
      shift = 0;
    }
  }
  if (shift !== 0) throw new Error('corrupt chunk: truncated varint');
  return ids;
}

/**
 * Token ids → compact bytes: the smallest of LEB128 varints or fixed-width bit packing, each deflated when that
 * helps. One format byte in front; the packed forms start with the id count (a varint), then the bit width.
 */
export function encodeTokens(ids: readonly number[]): Buffer {
  const varint = writeVarints(ids);
  const packed = Buffer.concat([writeVarints([ids.length]), pack(ids)]);
  const candidates: [number, Buffer][] = [
    [FORMAT_VARINT, varint],
    [FORMAT_VARINT_DEFLATE, deflateRawSync(varint, { level: 6 })],
    [FORMAT_PACKED, packed],
    [FORMAT_PACKED_DEFLATE, deflateRawSync(packed, { level: 6 })],
  ];
  let best = candidates[0] as [number, Buffer];
  for (const c of candidates) if (c[1].length < best[1].length) best = c;
  return Buffer.concat([Buffer.of(best[0]), best[1]]);
}

/** A fast, uncompressed encoding for long token lists kept in JSON records (a session's exact context). */
export function packTokensBase64(ids: readonly number[]): string {
  return Buffer.concat([Buffer.of(FORMAT_PACKED), writeVarints([ids.length]), pack(ids)]).toString('base64');
}

export function unpackTokensBase64(b64: string): number[] {
  return decodeTokens(Buffer.from(b64, 'base64'));
}

function readPacked(body: Buffer): number[] {
  let count = 0;
  let shift = 0;
  let i = 0;
  for (; i < body.length; i++) {
    const b = body[i] as number;
    count |= (b & 0x7f) << shift;
    if (!(b & 0x80)) break;
    shift += 7;
    if (shift > 28) throw new Error('corrupt chunk: bad count');
  }
  return unpack(body.subarray(i + 1), count);
}

export function decodeTokens(buf: Buffer): number[] {
  const format = buf[0];
  const body = buf.subarray(1);
  if (format === FORMAT_VARINT) return readVarints(body);
  if (format === FORMAT_VARINT_DEFLATE) return readVarints(inflateRawSync(body));
  if (format === FORMAT_PACKED) return readPacked(body);
  if (format === FORMAT_PACKED_DEFLATE) return readPacked(inflateRawSync(body));
  throw new Error(`corrupt chunk: unknown format byte ${String(format)}`);
}

/**
 * Chained content hash, like LMCache's: h_k = sha256(h_{k-1} || tokens). A chunk's identity therefore covers the
 * whole prefix before it, so equal chunks are shared only between windows that agree up to that point.
 */
export function chunkHash(parent: string | null, ids: readonly number[]): string {
  const h = createHash('sha256');
  h.update(parent ?? 'cwm-chunk-root');
  const u32 = new Uint32Array(ids.length);
  for (let i = 0; i < ids.length; i++) u32[i] = ids[i] as number;
  h.update(new Uint8Array(u32.buffer));
  return h.digest('base64url');
}

export interface SplitChunk {
  hash: string;
  ids: number[];
}

export function splitIntoChunks(ids: readonly number[]): SplitChunk[] {
  const chunks: SplitChunk[] = [];
  let parent: string | null = null;
  for (let i = 0; i < ids.length; i += CHUNK_TOKENS) {
    const part = ids.slice(i, i + CHUNK_TOKENS);
    parent = chunkHash(parent, part);
    chunks.push({ hash: parent, ids: part });
  }
  return chunks;
}
