import { createHash, createHmac, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { stateFileName } from '../backends/llamacpp/state-file.js';
import { CwmError, SessionSchemas, TAG_RE, WINDOW_NAME_RE, WindowSchemas } from '../protocol/index.js';
import { decodeTokens, encodeTokens, splitIntoChunks } from '../registry/codec.js';
import type { BatchOp } from '../registry/db.js';
import type { StateFileRecord, WindowData, WindowRecord } from '../registry/records.js';
import { VERSION } from '../version.js';
import { nowIso, type ServiceContext } from './context.js';
import { indexOps } from './indexes.js';
import { type WindowService, windowNotFound } from './windows.js';

/**
 * Portable window bundles: one file that carries a window to another cwmd (or back into this one).
 *
 *   "CWM-BUNDLE/1\n"                       magic + format version
 *   <manifest JSON, one line> "\n"         window record (no salt), fingerprint, lineage, part table
 *   <body>                                 the parts, back to back; offsets in the manifest are body-relative
 *   "SHA256 " <64 hex> "\n"               sha256 of every byte before this line
 *
 * Parts: every token chunk as stored (codec encoding), the window's messages/prompt as JSON ("data"), and for
 * llama.cpp the KV state file ("state"). Each part carries its own sha256; the trailer covers the whole. Import
 * verifies everything (magic, trailer, manifest schema, lengths, every part hash, the chained chunk hashes against
 * the decoded tokens, the whole-file hash) before it touches the registry, then writes the window in one batch.
 *
 * Checksums detect damage and accidental edits; they are not a signature. A bundle is untrusted input: names,
 * token ids and sizes are validated as strictly as any RPC parameter.
 */
export const BUNDLE_MAGIC = 'CWM-BUNDLE/1\n';
export const BUNDLE_FORMAT_VERSION = 1;
const TRAILER_BYTES = 'SHA256 '.length + 64 + 1;
const MAX_MANIFEST_BYTES = 64 * 1024 * 1024;
/** Upper bound on the buffered (non-state) parts read at import: 1 GiB of chunks and messages. */
const MAX_BUFFERED_BYTES = 1024 * 1024 * 1024;
const IO_BLOCK = 1024 * 1024;
/** A llama.cpp state file is read into memory whole: 2 GiB is about 250k tokens of an 8B model's KV. */
const MAX_STATE_BYTES = 2 * 1024 * 1024 * 1024;

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/);
const Part = z.object({ offset: z.number().int().min(0), length: z.number().int().min(0), sha256: sha256Hex });
const ChunkPart = Part.extend({ hash: z.string().min(1).max(128), tokens: z.number().int().min(1).max(1_000_000) });

const Manifest = z
  .object({
    format: z.literal('cwm-bundle'),
    version: z.literal(BUNDLE_FORMAT_VERSION),
    createdAt: z.string().max(64),
    producer: z.object({ cwm: z.string().max(64) }),
    /** HMAC of the exporting daemon's secret: lets that daemon recognise its own bundles; reveals nothing. */
    origin: z.string().regex(/^[A-Za-z0-9_-]{16,64}$/),
    window: z.object({
      name: z.string().regex(WINDOW_NAME_RE),
      session: z.string().max(64),
      model: z.string().min(1).max(256),
      fingerprint: WindowSchemas.Fingerprint,
      tokens: z.number().int().min(1).max(100_000_000),
      description: z.string().max(4096),
      tags: z.array(z.string().regex(TAG_RE)).max(32),
      parent: z.string().regex(WINDOW_NAME_RE).nullable(),
      createdAt: z.string().max(64),
      kind: z.enum(['chat', 'completion']),
      lineageRoot: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/),
      stateFile: z.object({ file: z.string().max(255), size: z.number().int().min(0), sha256: sha256Hex }).nullable(),
    }),
    lineage: z.object({
      ancestors: z.array(z.string().max(128)).max(10_000),
      root: z.string().max(128),
      depth: z.number().int().min(0),
    }),
    parts: z.object({
      chunks: z.array(ChunkPart).max(1_000_000),
      data: Part,
      state: Part.nullable(),
    }),
    stateFileOmitted: z.string().max(1024).optional(),
    bodyBytes: z.number().int().min(0),
  })
  .strict();
type Manifest = z.infer<typeof Manifest>;

const WindowDataSchema = z
  .object({
    messages: z.array(SessionSchemas.ChatMessage).optional(),
    prompt: z.union([z.string(), z.array(z.number().int().min(0).max(0xffffffff))]).optional(),
  })
  .strict();

