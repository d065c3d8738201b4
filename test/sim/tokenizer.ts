/**
 * Deterministic, reversible tokenizer of the simulator (a stand-in for a Llama-3 BPE tokenizer).
 *
 * Id layout (static, identical in every process — nothing is random or trained):
 *   0..255         byte tokens. Ids < 128 decode to that ASCII character; 128..255 are UTF-8 (WTF-8) bytes
 *                  of non-ASCII text, reassembled on decode (byte fallback, so any JS string round-trips).
 *   256..281       whitespace runs: 2..16 spaces, 2..8 newlines, 2..4 tabs, "\r\n".
 *   282..1391      digit groups of 1..3 digits (numbers split left to right in groups of three, as Llama 3).
 *   1392..111007   letter chunks, each with and without one leading space: lowercase 1..3 letters,
 *                  Capitalised (1 upper + 0..2 lower), UPPERCASE 2..3 letters.
 *   111008..       whole words from words.ts (4 variants each: word, " word", Word, " Word").
 *   ..127999       unused (decode to the empty string).
 *   128000..128255 special tokens, Llama-3 names: <|begin_of_text|>=128000, <|end_of_text|>=128001,
 *                  <|start_header_id|>=128006, <|end_header_id|>=128007, <|eom_id|>=128008,
 *                  <|eot_id|>=128009, <|python_tag|>=128010, the rest <|reserved_special_token_N|>.
 * Pre-tokenisation: a word is a run of ASCII letters with at most one leading space; a known word is one
 * token, any other word is cut into 1..3 letter chunks (about 1–2 tokens per word). Special-token text in
 * the input is parsed as the special token (HF default), so decode(encode(s)) === s for every string.
 */
import { WORDS } from './words.js';

export const VOCAB_SIZE = 128256;

export const BOS_ID = 128000;
export const EOS_ID = 128001;
export const START_HEADER_ID = 128006;
export const END_HEADER_ID = 128007;
export const EOM_ID = 128008;
export const EOT_ID = 128009;

const WS_BASE = 256;
const SPACE_RUN_MAX = 16; // ids WS_BASE + (n-2), n = 2..16
const NL_BASE = WS_BASE + (SPACE_RUN_MAX - 1); // 271
const NL_RUN_MAX = 8;
const TAB_BASE = NL_BASE + (NL_RUN_MAX - 1); // 278
const TAB_RUN_MAX = 4;
const CRLF_ID = TAB_BASE + (TAB_RUN_MAX - 1); // 281
const DIGIT_BASE = CRLF_ID + 1; // 282: 10 + 100 + 1000 ids
const DIGIT_COUNT = 1110;
const CHUNK3 = 18278; // 26 + 676 + 17576
const UPPER3 = 18252; // 676 + 17576
const LOWER_BASE = DIGIT_BASE + DIGIT_COUNT; // 1392
const SP_LOWER_BASE = LOWER_BASE + CHUNK3;
const CAP_BASE = SP_LOWER_BASE + CHUNK3;
const SP_CAP_BASE = CAP_BASE + CHUNK3;
const UPPER_BASE = SP_CAP_BASE + CHUNK3;
const SP_UPPER_BASE = UPPER_BASE + UPPER3;
const WORD_BASE = SP_UPPER_BASE + UPPER3; // 111008
const SPECIAL_BASE = 128000;
const MAX_WORD_LEN = 24;

const SPECIAL_NAMES: readonly string[] = buildSpecialNames();
const SPECIAL_IDS = new Map<string, number>(SPECIAL_NAMES.map((name, i) => [name, SPECIAL_BASE + i]));
const MAX_SPECIAL_LEN = Math.max(...SPECIAL_NAMES.map((s) => s.length));

function buildSpecialNames(): string[] {
  const names: string[] = [];
  const fixed = new Map<number, string>([
    [0, '<|begin_of_text|>'],
    [1, '<|end_of_text|>'],
    [4, '<|finetune_right_pad_id|>'],
    [6, '<|start_header_id|>'],
    [7, '<|end_header_id|>'],
    [8, '<|eom_id|>'],
    [9, '<|eot_id|>'],
    [10, '<|python_tag|>'],
  ]);
  let reserved = 0;
  for (let i = 0; i < 256; i++) {
    const name = fixed.get(i);
    names.push(name ?? `<|reserved_special_token_${reserved++}|>`);
  }
  return names;
}

/**
 * Whole-word lookup without allocating substrings: open addressing over a hash of the letters (the leading
 * space is a separate flag), verified char by char against the stored word.
 */
