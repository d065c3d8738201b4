/**
 * Server-sent events as vLLM writes them: `data: {json}\n\n` per event, `data: [DONE]\n\n` at the end.
 * Events end at a blank line ("\n\n", or "\r\n\r\n").
 */

const LF2 = Buffer.from('\n\n');
const CRLF2 = Buffer.from('\r\n\r\n');
const USAGE = Buffer.from('"usage"');

/** End (exclusive, after the blank line) of the first complete event at or after `from`, or -1. */
export function eventEnd(buf: Buffer, from: number): number {
  const a = buf.indexOf(LF2, from);
  // CRLF framing only matters when a CR comes before the first LF LF (vLLM writes LF only).
  const cr = buf.indexOf(13, from);
  if (cr === -1 || (a !== -1 && cr > a)) return a === -1 ? -1 : a + 2;
  const b = buf.indexOf(CRLF2, from);
  if (a === -1 && b === -1) return -1;
  if (b === -1 || (a !== -1 && a < b)) return a + 2;
  return b + 4;
}

const DATA_PREFIX = Buffer.from('data: ');

/** The JSON payload of one event (its `data:` lines joined), or null for [DONE], comments and junk. */
export function eventData(ev: Buffer | string): unknown {
  if (typeof ev !== 'string') {
    // The common shape, one `data: {json}` line: parse it in place.
    const n = ev.length;
    const end = ev[n - 2] === 13 ? n - 4 : n - 2;
    if (ev.indexOf(DATA_PREFIX) === 0 && ev[6] === 123 && ev.indexOf(10, 6) === end) {
      try {
        return JSON.parse(ev.toString('utf8', 6, end)) as unknown;
      } catch {
        return null;
      }
    }
  }
  const text = typeof ev === 'string' ? ev : ev.toString('utf8');
  let data = '';
  let any = false;
  for (const line of text.split(/\r?\n/)) {
    if (!line.startsWith('data:')) continue;
    const v = line.charCodeAt(5) === 32 ? line.slice(6) : line.slice(5);
    data = any ? `${data}\n${v}` : v;
    any = true;
  }
  if (!any || data === '[DONE]') return null;
  try {
    return JSON.parse(data) as unknown;
  } catch {
    return null;
  }
}

/** The chunk `stream_options.include_usage` adds: `"choices": []` and a usage object. */
export function isUsageChunk(ev: Buffer): boolean {
  if (ev.indexOf(USAGE) === -1) return false;
  const d = eventData(ev) as { choices?: unknown; usage?: unknown } | null;
  return (
    d !== null &&
    typeof d === 'object' &&
    Array.isArray(d.choices) &&
    d.choices.length === 0 &&
    typeof d.usage === 'object' &&
    d.usage !== null
  );
}

/**
 * Removes the usage-only chunk from a stream whose client did not ask for it, and nothing else: every other
 * byte goes through unchanged. Complete events go out at once; only an incomplete trailing event is held
 * until its end arrives (vLLM writes one event per write, so in practice nothing waits).
 */
export class UsageStripper {
  private pending: Buffer | null = null;
  stripped = 0;

  push(chunk: Buffer): Buffer | null {
    // Fast path: whole events only (the chunk ends at an event boundary) and no usage anywhere in them.
    const n = chunk.length;
    if (this.pending === null && n >= 2 && chunk[n - 1] === 10 && chunk[n - 2] === 10 && chunk.indexOf(USAGE) === -1) {
      return chunk;
    }
    const data = this.pending === null ? chunk : Buffer.concat([this.pending, chunk]);
    this.pending = null;
    let start = 0;
    let keepFrom = 0;
    let parts: Buffer[] | null = null;
    for (;;) {
      const end = eventEnd(data, start);
      if (end === -1) break;
      const ev = data.subarray(start, end);
      if (isUsageChunk(ev)) {
        parts ??= [];
        if (start > keepFrom) parts.push(data.subarray(keepFrom, start));
        keepFrom = end;
        this.stripped++;
      }
      start = end;
    }
    if (start < data.length) this.pending = Buffer.from(data.subarray(start));
    if (parts === null) return start === 0 ? null : data.subarray(0, start);
    if (start > keepFrom) parts.push(data.subarray(keepFrom, start));
    if (parts.length === 0) return null;
    return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
  }

  /** At the end of the stream: whatever is left (an unterminated tail) goes out as it came. */
  flush(): Buffer | null {
    const p = this.pending;
    this.pending = null;
    return p;
  }
}

/** Every JSON payload of a complete SSE body (for recording, after the response was sent). */
export function sseEvents(body: Buffer): unknown[] {
  const out: unknown[] = [];
  let start = 0;
  for (;;) {
    const end = eventEnd(body, start);
    const ev = end === -1 ? body.subarray(start) : body.subarray(start, end);
    if (ev.length > 0) {
      const d = eventData(ev);
      if (d !== null) out.push(d);
    }
    if (end === -1) break;
    start = end;
  }
  return out;
}
