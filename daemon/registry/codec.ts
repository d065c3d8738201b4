import { createHash } from 'node:crypto';
import { deflateRawSync, inflateRawSync } from 'node:zlib';

/** Tokens per registry chunk; the same granularity as LMCache's chunks so a chunk maps to one KV object. */
export const CHUNK_TOKENS = 256;

const FORMAT_VARINT = 1;
const FORMAT_VARINT_DEFLATE = 2;

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

/** Token ids → compact bytes: LEB128 varints, deflated when that is smaller. One format byte in front. */
export function encodeTokens(ids: readonly number[]): Buffer {
  const raw = writeVarints(ids);
  const packed = deflateRawSync(raw, { level: 6 });
  if (packed.length < raw.length) return Buffer.concat([Buffer.of(FORMAT_VARINT_DEFLATE), packed]);
  return Buffer.concat([Buffer.of(FORMAT_VARINT), raw]);
}

export function decodeTokens(buf: Buffer): number[] {
  const format = buf[0];
  const body = buf.subarray(1);
  if (format === FORMAT_VARINT) return readVarints(body);
  if (format === FORMAT_VARINT_DEFLATE) return readVarints(inflateRawSync(body));
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