const WORD_TEXT: string[] = [];
const TABLE_BITS = 14;
const TABLE_MASK = (1 << TABLE_BITS) - 1;
const wordTable = new Int32Array(1 << TABLE_BITS).fill(-1); // slot → index into WORD_TEXT (letters only)
const WORD_LETTERS: string[] = [];

function hashLetters(text: string, start: number, end: number): number {
  let h = 0x811c9dc5;
  for (let k = start; k < end; k++) h = Math.imul(h ^ text.charCodeAt(k), 0x01000193);
  return (h ^ (h >>> 15)) & TABLE_MASK;
}

function addWord(letters: string, idBase: number): void {
  let slot = hashLetters(letters, 0, letters.length);
  while ((wordTable[slot] as number) >= 0) slot = (slot + 1) & TABLE_MASK;
  wordTable[slot] = WORD_LETTERS.length;
  WORD_LETTERS.push(letters);
  WORD_BASE_OF.push(idBase);
}
const WORD_BASE_OF: number[] = [];

for (let i = 0; i < WORDS.length; i++) {
  const w = WORDS[i] as string;
  const cap = (w[0] as string).toUpperCase() + w.slice(1);
  WORD_TEXT.push(w, ` ${w}`, cap, ` ${cap}`);
  addWord(w, WORD_BASE + i * 4);
  addWord(cap, WORD_BASE + i * 4 + 2);
}
const WORD_END = WORD_BASE + WORD_TEXT.length;
if (WORD_END > SPECIAL_BASE) throw new Error('sim tokenizer: word table overflows into special ids');

function lookupWord(text: string, start: number, end: number, spaced: boolean): number | undefined {
  let slot = hashLetters(text, start, end);
  const len = end - start;
  for (;;) {
    const idx = wordTable[slot] as number;
    if (idx < 0) return undefined;
    const cand = WORD_LETTERS[idx] as string;
    if (cand.length === len) {
      let k = 0;
      while (k < len && cand.charCodeAt(k) === text.charCodeAt(start + k)) k++;
      if (k === len) return (WORD_BASE_OF[idx] as number) + (spaced ? 1 : 0);
    }
    slot = (slot + 1) & TABLE_MASK;
  }
}

const CHUNK_OFFSETS = [0, 0, 26, 702]; // by chunk length (1..3)
const UPPER_OFFSETS = [0, 0, 0, 676]; // by chunk length (2..3)

function isLower(c: number): boolean {
  return c >= 97 && c <= 122;
}
function isUpper(c: number): boolean {
  return c >= 65 && c <= 90;
}
function isLetter(c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 65 && c <= 90);
}
function isDigit(c: number): boolean {
  return c >= 48 && c <= 57;
}

export interface EncodeOptions {
  /** Recognise special-token text such as `<|eot_id|>` (default true, like HF tokenizers). */
  parseSpecial?: boolean;
}

/** Encode text to token ids (no BOS is added; see {@link encodeWithSpecial}). */
export function encode(text: string, opts: EncodeOptions = {}): number[] {
  const out: number[] = [];
  encodeInto(text, out, opts.parseSpecial ?? true);
  return out;
}

/** Encode as vLLM's prompt path does: BOS first when `addSpecialTokens`. */
export function encodeWithSpecial(text: string, addSpecialTokens: boolean): number[] {
  const out: number[] = addSpecialTokens ? [BOS_ID] : [];
  encodeInto(text, out, true);
  return out;
}

export function encodeInto(text: string, out: number[], parseSpecial: boolean): void {
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (isLetter(c)) {
      i = emitWord(text, i, false, out);
    } else if (c === 32) {
      let j = i + 1;
      while (j < n && text.charCodeAt(j) === 32) j++;
      const followedByLetter = j < n && isLetter(text.charCodeAt(j));
      const run = followedByLetter ? j - i - 1 : j - i;
      emitRun(run, 32, out);
      i += run;
      if (followedByLetter) i = emitWord(text, i + 1, true, out);
    } else if (isDigit(c)) {
      let j = i;
      while (j < n && isDigit(text.charCodeAt(j))) j++;
      while (i < j) {
        const len = Math.min(3, j - i);
        let v = 0;
        for (let k = 0; k < len; k++) v = v * 10 + (text.charCodeAt(i + k) - 48);
        out.push(DIGIT_BASE + (len === 1 ? 0 : len === 2 ? 10 : 110) + v);
        i += len;
      }
    } else if (c === 10 || c === 9) {
      let j = i + 1;
      while (j < n && text.charCodeAt(j) === c) j++;
      emitRun(j - i, c, out);
      i = j;
    } else if (c === 13 && i + 1 < n && text.charCodeAt(i + 1) === 10) {
      out.push(CRLF_ID);
      i += 2;
    } else if (c === 60 && parseSpecial && i + 1 < n && text.charCodeAt(i + 1) === 124) {
      const id = matchSpecial(text, i);
      if (id === undefined) {
        out.push(60);
        i++;
      } else {
        out.push(id);
        i += (SPECIAL_NAMES[id - SPECIAL_BASE] as string).length;
      }
    } else if (c < 128) {
      out.push(c);
      i++;
    } else {
      i = emitNonAscii(text, i, out);
    }
  }
}

