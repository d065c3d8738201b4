/**
 * NDJSON framing over a byte stream. Lines are split on raw bytes (so a multi-byte UTF-8 character split across
 * chunks is never mangled) and decoded strictly, so invalid UTF-8 is a parse error rather than silent U+FFFD.
 */
const NL = 0x0a;
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

export type Frame = { kind: 'line'; text: string } | { kind: 'invalid-utf8' } | { kind: 'too-large'; bytes: number };

export class LineDecoder {
  private parts: Buffer[] = [];
  private partBytes = 0;
  private overflowed = false;

  constructor(private readonly maxLineBytes: number) {}

  /** Feed a chunk; returns the frames it completed. After a 'too-large' frame the decoder yields nothing more. */
  push(chunk: Buffer): Frame[] {
    if (this.overflowed) return [];
    const frames: Frame[] = [];
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(NL, start);
      if (nl === -1) break;
      const piece = chunk.subarray(start, nl);
      if (this.partBytes + piece.length > this.maxLineBytes) {
        frames.push(this.overflow(this.partBytes + piece.length));
        return frames;
      }
      const line = this.parts.length === 0 ? piece : Buffer.concat([...this.parts, piece]);
      this.parts = [];
      this.partBytes = 0;
      frames.push(decode(line));
      start = nl + 1;
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      if (this.partBytes + rest.length > this.maxLineBytes) {
        frames.push(this.overflow(this.partBytes + rest.length));
        return frames;
      }
      // Copy: the caller's buffer may be pooled and reused.
      this.parts.push(Buffer.from(rest));
      this.partBytes += rest.length;
    }
    return frames;
  }

  get pendingBytes(): number {
    return this.partBytes;
  }

  private overflow(bytes: number): Frame {
    this.overflowed = true;
    this.parts = [];
    this.partBytes = 0;
    return { kind: 'too-large', bytes };
  }
}

function decode(line: Buffer): Frame {
  const end = line.length > 0 && line[line.length - 1] === 0x0d ? line.length - 1 : line.length;
  try {
    return { kind: 'line', text: strictUtf8.decode(line.subarray(0, end)) };
  } catch {
    return { kind: 'invalid-utf8' };
  }
}
