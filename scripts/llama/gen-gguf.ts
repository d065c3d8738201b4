/**
 * Dependency-free GGUF v3 writer for a deterministic random-weight llama-architecture model.
 *
 *   npm run llama:model -- --out FILE --size tiny|bench [--seed N] [--ctx N]
 *
 * Same arguments ⇒ byte-identical file. The weights are random, so the text is gibberish, but the next token
 * is a deterministic function of the KV cache, which is what freeze/thaw tests need.
 *
 * Vocab: SentencePiece-style ("llama" tokenizer model) with byte fallback, ~1028 tokens. Two traps avoided:
 *  - byte-fallback tokens are typed CONTROL (not BYTE) and their output.weight rows (with <unk>, <s>, </s>) are
 *    zeroed, so greedy decoding never emits a stray byte (llama-server answers 500 on invalid UTF-8) or EOS;
 *  - `llama.context_length` caps the server's n_ctx, so it defaults to 8192.
 */
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export type ModelSize = 'tiny' | 'bench';

export interface ModelSpec {
  dim: number;
  layers: number;
  heads: number;
  kvHeads: number;
  ff: number;
}

export const MODEL_PRESETS: Readonly<Record<ModelSize, ModelSpec>> = {
  tiny: { dim: 256, layers: 4, heads: 4, kvHeads: 4, ff: 768 },
  bench: { dim: 1024, layers: 8, heads: 16, kvHeads: 4, ff: 2816 },
};

export const DEFAULT_SEED = 1;
export const DEFAULT_CTX = 8192;

export interface WriteModelOptions {
  out: string;
  size?: ModelSize;
  seed?: number;
  ctx?: number;
  /** override preset dimensions (e.g. a differently shaped "foreign" model for negative tests) */
  spec?: Partial<ModelSpec>;
}

export interface WrittenModel {
  path: string;
  size: ModelSize;
  seed: number;
  ctx: number;
  spec: ModelSpec;
  nVocab: number;
  nParams: number;
  bytes: number;
}

// ---- GGUF constants (ggml/include/gguf.h, ggml.h) ----
const GGUF_MAGIC = 0x46554747; // "GGUF" little-endian
const GGUF_VERSION = 3;
const ALIGNMENT = 32;
const GType = { U32: 4, I32: 5, F32: 6, BOOL: 7, STRING: 8, ARRAY: 9 } as const;
const GGML_TYPE_F32 = 0;
const GGML_TYPE_F16 = 1;
const FILE_TYPE_MOSTLY_F16 = 1;

// ---- token types (gguf-py TokenType) ----
const TOKEN_NORMAL = 1;
const TOKEN_UNKNOWN = 2;
const TOKEN_CONTROL = 3;

export const TOKEN_UNK = 0;
export const TOKEN_BOS = 1;
export const TOKEN_EOS = 2;
/** ids below this (unk, bos, eos, 256 byte tokens) never win greedy decoding */
export const FIRST_NORMAL_TOKEN = 3 + 256;
export const N_VOCAB = 1028;

/** Minimal chat template: `<|role|>\ncontent\n` per message, then `<|assistant|>\n`. */
export const CHAT_TEMPLATE =
  "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

const WORDS = (
  'the of and to in is was for that on as with by he at from his it an were are which this be or has had not ' +
  'but first one their its new after who they have her she two been other when there all during into school ' +
  'time may years more most only over city some world would where later up such used many can state about ' +
  'national out known university united then made three also we you will your what said could each how people ' +
  'work name like than just system data model window context token cache memory server slot save load freeze ' +
  'thaw clone search conversation message user assistant hello world test value number string list file path ' +
  'write read open close start stop run make build good great small large long short high low left right ' +
  'before under between through while because should these those very well back still even way day year ' +
  'thing man woman child life hand part place case week company group problem fact point government question ' +
  'night home water room mother area money story month lot study book eye job word business issue side kind'
).split(' ');

interface Vocab {
  tokens: string[];
  scores: number[];
  types: number[];
}

