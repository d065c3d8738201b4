import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { eventData, eventEnd, isUsageChunk, sseEvents, UsageStripper } from '../../daemon/gateway/sse.js';

const head = { id: 'chatcmpl-1', object: 'chat.completion.chunk', created: 1, model: 'm' };
const ev = (o: unknown) => `data: ${JSON.stringify(o)}\n\n`;
const token = (t: string) => ev({ ...head, choices: [{ index: 0, delta: { content: t }, finish_reason: null }] });
const usage = ev({ ...head, choices: [], usage: { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 } });
const done = 'data: [DONE]\n\n';

function runStripper(pieces: string[]): string {
  const s = new UsageStripper();
  const out: Buffer[] = [];
  for (const p of pieces) {
    const b = s.push(Buffer.from(p));
    if (b) out.push(b);
  }
  const tail = s.flush();
  if (tail) out.push(tail);
  return Buffer.concat(out).toString();
}

/** Every way of cutting `text` into 2 or 3 pieces. */
function splits(text: string): string[][] {
  const out: string[][] = [];
  for (let i = 1; i < text.length; i++) {
    out.push([text.slice(0, i), text.slice(i)]);
    for (let j = i + 1; j < text.length; j += 7) out.push([text.slice(0, i), text.slice(i, j), text.slice(j)]);
  }
  return out;
}

describe('gateway SSE', () => {
  it('finds event ends for LF and CRLF framing', () => {
    assert.equal(eventEnd(Buffer.from('data: 1\n\ndata: 2\n\n'), 0), 9);
    assert.equal(eventEnd(Buffer.from('data: 1\r\n\r\ndata: 2'), 0), 11);
    assert.equal(eventEnd(Buffer.from('data: 1\n'), 0), -1);
  });

  it('reads data payloads, skipping [DONE] and comments', () => {
    assert.deepEqual(eventData('data: {"a":1}\n\n'), { a: 1 });
    assert.deepEqual(eventData('data:{"a":1}\n\n'), { a: 1 });
    assert.equal(eventData(done), null);
    assert.equal(eventData(': keep-alive\n\n'), null);
  });

  it('recognises only the usage-only chunk', () => {
    assert.equal(isUsageChunk(Buffer.from(usage)), true);
    assert.equal(isUsageChunk(Buffer.from(token('x'))), false);
    // continuous_usage_stats: usage on a token chunk is not the extra chunk
    const cont = ev({ ...head, choices: [{ index: 0, delta: { content: 'x' } }], usage: { prompt_tokens: 1 } });
    assert.equal(isUsageChunk(Buffer.from(cont)), false);
    assert.equal(isUsageChunk(Buffer.from(ev({ ...head, choices: [], usage: null }))), false);
  });

  it('strips the usage chunk and nothing else, however the stream is cut', () => {
    const stream = token('Hello') + token(' world') + usage + done;
    const expected = token('Hello') + token(' world') + done;
    assert.equal(runStripper([stream]), expected);
    for (const pieces of splits(stream)) assert.equal(runStripper(pieces), expected, JSON.stringify(pieces));
  });

  it('passes a stream without a usage chunk through byte for byte', () => {
    const stream = token('a') + token('b') + done;
    for (const pieces of splits(stream).slice(0, 200)) assert.equal(runStripper(pieces), stream);
  });

  it('forwards complete events at once and holds only an unfinished tail', () => {
    const s = new UsageStripper();
    const first = s.push(Buffer.from(token('a') + token('b').slice(0, 10)));
    assert.equal(first?.toString(), token('a'));
    assert.equal(s.push(Buffer.from(token('b').slice(10)))?.toString(), token('b'));
    assert.equal(s.push(Buffer.from(usage)), null);
    assert.equal(s.stripped, 1);
  });

  it('keeps an unterminated tail as it came', () => {
    assert.equal(runStripper([`${token('a')}data: [DO`]), `${token('a')}data: [DO`);
  });

  it('parses a whole body into payloads', () => {
    const events = sseEvents(Buffer.from(token('a') + usage + done));
    assert.equal(events.length, 2);
  });
});