interface ChunkRef {
  n: number;
  bytes: number;
  tokens: number;
}

function invalid(message: string, hint = 'the file is damaged, truncated or not a cwm bundle; nothing was imported') {
  return new CwmError('BUNDLE_INVALID', message, { hint });
}

function sha(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

/** The daemon's identity for bundles: an HMAC of its secret, so equal secrets (same data dir) mean "same daemon". */
export function originId(secret: Buffer): string {
  return createHmac('sha256', secret).update('cwm-bundle-origin-v1').digest('base64url').slice(0, 32);
}

/**
 * File paths come from the local CLI user, already resolved to absolute paths in the CLI process. The daemon reads
 * and writes them with its own permissions (the same user, behind a 0600 socket): see docs/SECURITY.md.
 */
function checkFilePath(file: string): string {
  if (file.includes('\0')) throw new CwmError('INVALID_PARAMS', 'the file path contains a NUL byte');
  if (!path.isAbsolute(file)) {
    throw new CwmError('INVALID_PARAMS', `the bundle path must be absolute (got "${file}")`, {
      hint: 'the cwm CLI resolves relative paths for you; RPC callers must send an absolute path',
    });
  }
  return path.normalize(file);
}

/** A state file named in a record must be a plain file name inside the slot directory. */
function stateFilePath(slotDir: string, file: string): string {
  if (file !== path.basename(file) || file === '.' || file === '..' || file.includes('\0') || file.includes('\\')) {
    throw new CwmError('STATE_FILE_INVALID', `state file name "${file}" is not a plain file name`, {
      hint: 'run `cwm doctor --registry`',
    });
  }
  return path.join(slotDir, file);
}

function ioError(action: string, file: string, err: unknown): CwmError {
  const e = err as NodeJS.ErrnoException;
  if (e.code === 'ENOSPC') {
    return new CwmError('DISK_FULL', `the disk is full while ${action} ${file}`, {
      hint: 'free space on that volume and retry; nothing was changed',
      retryable: true,
    });
  }
  if (e.code === 'ENOENT') {
    return new CwmError('INVALID_PARAMS', `${file} does not exist`, { hint: 'check the path' });
  }
  if (e.code === 'EEXIST') {
    return new CwmError('INVALID_PARAMS', `${file} already exists; export never overwrites a file`, {
      hint: 'choose another file name, or remove the old file first',
    });
  }
  if (e.code === 'EACCES' || e.code === 'EPERM' || e.code === 'EROFS') {
    return new CwmError('PERMISSION_DENIED', `cwmd may not ${action} ${file}: ${e.message}`, {
      hint: 'the daemon reads and writes bundle files with its own permissions; pick a path it can use',
    });
  }
  if (e.code === 'EISDIR' || e.code === 'ENOTDIR') {
    return new CwmError('INVALID_PARAMS', `${file} is not a regular file path (${e.code})`, { hint: 'check the path' });
  }
  return new CwmError('STORAGE_ERROR', `cannot ${action} ${file}: ${e.message}`, { hint: 'see the daemon log' });
}

async function readExactly(fh: fs.promises.FileHandle, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, offset + done);
    if (bytesRead === 0) throw invalid('the bundle is truncated');
    done += bytesRead;
  }
  return buf;
}

export interface ExportResult {
  name: string;
  file: string;
  bytes: number;
  sha256: string;
}

export interface ImportResult {
  name: string;
  tokens: number;
  chunks: number;
}

export class BundleService {
  constructor(
    private readonly ctx: ServiceContext,
    private readonly windows: WindowService,
  ) {}

  private slotDir(): string | null {
    return this.ctx.cfg().config.engine.slotDir;
  }

