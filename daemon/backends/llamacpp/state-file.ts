/**
 * llama.cpp slot state files (`POST /slots/{id}?action=save`): names, checksums, and the packed token list in
 * the header, so the daemon can prove what a file holds before it asks the server to restore it.
 *
 * Layout (llama_state_seq_save_file, llama.cpp v0.4.0): u32 magic 'ggsq' (0x67677371), u32 version 3,
 * u32 n_packed, then n_packed i32 words [-1, 1, n_tokens, tokens…, n_media], then the opaque KV data.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { StateFileRecord } from '../../registry/records.js';

export const STATE_MAGIC = 0x67677371;
export const STATE_VERSION = 3;
const FLAT_NAME = /^[A-Za-z0-9_-]{1,120}\.bin$/;

/** The state-file name of a window: its id (base64url, so already flat) plus `.bin`. */
export function stateFileName(windowId: string): string {
  const name = `${windowId}.bin`;
  if (!FLAT_NAME.test(name)) throw new Error(`window id ${JSON.stringify(windowId)} cannot name a state file`);
  return name;
}

/** Only flat `[A-Za-z0-9_-]+.bin` names are ever joined to the slot directory (llama-server also refuses others). */
export function isFlatStateName(name: string): boolean {
  return FLAT_NAME.test(name);
}

export function statePath(slotDir: string, name: string): string {
  if (!isFlatStateName(name)) throw new Error(`not a flat state-file name: ${JSON.stringify(name)}`);
  return path.join(slotDir, name);
}

export interface StateHeader {
  version: number;
  /** Token ids the slot held when it was saved. */
  tokens: number[];
}

/** Parse the header of a state file; null when the bytes are not a llama.cpp sequence state we understand. */
export function parseStateHeader(head: Buffer, fileSize: number = head.length): StateHeader | null {
  if (head.length < 12) return null;
  if (head.readUInt32LE(0) !== STATE_MAGIC) return null;
  const version = head.readUInt32LE(4);
  if (version !== STATE_VERSION) return null;
  const nPacked = head.readUInt32LE(8);
  if (nPacked < 4 || 12 + nPacked * 4 > fileSize || 12 + nPacked * 4 > head.length) return null;
  if (head.readInt32LE(12) !== -1 || head.readInt32LE(16) !== 1) return null;
  const n = head.readInt32LE(20);
  if (n < 0 || n + 4 !== nPacked) return null;
  const tokens = new Array<number>(n);
  for (let i = 0; i < n; i++) tokens[i] = head.readInt32LE(24 + 4 * i);
  return { version, tokens };
}

/** Read just enough of a file for its header (the token list can be long: 4 bytes per token). */
export async function readStateHeader(file: string): Promise<StateHeader | null> {
  const fh = await fs.open(file, 'r');
  try {
    const { size } = await fh.stat();
    const first = Buffer.alloc(Math.min(12, size));
    await fh.read(first, 0, first.length, 0);
    if (first.length < 12 || first.readUInt32LE(0) !== STATE_MAGIC) return null;
    const want = 12 + first.readUInt32LE(8) * 4;
    if (want > size) return null;
    const head = Buffer.alloc(want);
    await fh.read(head, 0, want, 0);
    return parseStateHeader(head, size);
  } finally {
    await fh.close();
  }
}

export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Name, size and checksum of a state file, as the registry records it. */
export async function describeStateFile(slotDir: string, name: string): Promise<StateFileRecord> {
  const file = statePath(slotDir, name);
  const st = await fs.stat(file);
  return { file: name, size: st.size, sha256: await sha256File(file) };
}

export type StateCheck =
  | { ok: true; header: StateHeader }
  | { ok: false; problem: 'missing' | 'truncated' | 'corrupt' | 'unreadable'; message: string };

/**
 * Is the file on disk the one the registry recorded? Missing, size-changed (truncated), checksum-changed
 * (corrupt) and unparseable files are reported, never thrown.
 */
export async function checkStateFile(slotDir: string, rec: StateFileRecord): Promise<StateCheck> {
  let file: string;
  try {
    file = statePath(slotDir, rec.file);
  } catch (err) {
    return { ok: false, problem: 'unreadable', message: (err as Error).message };
  }
  let size: number;
  try {
    size = (await fs.stat(file)).size;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT'
      ? { ok: false, problem: 'missing', message: `state file ${rec.file} is missing from ${slotDir}` }
      : { ok: false, problem: 'unreadable', message: `state file ${rec.file} cannot be read: ${code ?? err}` };
  }
  if (size !== rec.size) {
    return {
      ok: false,
      problem: 'truncated',
      message: `state file ${rec.file} is ${size} bytes, ${rec.size} were saved (truncated or overwritten)`,
    };
  }
  try {
    const sha = await sha256File(file);
    if (sha !== rec.sha256) {
      return {
        ok: false,
        problem: 'corrupt',
        message: `state file ${rec.file} is corrupt: sha256 ${sha.slice(0, 12)}… differs from the saved ${rec.sha256.slice(0, 12)}…`,
      };
    }
    const header = await readStateHeader(file);
    if (!header) {
      return {
        ok: false,
        problem: 'corrupt',
        message: `state file ${rec.file} is not a llama.cpp slot state (version ${STATE_VERSION}) this daemon can read`,
      };
    }
    return { ok: true, header };
  } catch (err) {
    return {
      ok: false,
      problem: 'unreadable',
      message: `state file ${rec.file} cannot be read: ${(err as Error).message}`,
    };
  }
}

/** Length of the common prefix of two token lists. */
export function commonPrefix(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

export async function removeStateFile(slotDir: string, name: string): Promise<boolean> {
  try {
    await fs.unlink(statePath(slotDir, name));
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}
