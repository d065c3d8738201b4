/**
 * Prefix-chained hashing shared by the GPU prefix cache (16-token blocks) and LMCache (256-token chunks):
 *
 *   h_i = H(h_{i-1} or NONE_HASH, tokens[i*unit : (i+1)*unit], extra_i)     extra_0 = cache_salt, else none
 *
 * Two algorithms:
 * - 'fast' (default): MurmurHash3 x86_128 over 32-bit words [parent(4 words), tokens…, salt marker + salt
 *   hash]. ~0.1 µs per block, so a 128K-token prompt costs well under 1 ms.
 * - 'sha256_cbor': exactly vLLM's `sha256_cbor` recipe: sha256(cbor([parent_bytes, [ids…], extra_keys]))
 *   with NONE_HASH = sha256(cbor("0")) (i.e. PYTHONHASHSEED=0), extra_keys = ["<salt>"] or null.
 *   ~1.3 µs per block (Node's crypto call overhead), so use it only when exact vLLM hashes matter.
 * Lookup keys are a 53-bit number taken from the digest plus a 32-bit check word; the full digest is kept
 * for chaining.
 */
import { createHash } from 'node:crypto';

export type HashAlgo = 'fast' | 'sha256_cbor';

export interface HashChain {
  readonly count: number;
  /** 53-bit map keys, one per unit. */
  readonly keys: Float64Array;
  /** Verification word per unit (second, independent part of the digest). */
  readonly checks: Int32Array;
  /** Full digest of the last unit (the parent for a continuation), or the given parent when count = 0. */
  readonly last: Uint8Array;
}

export interface ChainHasher {
  readonly algo: HashAlgo;
  readonly noneHash: Uint8Array;
  /**
   * Hash `count` consecutive units of `unit` tokens starting at token `startUnit * unit`, chained from
   * `parent`. The salt is mixed into unit 0 only (when `startUnit === 0`).
   */
  chain(
    tokens: ArrayLike<number>,
    unit: number,
    startUnit: number,
    count: number,
    parent: Uint8Array,
    salt: string | null,
  ): HashChain;
}

export function createHasher(algo: HashAlgo): ChainHasher {
  return algo === 'sha256_cbor' ? new Sha256CborHasher() : new FastHasher();
}

// ---------------------------------------------------------------------------------------------------------
// fast: MurmurHash3 x86_128 over 32-bit words

const C1 = 0x239b961b;
const C2 = 0xab0e9789;
const C3 = 0x38b34ae5;
const C4 = 0xa1e38b93;
const SALT_MARKER = 0x5a17c0de;

function rotl(x: number, r: number): number {
  return (x << r) | (x >>> (32 - r));
}

function fmix(h0: number): number {
  let h = h0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h;
}

/** MurmurHash3 x86_128 of `len` 32-bit words; writes 4 words to `out`. */
function murmur128(words: Int32Array, len: number, seed: number, out: Int32Array): void {
  let h1 = seed;
  let h2 = seed;
  let h3 = seed;
  let h4 = seed;
  let i = 0;
  for (; i + 4 <= len; i += 4) {
    let k1 = words[i] as number;
    let k2 = words[i + 1] as number;
    let k3 = words[i + 2] as number;
    let k4 = words[i + 3] as number;
    k1 = Math.imul(rotl(Math.imul(k1, C1), 15), C2);
    h1 ^= k1;
    h1 = rotl(h1, 19);
    h1 = (h1 + h2) | 0;
    h1 = (Math.imul(h1, 5) + 0x561ccd1b) | 0;
    k2 = Math.imul(rotl(Math.imul(k2, C2), 16), C3);
    h2 ^= k2;
    h2 = rotl(h2, 17);
    h2 = (h2 + h3) | 0;
    h2 = (Math.imul(h2, 5) + 0x0bcaa747) | 0;
    k3 = Math.imul(rotl(Math.imul(k3, C3), 17), C4);
    h3 ^= k3;
    h3 = rotl(h3, 15);
    h3 = (h3 + h4) | 0;
    h3 = (Math.imul(h3, 5) + 0x96cd1c35) | 0;
    k4 = Math.imul(rotl(Math.imul(k4, C4), 18), C1);
    h4 ^= k4;
    h4 = rotl(h4, 13);
    h4 = (h4 + h1) | 0;
    h4 = (Math.imul(h4, 5) + 0x32ac3b17) | 0;
  }
  // tail (0..3 words)
  const rest = len - i;
  if (rest >= 3) h3 ^= Math.imul(rotl(Math.imul(words[i + 2] as number, C3), 17), C4);
  if (rest >= 2) h2 ^= Math.imul(rotl(Math.imul(words[i + 1] as number, C2), 16), C3);
  if (rest >= 1) h1 ^= Math.imul(rotl(Math.imul(words[i] as number, C1), 15), C2);
  const bytes = len * 4;
  h1 ^= bytes;
  h2 ^= bytes;
  h3 ^= bytes;
  h4 ^= bytes;
  h1 = (h1 + h2 + h3 + h4) | 0;
  h2 = (h2 + h1) | 0;
  h3 = (h3 + h1) | 0;
  h4 = (h4 + h1) | 0;
  h1 = fmix(h1);
  h2 = fmix(h2);
  h3 = fmix(h3);
  h4 = fmix(h4);
  h1 = (h1 + h2 + h3 + h4) | 0;
  h2 = (h2 + h1) | 0;
  h3 = (h3 + h1) | 0;
  h4 = (h4 + h1) | 0;
  out[0] = h1;
  out[1] = h2;
  out[2] = h3;
  out[3] = h4;
}