/** Deterministic SentencePiece-style vocab of exactly N_VOCAB tokens; every multi-char piece is reachable by merges. */
export function buildVocab(): Vocab {
  const tokens: string[] = ['<unk>', '<s>', '</s>'];
  const types: number[] = [TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_CONTROL];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(TOKEN_CONTROL);
  }
  const seen = new Set(tokens);
  const add = (piece: string): void => {
    if (tokens.length >= N_VOCAB || seen.has(piece)) return;
    seen.add(piece);
    tokens.push(piece);
    types.push(TOKEN_NORMAL);
  };
  add('\u2581');
  add('\n');
  for (let c = 33; c < 127; c++) add(String.fromCharCode(c));
  for (let c = 97; c < 123; c++) add(`\u2581${String.fromCharCode(c)}`);
  for (const w of WORDS) {
    const piece = `\u2581${w}`;
    for (let n = 3; n <= piece.length; n++) add(piece.slice(0, n));
  }
  const letters = 'etaoinshrdlucmfwypvbgkqjxz';
  for (const a of letters) for (const b of letters) add(a + b);
  if (tokens.length !== N_VOCAB) throw new Error(`vocab has ${tokens.length} tokens, want ${N_VOCAB}`);
  // SentencePiece scores: higher merges first; specials and bytes 0.
  const scores = tokens.map((_, i) => (i < FIRST_NORMAL_TOKEN ? 0 : -(i - FIRST_NORMAL_TOKEN)));
  return { tokens, scores, types };
}

// ---- deterministic PRNG (sfc32 seeded through a string hash) ----
function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

function rng(seed: number, name: string): () => number {
  let a = hash32(`a:${seed}:${name}`);
  let b = hash32(`b:${seed}:${name}`);
  let c = hash32(`c:${seed}:${name}`);
  let d = 1;
  const next = (): number => {
    a >>>= 0;
    b >>>= 0;
    c >>>= 0;
    d >>>= 0;
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
  for (let i = 0; i < 12; i++) next();
  return next;
}

// ---- float32 -> float16 (round to nearest even) ----
const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);
function toHalf(v: number): number {
  f32buf[0] = v;
  const x = u32buf[0] as number;
  const sign = (x >>> 16) & 0x8000;
  const exp = ((x >>> 23) & 0xff) - 127 + 15;
  let mant = x & 0x7fffff;
  if (exp >= 31) return sign | 0x7c00;
  if (exp <= 0) {
    if (exp < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - exp;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1) === 1)) h++;
    return sign | h;
  }
  let h = (exp << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h++;
  return sign | h;
}

// ---- tensors ----
interface TensorDef {
  name: string;
  /** ggml order: ne[0] (row length) first */
  ne: number[];
  type: typeof GGML_TYPE_F32 | typeof GGML_TYPE_F16;
  /** 'ones' for norms, otherwise uniform with this std */
  init: 'ones' | { std: number; zeroRowsBelow?: number };
}

function tensorDefs(spec: ModelSpec, nVocab: number): TensorDef[] {
  const { dim, layers, heads, kvHeads, ff } = spec;
  const headDim = dim / heads;
  const kvDim = headDim * kvHeads;
  const w = (name: string, ne: number[], std: number): TensorDef => ({ name, ne, type: GGML_TYPE_F16, init: { std } });
  const norm = (name: string): TensorDef => ({ name, ne: [dim], type: GGML_TYPE_F32, init: 'ones' });
  const defs: TensorDef[] = [w('token_embd.weight', [dim, nVocab], 1)];
  for (let l = 0; l < layers; l++) {
    defs.push(
      norm(`blk.${l}.attn_norm.weight`),
      w(`blk.${l}.attn_q.weight`, [dim, dim], 1 / Math.sqrt(dim)),
      w(`blk.${l}.attn_k.weight`, [dim, kvDim], 1 / Math.sqrt(dim)),
      w(`blk.${l}.attn_v.weight`, [dim, kvDim], 1 / Math.sqrt(dim)),
      w(`blk.${l}.attn_output.weight`, [dim, dim], 1 / Math.sqrt(dim)),
      norm(`blk.${l}.ffn_norm.weight`),
      w(`blk.${l}.ffn_gate.weight`, [dim, ff], 1 / Math.sqrt(dim)),
      w(`blk.${l}.ffn_up.weight`, [dim, ff], 1 / Math.sqrt(dim)),
      w(`blk.${l}.ffn_down.weight`, [ff, dim], 1 / Math.sqrt(ff)),
    );
  }
  defs.push(norm('output_norm.weight'), {
    name: 'output.weight',
    ne: [dim, nVocab],
    type: GGML_TYPE_F16,
    // logit std ≈ 2.5; rows of unk/bos/eos/bytes are zero so their logit is exactly 0
    init: { std: 2.5 / Math.sqrt(dim), zeroRowsBelow: FIRST_NORMAL_TOKEN },
  });
  return defs;
}