function matchSpecial(text: string, i: number): number | undefined {
  const window = text.slice(i, i + MAX_SPECIAL_LEN);
  const end = window.indexOf('|>', 2);
  if (end < 0) return undefined;
  return SPECIAL_IDS.get(window.slice(0, end + 2));
}

function emitRun(run: number, ch: number, out: number[]): void {
  const max = ch === 32 ? SPACE_RUN_MAX : ch === 10 ? NL_RUN_MAX : TAB_RUN_MAX;
  const base = ch === 32 ? WS_BASE : ch === 10 ? NL_BASE : TAB_BASE;
  let left = run;
  while (left > 0) {
    const take = Math.min(max, left);
    out.push(take === 1 ? ch : base + take - 2);
    left -= take;
  }
}

/** Emit the letter run starting at `start`; `spaced` = a single space precedes it (at start-1). */
function emitWord(text: string, start: number, spaced: boolean, out: number[]): number {
  const n = text.length;
  let end = start;
  while (end < n && isLetter(text.charCodeAt(end))) end++;
  const len = end - start;
  if (len >= 4 && len <= MAX_WORD_LEN) {
    const id = lookupWord(text, start, end, spaced);
    if (id !== undefined) {
      out.push(id);
      return end;
    }
  }
  let j = start;
  let first = spaced;
  while (j < end) {
    const c = text.charCodeAt(j);
    if (isLower(c)) {
      let k = 0;
      let idx = 0;
      while (k < 3 && j + k < end && isLower(text.charCodeAt(j + k))) {
        idx = idx * 26 + (text.charCodeAt(j + k) - 97);
        k++;
      }
      out.push((first ? SP_LOWER_BASE : LOWER_BASE) + (CHUNK_OFFSETS[k] as number) + idx);
      j += k;
    } else {
      let u = 0;
      while (u < 3 && j + u < end && isUpper(text.charCodeAt(j + u))) u++;
      if (u === 1) {
        let k = 1;
        let idx = c - 65;
        while (k < 3 && j + k < end && isLower(text.charCodeAt(j + k))) {
          idx = idx * 26 + (text.charCodeAt(j + k) - 97);
          k++;
        }
        out.push((first ? SP_CAP_BASE : CAP_BASE) + (CHUNK_OFFSETS[k] as number) + idx);
        j += k;
      } else {
        let idx = 0;
        for (let k = 0; k < u; k++) idx = idx * 26 + (text.charCodeAt(j + k) - 65);
        out.push((first ? SP_UPPER_BASE : UPPER_BASE) + (UPPER_OFFSETS[u] as number) + idx);
        j += u;
      }
    }
    first = false;
  }
  return end;
}

/** WTF-8 encode one code point (or lone surrogate) into byte tokens 128..255 / ASCII. */
function emitNonAscii(text: string, i: number, out: number[]): number {
  let cp = text.charCodeAt(i);
  let width = 1;
  if (cp >= 0xd800 && cp <= 0xdbff && i + 1 < text.length) {
    const lo = text.charCodeAt(i + 1);
    if (lo >= 0xdc00 && lo <= 0xdfff) {
      cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
      width = 2;
    }
  }
  if (cp < 0x800) {
    out.push(0xc0 | (cp >> 6), 0x80 | (cp & 63));
  } else if (cp < 0x10000) {
    out.push(0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 63), 0x80 | (cp & 63));
  } else {
    out.push(0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 63), 0x80 | ((cp >> 6) & 63), 0x80 | (cp & 63));
  }
  return i + width;
}

function letters(idx: number, len: number, upperFirst: boolean, allUpper: boolean): string {
  const codes: number[] = new Array(len);
  let v = idx;
  for (let k = len - 1; k >= 0; k--) {
    const base = allUpper || (upperFirst && k === 0) ? 65 : 97;
    codes[k] = base + (v % 26);
    v = Math.floor(v / 26);
  }
  return String.fromCharCode(...codes);
}

function chunkText(rel: number, upperFirst: boolean): string {
  if (rel < 26) return letters(rel, 1, upperFirst, false);
  if (rel < 702) return letters(rel - 26, 2, upperFirst, false);
  return letters(rel - 702, 3, upperFirst, false);
}