function saltWords(salt: string): Int32Array {
  const n = salt.length;
  const w = new Int32Array(n);
  for (let i = 0; i < n; i++) w[i] = salt.charCodeAt(i);
  const out = new Int32Array(4);
  murmur128(w, n, 0x5a17, out);
  return out;
}

class FastHasher implements ChainHasher {
  readonly algo = 'fast' as const;
  readonly noneHash: Uint8Array;
  private words = new Int32Array(4 + 256 + 5);

  constructor() {
    const out = new Int32Array(4);
    murmur128(new Int32Array([0x30]), 1, 0, out);
    this.noneHash = new Uint8Array(out.buffer.slice(0));
  }

  chain(
    tokens: ArrayLike<number>,
    unit: number,
    startUnit: number,
    count: number,
    parent: Uint8Array,
    salt: string | null,
  ): HashChain {
    if (this.words.length < unit + 9) this.words = new Int32Array(unit + 9);
    const words = this.words;
    const keys = new Float64Array(count);
    const checks = new Int32Array(count);
    const lanes = new Int32Array(4);
    const p = new Int32Array(parent.buffer.slice(parent.byteOffset, parent.byteOffset + 16));
    lanes.set(p);
    const saltLanes = salt !== null && startUnit === 0 ? saltWords(salt) : null;
    for (let b = 0; b < count; b++) {
      words[0] = lanes[0] as number;
      words[1] = lanes[1] as number;
      words[2] = lanes[2] as number;
      words[3] = lanes[3] as number;
      const base = (startUnit + b) * unit;
      for (let k = 0; k < unit; k++) words[4 + k] = tokens[base + k] as number;
      let len = 4 + unit;
      if (b === 0 && saltLanes !== null) {
        words[len++] = SALT_MARKER;
        words[len++] = saltLanes[0] as number;
        words[len++] = saltLanes[1] as number;
        words[len++] = saltLanes[2] as number;
        words[len++] = saltLanes[3] as number;
      }
      murmur128(words, len, 0x6c6d, lanes);
      keys[b] = ((lanes[0] as number) >>> 0) * 2097152 + ((lanes[1] as number) >>> 11);
      checks[b] = lanes[2] as number;
    }
    return { count, keys, checks, last: count === 0 ? parent : new Uint8Array(lanes.buffer) };
  }
}

// ---------------------------------------------------------------------------------------------------------
// sha256_cbor: vLLM's reproducible hash

function cborUint(buf: Buffer, pos: number, v: number): number {
  let p = pos;
  if (v < 24) buf[p++] = v;
  else if (v < 256) {
    buf[p++] = 0x18;
    buf[p++] = v;
  } else if (v < 65536) {
    buf[p++] = 0x19;
    buf.writeUInt16BE(v, p);
    p += 2;
  } else {
    buf[p++] = 0x1a;
    buf.writeUInt32BE(v >>> 0, p);
    p += 4;
  }
  return p;
}

/** CBOR header with major type `major` (0..7) and argument `v`. */
function cborHead(buf: Buffer, pos: number, major: number, v: number): number {
  const start = pos;
  const p = cborUint(buf, pos, v);
  buf[start] = (buf[start] as number) | (major << 5);
  return p;
}

class Sha256CborHasher implements ChainHasher {
  readonly algo = 'sha256_cbor' as const;
  readonly noneHash: Uint8Array;
  private buf = Buffer.alloc(64 + 256 * 5 + 1024);

  constructor() {
    // PYTHONHASHSEED=0 ⇒ NONE_HASH = sha256(cbor("0")) = sha256(0x61 0x30)
    this.noneHash = new Uint8Array(
      createHash('sha256')
        .update(Buffer.from([0x61, 0x30]))
        .digest(),
    );
  }

  chain(
    tokens: ArrayLike<number>,
    unit: number,
    startUnit: number,
    count: number,
    parent: Uint8Array,
    salt: string | null,
  ): HashChain {
    const saltBytes = salt !== null && startUnit === 0 ? Buffer.from(salt, 'utf8') : null;
    const need = 48 + unit * 5 + (saltBytes === null ? 0 : saltBytes.length + 16);
    if (this.buf.length < need) this.buf = Buffer.alloc(need);
    const buf = this.buf;
    const keys = new Float64Array(count);
    const checks = new Int32Array(count);
    let prev: Uint8Array = parent;
    for (let b = 0; b < count; b++) {
      let p = 0;
      buf[p++] = 0x83; // array(3)
      p = cborHead(buf, p, 2, prev.length); // bytes(32)
      buf.set(prev, p);
      p += prev.length;
      p = cborHead(buf, p, 4, unit); // array(unit)
      const base = (startUnit + b) * unit;
      for (let k = 0; k < unit; k++) p = cborUint(buf, p, tokens[base + k] as number);
      if (b === 0 && saltBytes !== null) {
        buf[p++] = 0x81; // array(1)
        p = cborHead(buf, p, 3, saltBytes.length); // text(n)
        saltBytes.copy(buf, p);
        p += saltBytes.length;
      } else {
        buf[p++] = 0xf6; // None
      }
      const digest = createHash('sha256').update(buf.subarray(0, p)).digest();
      keys[b] = digest.readUIntBE(0, 6) * 32 + ((digest[6] as number) >>> 3);
      checks[b] = digest.readInt32BE(8);
      prev = new Uint8Array(digest);
    }
    return { count, keys, checks, last: prev };
  }
}

/** Hex form of a digest (for debugging output). */
export function digestHex(d: Uint8Array): string {
  return Buffer.from(d.buffer, d.byteOffset, d.byteLength).toString('hex');
}
