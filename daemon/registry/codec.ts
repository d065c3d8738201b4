import { createHash } from 'node:crypto';
import { deflateRawSync, inflateRawSync } from 'node:zlib';

/** Tokens per registry chunk; the same granularity as LMCache's chunks so a chunk maps to one KV object. */
export const CHUNK_TOKENS = 256;

const FORMAT_VARINT = 1;
const FORMAT_VARINT_DEFLATE = 2;
const FORMAT_PACKED = 3;
const FORMAT_PACKED_DEFLATE = 4;

/** Fixed-width bit packing at the width of the largest id: 15 bits for a 32k vocabulary, 17 for 128k. */
function pack(ids: readonly number[]): Buffer {
  let max = 0;
  for (const id of ids) if (id > max) max = id;
  const width = Math.max(1, 32 - Math.clz32(max));
  const out = Buffer.alloc(1 + Math.ceil((ids.length * width) / 8));
  out[0] = width;
  let bit = 0;
  for (const id of ids) {
    for (let b = 0; b < width; b++, bit++)
      if ((id >>> b) & 1) out[1 + (bit >> 3)] = (out[1 + (bit >> 3)] as number) | (1 << (bit & 7));
  }
  return out;
}

function unpack(buf: Buffer): number[] {
  const width = buf[0] ?? 0;
  if (width < 1 || width > 32) throw new Error(`corrupt chunk: bad bit width ${width}`);
  const count = Math.floor(((buf.length - 1) * 8) / width);
  const ids: number[] = [];
  let bit = 0;
  for (let i = 0; i < count; i++) {
    let v = 0;
    for (let b = 0; b < width; b++, bit++) if (((buf[1 + (bit >> 3)] as number) >> (bit & 7)) & 1) v |= 1 << b;
    ids.push(v >>> 0);
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
    v |= (b & 0x7f) << shift;
    if (b & 0x80) {
      shift += 7;
      if (shift > 28) throw new Error('corrupt chunk: varint too long');
    } else {
      ids.push(v >>> 0);
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
  const ids = unpack(body.subarray(i + 1));
  if (ids.length < count) throw new Error('corrupt chunk: truncated packed ids');
  return ids.slice(0, count);
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