const textCache: (string | undefined)[] = new Array(VOCAB_SIZE);

/** Text of a non-byte token (ids 0..127 are their ASCII char; 128..255 have no standalone text). */
export function tokenText(id: number): string {
  const cached = textCache[id];
  if (cached !== undefined) return cached;
  const t = computeTokenText(id);
  textCache[id] = t;
  return t;
}

function computeTokenText(id: number): string {
  if (id < 128) return String.fromCharCode(id);
  if (id < 256) return '';
  if (id < NL_BASE) return ' '.repeat(id - WS_BASE + 2);
  if (id < TAB_BASE) return '\n'.repeat(id - NL_BASE + 2);
  if (id < CRLF_ID) return '\t'.repeat(id - TAB_BASE + 2);
  if (id === CRLF_ID) return '\r\n';
  if (id < LOWER_BASE) {
    const rel = id - DIGIT_BASE;
    if (rel < 10) return String(rel);
    if (rel < 110) return String(rel - 10).padStart(2, '0');
    return String(rel - 110).padStart(3, '0');
  }
  if (id < SP_LOWER_BASE) return chunkText(id - LOWER_BASE, false);
  if (id < CAP_BASE) return ` ${chunkText(id - SP_LOWER_BASE, false)}`;
  if (id < SP_CAP_BASE) return chunkText(id - CAP_BASE, true);
  if (id < UPPER_BASE) return ` ${chunkText(id - SP_CAP_BASE, true)}`;
  if (id < SP_UPPER_BASE) {
    const rel = id - UPPER_BASE;
    return rel < 676 ? letters(rel, 2, false, true) : letters(rel - 676, 3, false, true);
  }
  if (id < WORD_BASE) {
    const rel = id - SP_UPPER_BASE;
    return ` ${rel < 676 ? letters(rel, 2, false, true) : letters(rel - 676, 3, false, true)}`;
  }
  if (id < WORD_END) return WORD_TEXT[id - WORD_BASE] as string;
  if (id < SPECIAL_BASE) return '';
  if (id < VOCAB_SIZE) return SPECIAL_NAMES[id - SPECIAL_BASE] as string;
  return '';
}

/** Display form of a token, like HF `convert_ids_to_tokens` (byte tokens ≥ 128 as `<0xNN>`). */
export function tokenStr(id: number): string {
  if (id >= 128 && id < 256) return `<0x${id.toString(16).toUpperCase()}>`;
  return tokenText(id);
}

export function isValidTokenId(id: unknown): id is number {
  return typeof id === 'number' && Number.isInteger(id) && id >= 0 && id < VOCAB_SIZE;
}

export interface DecodeOptions {
  /** Drop special tokens from the text (vLLM `skip_special_tokens`, default false here). */
  skipSpecialTokens?: boolean;
}

/** Decode token ids to text; the exact inverse of {@link encode}. */
export function decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
  const skip = opts.skipSpecialTokens ?? false;
  let outText = '';
  let bytes: number[] | null = null;
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i] as number;
    if (id >= 128 && id < 256) {
      if (bytes === null) bytes = [];
      bytes.push(id);
      continue;
    }
    if (bytes !== null) {
      outText += decodeWtf8(bytes);
      bytes = null;
    }
    if (skip && id >= SPECIAL_BASE) continue;
    outText += tokenText(id);
  }
  if (bytes !== null) outText += decodeWtf8(bytes);
  return outText;
}

/** Lenient WTF-8 decoder: surrogate code points are allowed (lone surrogates round-trip), junk → U+FFFD. */
function decodeWtf8(bytes: number[]): string {
  let s = '';
  let i = 0;
  while (i < bytes.length) {
    const b0 = bytes[i] as number;
    const need = b0 >= 0xf0 && b0 < 0xf8 ? 3 : b0 >= 0xe0 ? 2 : b0 >= 0xc0 ? 1 : -1;
    if (need < 0 || !continuation(bytes, i + 1, need)) {
      s += '\ufffd';
      i++;
      continue;
    }
    let cp = need === 1 ? b0 & 0x1f : need === 2 ? b0 & 0x0f : b0 & 0x07;
    for (let k = 1; k <= need; k++) cp = (cp << 6) | ((bytes[i + k] as number) & 63);
    if (cp > 0x10ffff) {
      s += '\ufffd';
      i++;
      continue;
    }
    s += String.fromCodePoint(cp);
    i += need + 1;
  }
  return s;
}

function continuation(bytes: number[], from: number, count: number): boolean {
  if (from + count > bytes.length) return false;
  for (let k = 0; k < count; k++) {
    const b = bytes[from + k] as number;
    if (b < 0x80 || b > 0xbf) return false;
  }
  return true;
}