function tensorBytes(t: TensorDef): number {
  const n = t.ne.reduce((a, b) => a * b, 1);
  return n * (t.type === GGML_TYPE_F32 ? 4 : 2);
}

function tensorData(t: TensorDef, seed: number): Buffer {
  const n = t.ne.reduce((a, b) => a * b, 1);
  if (t.init === 'ones') {
    const out = Buffer.alloc(n * 4);
    for (let i = 0; i < n; i++) out.writeFloatLE(1, i * 4);
    return out;
  }
  const rand = rng(seed, t.name);
  const amp = t.init.std * Math.sqrt(3); // uniform[-amp, amp) has this std
  const rowLen = t.ne[0] as number;
  const zeroBelow = (t.init.zeroRowsBelow ?? 0) * rowLen;
  const half = new Uint16Array(n);
  for (let i = 0; i < n; i++) {
    const v = (rand() * 2 - 1) * amp;
    half[i] = i < zeroBelow ? 0 : toHalf(v);
  }
  return Buffer.from(half.buffer, half.byteOffset, half.byteLength);
}

// ---- header serialisation ----
class HeaderWriter {
  private readonly parts: Buffer[] = [];
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.parts.push(b);
  }
  u64(v: number): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.parts.push(b);
  }
  str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.parts.push(b);
  }
  kvU32(key: string, v: number): void {
    this.str(key);
    this.u32(GType.U32);
    this.u32(v);
  }
  kvF32(key: string, v: number): void {
    this.str(key);
    this.u32(GType.F32);
    const b = Buffer.alloc(4);
    b.writeFloatLE(v);
    this.parts.push(b);
  }
  kvBool(key: string, v: boolean): void {
    this.str(key);
    this.u32(GType.BOOL);
    this.parts.push(Buffer.from([v ? 1 : 0]));
  }
  kvStr(key: string, v: string): void {
    this.str(key);
    this.u32(GType.STRING);
    this.str(v);
  }
  kvStrArr(key: string, vs: readonly string[]): void {
    this.str(key);
    this.u32(GType.ARRAY);
    this.u32(GType.STRING);
    this.u64(vs.length);
    for (const v of vs) this.str(v);
  }
  kvNumArr(key: string, type: typeof GType.F32 | typeof GType.I32, vs: readonly number[]): void {
    this.str(key);
    this.u32(GType.ARRAY);
    this.u32(type);
    this.u64(vs.length);
    const b = Buffer.alloc(vs.length * 4);
    vs.forEach((v, i) => {
      if (type === GType.F32) b.writeFloatLE(v, i * 4);
      else b.writeInt32LE(v, i * 4);
    });
    this.parts.push(b);
  }
  bytes(): Buffer {
    return Buffer.concat(this.parts);
  }
}

const align = (n: number): number => Math.ceil(n / ALIGNMENT) * ALIGNMENT;