  async export(input: { name: string; file: string }): Promise<ExportResult> {
    const file = checkFilePath(input.file);
    const reg = this.ctx.reg;
    // One consistent read under the registry mutex: a concurrent delete cannot free chunks between the reads.
    // The state file is opened here too: an open descriptor survives an unlink by a delete that follows.
    const snap = await reg.mutex.run(async () => {
      const w = await reg.getWindow(input.name);
      if (!w) throw windowNotFound(input.name);
      const data = (await reg.getWindowData(w.name)) ?? {};
      const bufs = (await reg.chunks.getMany(w.chunkHashes)) as (Buffer | undefined)[];
      bufs.forEach((b, i) => {
        if (!b) {
          throw new CwmError('REGISTRY_CORRUPT', `window "${w.name}" is missing chunk ${i}`, {
            hint: 'run `cwm doctor --registry`',
          });
        }
      });
      const lineage = await this.windows.lineage(w);
      let state: fs.promises.FileHandle | null = null;
      let stateOmitted: string | undefined;
      if (w.stateFile) {
        const dir = this.slotDir();
        if (!dir) stateOmitted = 'engine.slotDir is not configured on the exporting daemon';
        else {
          try {
            state = await fs.promises.open(stateFilePath(dir, w.stateFile.file), 'r');
          } catch (err) {
            stateOmitted = `the state file could not be read: ${(err as Error).message}`;
          }
        }
      }
      return { w, data, bufs: bufs as Buffer[], lineage, state, stateOmitted };
    });
    const { w, lineage } = snap;
    let stateOmitted = snap.stateOmitted;
    const dir = path.dirname(file);
    const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
    let out: fs.promises.FileHandle | null = null;
    try {
      // The state file is read whole and checked against its recorded sha256 before it goes into the bundle.
      let stateBuf: Buffer | null = null;
      if (snap.state && w.stateFile) {
        try {
          const st = await snap.state.stat();
          stateBuf = await readExactly(snap.state, 0, st.size);
          if (sha(stateBuf) !== w.stateFile.sha256 || stateBuf.length !== w.stateFile.size) {
            stateOmitted = 'the state file on disk no longer matches its recorded sha256';
            stateBuf = null;
          }
        } catch (err) {
          stateOmitted = `the state file could not be read: ${(err as Error).message}`;
          stateBuf = null;
        }
      }
      const dataBuf = Buffer.from(JSON.stringify(snap.data), 'utf8');
      let offset = 0;
      const chunkParts = snap.bufs.map((b, i) => {
        const part = {
          hash: w.chunkHashes[i] as string,
          tokens: decodeTokens(b).length,
          offset,
          length: b.length,
          sha256: sha(b),
        };
        offset += b.length;
        return part;
      });
      const dataPart = { offset, length: dataBuf.length, sha256: sha(dataBuf) };
      offset += dataBuf.length;
      const statePart = stateBuf ? { offset, length: stateBuf.length, sha256: sha(stateBuf) } : null;
      if (stateBuf) offset += stateBuf.length;
      const manifest: Manifest = {
        format: 'cwm-bundle',
        version: BUNDLE_FORMAT_VERSION,
        createdAt: nowIso(),
        producer: { cwm: VERSION },
        origin: originId(this.ctx.secret),
        window: {
          name: w.name,
          session: w.session,
          model: w.model,
          fingerprint: w.fingerprint,
          tokens: w.tokens,
          description: w.description,
          tags: w.tags,
          parent: w.parent,
          createdAt: w.createdAt,
          kind: w.kind,
          lineageRoot: w.lineageRoot,
          stateFile: stateBuf && w.stateFile ? { ...w.stateFile } : null,
        },
        lineage: { ancestors: lineage.ancestors, root: lineage.root, depth: lineage.depth },
        parts: { chunks: chunkParts, data: dataPart, state: statePart },
        ...(stateOmitted ? { stateFileOmitted: stateOmitted } : {}),
        bodyBytes: offset,
      };
      const head = Buffer.from(`${BUNDLE_MAGIC}${JSON.stringify(manifest)}\n`, 'utf8');
      const whole = createHash('sha256');
      const fileHash = createHash('sha256');
      try {
        out = await fs.promises.open(tmp, 'wx', 0o600);
      } catch (err) {
        throw ioError('write', file, err);
      }
      let written = 0;
      const write = async (b: Buffer, inWhole = true) => {
        if (inWhole) whole.update(b);
        fileHash.update(b);
        let done = 0;
        while (done < b.length) {
          const { bytesWritten } = await (out as fs.promises.FileHandle).write(b, done, b.length - done);
          done += bytesWritten;
        }
        written += b.length;
      };
      try {
        await write(head);
        for (const b of snap.bufs) await write(b);
        await write(dataBuf);
        if (stateBuf)
          for (let i = 0; i < stateBuf.length; i += IO_BLOCK) await write(stateBuf.subarray(i, i + IO_BLOCK));
        await write(Buffer.from(`SHA256 ${whole.digest('hex')}\n`, 'ascii'), false);
        await out.sync();
        await out.close();
        out = null;
        // link() fails when the target exists: an export never clobbers a file, even under a race.
        await fs.promises.link(tmp, file);
      } catch (err) {
        throw err instanceof CwmError ? err : ioError('write', file, err);
      }
      const result = { name: w.name, file, bytes: written, sha256: fileHash.digest('hex') };
      await this.ctx.audit.record({
        action: 'window.export',
        actor: 'rpc',
        target: w.name,
        details: {
          file,
          bytes: written,
          sha256: result.sha256,
          ...(stateOmitted ? { stateFileOmitted: stateOmitted } : {}),
        },
      });
      if (stateOmitted)
        this.ctx.log.warn({ window: w.name, reason: stateOmitted }, 'bundle exported without state file');
      this.ctx.metrics.operations.inc({ op: 'export', outcome: 'ok' });
      return result;
    } finally {
      await out?.close().catch(() => {});
      await snap.state?.close().catch(() => {});
      await fs.promises.rm(tmp, { force: true }).catch(() => {});
    }
  }