/** Writes the model to `out` (atomically, via a temp file) and returns what was written. */
export async function writeModel(opts: WriteModelOptions): Promise<WrittenModel> {
  const size = opts.size ?? 'tiny';
  const seed = opts.seed ?? DEFAULT_SEED;
  const ctx = opts.ctx ?? DEFAULT_CTX;
  const spec: ModelSpec = { ...MODEL_PRESETS[size], ...opts.spec };
  for (const [k, v] of Object.entries(spec)) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`bad ${k} ${v}`);
  }
  if (spec.dim % spec.heads !== 0 || spec.heads % spec.kvHeads !== 0) throw new Error('dim/heads/kvHeads mismatch');
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new Error(`bad seed ${seed}`);
  if (!Number.isInteger(ctx) || ctx < 16) throw new Error(`bad ctx ${ctx}`);
  const vocab = buildVocab();
  const nVocab = vocab.tokens.length;
  const defs = tensorDefs(spec, nVocab);

  const kv: Array<(h: HeaderWriter) => void> = [
    (h) => h.kvStr('general.architecture', 'llama'),
    (h) => h.kvStr('general.name', `cwm-random-${size}-s${seed}${opts.spec === undefined ? '' : '-custom'}`),
    (h) => h.kvU32('general.alignment', ALIGNMENT),
    (h) => h.kvU32('general.file_type', FILE_TYPE_MOSTLY_F16),
    (h) => h.kvU32('llama.context_length', ctx),
    (h) => h.kvU32('llama.embedding_length', spec.dim),
    (h) => h.kvU32('llama.block_count', spec.layers),
    (h) => h.kvU32('llama.feed_forward_length', spec.ff),
    (h) => h.kvU32('llama.attention.head_count', spec.heads),
    (h) => h.kvU32('llama.attention.head_count_kv', spec.kvHeads),
    (h) => h.kvU32('llama.rope.dimension_count', spec.dim / spec.heads),
    (h) => h.kvF32('llama.rope.freq_base', 10000),
    (h) => h.kvF32('llama.attention.layer_norm_rms_epsilon', 1e-5),
    (h) => h.kvU32('llama.vocab_size', nVocab),
    (h) => h.kvStr('tokenizer.ggml.model', 'llama'),
    (h) => h.kvStrArr('tokenizer.ggml.tokens', vocab.tokens),
    (h) => h.kvNumArr('tokenizer.ggml.scores', GType.F32, vocab.scores),
    (h) => h.kvNumArr('tokenizer.ggml.token_type', GType.I32, vocab.types),
    (h) => h.kvU32('tokenizer.ggml.unknown_token_id', TOKEN_UNK),
    (h) => h.kvU32('tokenizer.ggml.bos_token_id', TOKEN_BOS),
    (h) => h.kvU32('tokenizer.ggml.eos_token_id', TOKEN_EOS),
    (h) => h.kvBool('tokenizer.ggml.add_bos_token', true),
    (h) => h.kvBool('tokenizer.ggml.add_eos_token', false),
    (h) => h.kvBool('tokenizer.ggml.add_space_prefix', true),
    (h) => h.kvStr('tokenizer.chat_template', CHAT_TEMPLATE),
  ];

  const h = new HeaderWriter();
  h.u32(GGUF_MAGIC);
  h.u32(GGUF_VERSION);
  h.u64(defs.length);
  h.u64(kv.length);
  for (const write of kv) write(h);
  let offset = 0;
  for (const t of defs) {
    h.str(t.name);
    h.u32(t.ne.length);
    for (const d of t.ne) h.u64(d);
    h.u32(t.type);
    h.u64(offset);
    offset = align(offset + tensorBytes(t));
  }
  const header = h.bytes();

  const out = path.resolve(opts.out);
  await mkdir(path.dirname(out), { recursive: true });
  const tmp = `${out}.tmp-${process.pid}`;
  const ws = createWriteStream(tmp);
  const write = async (b: Buffer): Promise<void> => {
    if (!ws.write(b)) await once(ws, 'drain');
  };
  try {
    await write(header);
    await write(Buffer.alloc(align(header.length) - header.length));
    for (const t of defs) {
      const data = tensorData(t, seed);
      await write(data);
      await write(Buffer.alloc(align(data.length) - data.length));
    }
    ws.end();
    await once(ws, 'finish');
    await rename(tmp, out);
  } catch (err) {
    ws.destroy();
    await rm(tmp, { force: true });
    throw err;
  }
  const nParams = defs.reduce((a, t) => a + t.ne.reduce((x, y) => x * y, 1), 0);
  return { path: out, size, seed, ctx, spec, nVocab, nParams, bytes: (await stat(out)).size };
}

function parseArgs(argv: readonly string[]): WriteModelOptions {
  const get = (flag: string): string | undefined => {
    const i = argv.indexOf(flag);
    if (i < 0) return undefined;
    const v = argv[i + 1];
    if (v === undefined || v.startsWith('--')) throw new Error(`${flag} needs a value`);
    return v;
  };
  const known = new Set(['--out', '--size', '--seed', '--ctx']);
  for (const a of argv) if (a.startsWith('--') && !known.has(a)) throw new Error(`unknown option ${a}`);
  const out = get('--out');
  if (out === undefined) throw new Error('--out FILE is required');
  const size = get('--size') ?? 'tiny';
  if (size !== 'tiny' && size !== 'bench') throw new Error(`--size must be tiny or bench, not ${size}`);
  const opts: WriteModelOptions = { out, size };
  const seed = get('--seed');
  if (seed !== undefined) opts.seed = Number(seed);
  const ctx = get('--ctx');
  if (ctx !== undefined) opts.ctx = Number(ctx);
  return opts;
}

async function main(): Promise<void> {
  const t0 = Date.now();
  const m = await writeModel(parseArgs(process.argv.slice(2)));
  process.stderr.write(
    `[llama:model] ${m.size} seed=${m.seed} ctx=${m.ctx} params=${m.nParams} vocab=${m.nVocab} ` +
      `bytes=${m.bytes} in ${Date.now() - t0} ms\n`,
  );
  process.stdout.write(`${m.path}\n`);
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    process.stderr.write(`[llama:model] FAILED: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
}