  async import(input: { file: string; name?: string | undefined }): Promise<ImportResult> {
    const file = checkFilePath(input.file);
    let fh: fs.promises.FileHandle;
    try {
      fh = await fs.promises.open(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    } catch (err) {
      throw ioError('read', file, err);
    }
    let verified: Verified;
    try {
      verified = await verifyBundle(fh, file);
    } finally {
      await fh.close().catch(() => {});
    }
    return this.commit(verified, input.name, file);
  }

  private async commit(v: Verified, rename: string | undefined, file: string): Promise<ImportResult> {
    const m = v.manifest;
    const name = rename ?? m.window.name;
    const reg = this.ctx.reg;
    const sameDaemon = m.origin === originId(this.ctx.secret);
    const id = randomBytes(12).toString('base64url');
    // The llama.cpp state file lands in the slot directory under the new window id, before the registry batch;
    // if the batch fails it is removed again (a crash in between leaves an unreferenced file, never a bad record).
    let stateFile: StateFileRecord | null = null;
    let stateTarget: string | null = null;
    let stateNote: string | null = null;
    if (v.state && m.window.stateFile) {
      const dir = this.slotDir();
      if (!dir || this.ctx.backend.kind !== 'llamacpp') {
        stateNote = 'this daemon does not run llama.cpp with a slot directory: the state file was not restored';
      } else {
        // The name the llama.cpp backend gives a window's state file: `<window id>.bin`.
        const fileName = stateFileName(id);
        stateTarget = stateFilePath(dir, fileName);
        const tmp = `${stateTarget}.${randomBytes(4).toString('hex')}.tmp`;
        try {
          await fs.promises.writeFile(tmp, v.state, { mode: 0o600, flag: 'wx' });
          await fs.promises.rename(tmp, stateTarget);
        } catch (err) {
          await fs.promises.rm(tmp, { force: true }).catch(() => {});
          throw ioError('write', stateTarget, err);
        }
        stateFile = { file: fileName, size: v.state.length, sha256: m.window.stateFile.sha256 };
      }
    }
    try {
      return await reg.mutex.run(async () => {
        if (await reg.getWindow(name)) {
          throw new CwmError('WINDOW_EXISTS', `a window named "${name}" already exists; nothing was imported`, {
            hint: 'import under another name with --name, or delete the existing window first',
          });
        }
        const ops: BatchOp[] = [];
        const deltas = new Map<string, number>();
        const bump = (k: string, d: number) => deltas.set(k, (deltas.get(k) ?? 0) + d);
        const hashes = v.chunks.map((c) => c.hash);
        const existing = (await reg.refs.getMany(hashes)) as (ChunkRef | undefined)[];
        const seen = new Map<string, ChunkRef>();
        let bytesStored = 0;
        let newChunks = 0;
        v.chunks.forEach((c, i) => {
          const prev = seen.get(c.hash) ?? existing[i];
          let ref: ChunkRef;
          if (prev) ref = { ...prev, n: prev.n + 1 };
          else {
            ops.push({ type: 'put', sublevel: reg.chunks, key: c.hash, value: c.buf });
            ref = { n: 1, bytes: c.buf.length, tokens: c.ids.length };
            newChunks++;
            bump('chunks', 1);
            bump('bytes', c.buf.length);
            bump('tokens', c.ids.length);
          }
          seen.set(c.hash, ref);
          bytesStored += ref.bytes;
        });
        for (const [hash, ref] of seen) ops.push({ type: 'put', sublevel: reg.refs, key: hash, value: ref });
        // Same daemon: the window keeps its salt lineage (its KV may still be cached) and its parent edge.
        // Anywhere else: a new lineage root, so a new salt; the KV is recomputed at thaw.
        let parent: string | null = null;
        let parentDeleted = false;
        if (sameDaemon && m.window.parent) {
          parent = m.window.parent;
          parentDeleted = !(await reg.getWindow(parent));
        }
        const now = nowIso();
        const w: WindowRecord = {
          name,
          id,
          session: m.window.session,
          model: m.window.model,
          fingerprint: m.window.fingerprint,
          tokens: m.window.tokens,
          chunkHashes: hashes,
          bytesStored,
          description: m.window.description,
          tags: [...new Set(m.window.tags)].sort(),
          parent,
          lineageRoot: sameDaemon ? m.window.lineageRoot : randomBytes(12).toString('base64url'),
          createdAt: now,
          pinned: false,
          residency: 'unknown',
          residencyCheckedAt: null,
          kind: m.window.kind,
          stateFile,
        };
        if (parentDeleted) w.parentDeleted = true;
        ops.push({ type: 'put', sublevel: reg.windows, key: w.name, value: w });
        ops.push({ type: 'put', sublevel: reg.windowData, key: w.name, value: v.data });
        if (stateFile) bump(`sf!${stateFile.file}`, 1);
        indexOps(reg, w, 1, ops, deltas);
        ops.push(
          this.ctx.audit.op({
            action: 'window.import',
            actor: 'rpc',
            target: w.name,
            details: {
              file,
              sha256: v.sha256,
              sourceName: m.window.name,
              origin: sameDaemon ? 'this daemon' : 'another daemon',
              tokens: w.tokens,
              newChunks,
              ancestors: m.lineage.ancestors,
              ...(stateNote ? { stateFile: stateNote } : {}),
            },
          }),
        );
        const next = await reg.countOps(deltas, ops);
        await reg.batch(ops);
        reg.commitCounts(next);
        if (stateNote) this.ctx.log.warn({ window: w.name }, stateNote);
        this.ctx.metrics.operations.inc({ op: 'import', outcome: 'ok' });
        return { name: w.name, tokens: w.tokens, chunks: hashes.length };
      });
    } catch (err) {
      if (stateTarget) await fs.promises.rm(stateTarget, { force: true }).catch(() => {});
      throw err;
    }
  }
}

interface VerifiedChunk {
  hash: string;
  ids: number[];
  buf: Buffer;
}

interface Verified {
  manifest: Manifest;
  chunks: VerifiedChunk[];
  data: WindowData;
  state: Buffer | null;
  sha256: string;
}

/** Check every byte of a bundle; throws BUNDLE_INVALID naming the first problem. Reads, never writes. */
export async function verifyBundle(fh: fs.promises.FileHandle, file: string): Promise<Verified> {
  const st = await fh.stat();
  if (!st.isFile())
    throw invalid(
      `${file} is not a regular file`,
      'give the path of a bundle made by `cwm export`; nothing was imported',
    );
  const size = st.size;
  const magic = Buffer.from(BUNDLE_MAGIC, 'ascii');
  if (size < magic.length + TRAILER_BYTES) {
    throw invalid(`${file} is too short to be a cwm bundle (${size} bytes)`);
  }
  const head = await readExactly(fh, 0, magic.length);
  if (!head.equals(magic)) throw invalid(`${file} is not a cwm bundle (bad magic)`);
  const trailer = (await readExactly(fh, size - TRAILER_BYTES, TRAILER_BYTES)).toString('latin1');
  const tm = /^SHA256 ([0-9a-f]{64})\n$/.exec(trailer);
  if (!tm) throw invalid(`${file} is truncated or damaged: its checksum trailer is missing`);
  const contentEnd = size - TRAILER_BYTES;
  // The manifest line: find its newline without reading more than the cap.
  let manifestEnd = -1;
  const scanMax = Math.min(contentEnd, magic.length + MAX_MANIFEST_BYTES);
  for (let pos = magic.length; pos < scanMax && manifestEnd < 0; pos += IO_BLOCK) {
    const block = await readExactly(fh, pos, Math.min(IO_BLOCK, scanMax - pos));
    const nl = block.indexOf(0x0a);
    if (nl >= 0) manifestEnd = pos + nl;
  }
  if (manifestEnd < 0) throw invalid(`${file} is damaged: the manifest has no end`);
  let manifest: Manifest;
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(
      await readExactly(fh, magic.length, manifestEnd - magic.length),
    );
    const parsed = Manifest.safeParse(JSON.parse(text));
    if (!parsed.success) {
      throw invalid(`${file} has an invalid manifest: ${z.prettifyError(parsed.error).slice(0, 500)}`);
    }
    manifest = parsed.data;
  } catch (err) {
    if (err instanceof CwmError) throw err;
    throw invalid(`${file} has a damaged manifest: ${(err as Error).message}`);
  }
  const bodyStart = manifestEnd + 1;
  const bodyBytes = contentEnd - bodyStart;
  if (bodyBytes !== manifest.bodyBytes) {
    throw invalid(
      `${file} is truncated or damaged: its body is ${bodyBytes} bytes, the manifest says ${manifest.bodyBytes}`,
    );
  }
  const inBody = (p: { offset: number; length: number }, what: string) => {
    if (p.offset + p.length > bodyBytes) throw invalid(`${file} is damaged: ${what} lies outside the body`);
  };
  let buffered = 0;
  const readPart = async (p: { offset: number; length: number; sha256: string }, what: string) => {
    inBody(p, what);
    const buf = await readExactly(fh, bodyStart + p.offset, p.length);
    if (sha(buf) !== p.sha256) throw invalid(`${file} is damaged: ${what} fails its sha256 check`);
    return buf;
  };
  const chunks: VerifiedChunk[] = [];
  const allIds: number[] = [];
  for (const [i, c] of manifest.parts.chunks.entries()) {
    buffered += c.length;
    if (buffered > MAX_BUFFERED_BYTES) throw invalid(`${file} is larger than this daemon imports`);
    const raw = await readPart(c, `chunk ${i}`);
    let ids: number[];
    try {
      ids = decodeTokens(raw);
    } catch (err) {
      throw invalid(`${file} is damaged: chunk ${i} does not decode (${(err as Error).message})`);
    }
    if (ids.length !== c.tokens) throw invalid(`${file} is damaged: chunk ${i} holds ${ids.length} tokens`);
    for (const id of ids) allIds.push(id);
    chunks.push({ hash: c.hash, ids, buf: encodeTokens(ids) });
  }
  if (allIds.length !== manifest.window.tokens) {
    throw invalid(`${file} is damaged: its chunks hold ${allIds.length} tokens, the window ${manifest.window.tokens}`);
  }
  // The chunk hashes chain over the tokens (h_k = sha256(h_{k-1}, tokens)): recompute them from the decoded ids.
  const split = splitIntoChunks(allIds);
  if (split.length !== chunks.length || split.some((s, i) => s.hash !== chunks[i]?.hash)) {
    throw invalid(`${file} is damaged: the chunk hashes do not match the tokens they hold`);
  }
  const dataBuf = await readPart(manifest.parts.data, 'the messages part');
  let data: WindowData;
  try {
    const parsed = WindowDataSchema.safeParse(JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(dataBuf)));
    if (!parsed.success) throw new Error(z.prettifyError(parsed.error).slice(0, 300));
    data = parsed.data as WindowData;
  } catch (err) {
    throw invalid(`${file} is damaged: the messages part is invalid (${(err as Error).message})`);
  }
  let state: Buffer | null = null;
  const sf = manifest.window.stateFile;
  if ((manifest.parts.state === null) !== (sf === null)) {
    throw invalid(`${file} is damaged: the state file part and its record disagree`);
  }
  if (manifest.parts.state && sf) {
    if (manifest.parts.state.length > MAX_STATE_BYTES)
      throw invalid(`${file} holds a state file larger than this daemon imports`);
    state = await readPart(manifest.parts.state, 'the state file part');
    if (state.length !== sf.size || manifest.parts.state.sha256 !== sf.sha256) {
      throw invalid(`${file} is damaged: the state file does not match its recorded size and sha256`);
    }
  }
  // Last, the whole: every byte before the trailer, manifest included.
  const whole = createHash('sha256');
  const fileHash = createHash('sha256');
  for (let pos = 0; pos < contentEnd; pos += IO_BLOCK) {
    const block = await readExactly(fh, pos, Math.min(IO_BLOCK, contentEnd - pos));
    whole.update(block);
    fileHash.update(block);
  }
  if (whole.digest('hex') !== tm[1]) {
    throw invalid(`${file} is damaged: the whole-bundle sha256 does not match (the manifest or a part was changed)`);
  }
  fileHash.update(trailer, 'latin1');
  return { manifest, chunks, data, state, sha256: fileHash.digest('hex') };
}
