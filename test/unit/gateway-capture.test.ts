import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Logger } from 'pino';
import { Capture, replyFromJson, replyFromSse } from '../../daemon/gateway/capture.js';
import { type Exchange, Recorder, toRecordInput } from '../../daemon/gateway/recorder.js';
import { Metrics } from '../../daemon/metrics.js';
import type { SessionRecord } from '../../daemon/registry/records.js';
import type { RecordInput, SessionService } from '../../daemon/services/sessions.js';

const ev = (o: unknown) => `data: ${JSON.stringify(o)}\n\n`;
const usage = {
  prompt_tokens: 10,
  completion_tokens: 3,
  total_tokens: 13,
  prompt_tokens_details: { cached_tokens: 8 },
};

describe('gateway reply capture', () => {
  it('reads a chat completion', () => {
    const body = {
      choices: [{ index: 0, message: { role: 'assistant', content: 'Hi.', tool_calls: [], refusal: null } }],
      usage,
    };
    const r = replyFromJson('chat', Buffer.from(JSON.stringify(body)));
    assert.deepEqual(r, { message: { role: 'assistant', content: 'Hi.' }, text: null, usage });
  });

  it('reads a text completion', () => {
    const r = replyFromJson(
      'completion',
      Buffer.from(JSON.stringify({ choices: [{ index: 0, text: ' more' }], usage })),
    );
    assert.deepEqual(r, { message: null, text: ' more', usage });
  });

  it('puts a chat stream together, choice 0 only, with the usage chunk', () => {
    const body =
      ev({ choices: [{ index: 0, delta: { role: 'assistant', content: '' } }] }) +
      ev({
        choices: [
          { index: 0, delta: { content: 'Hel' } },
          { index: 1, delta: { content: 'X' } },
        ],
      }) +
      ev({ choices: [{ index: 0, delta: { content: 'lo' }, finish_reason: 'stop' }] }) +
      ev({ choices: [], usage }) +
      'data: [DONE]\n\n';
    assert.deepEqual(replyFromSse('chat', Buffer.from(body)), {
      message: { role: 'assistant', content: 'Hello' },
      text: null,
      usage,
    });
  });

  it('puts streamed tool calls together', () => {
    const body =
      ev({
        choices: [
          {
            index: 0,
            delta: {
              tool_calls: [{ index: 0, id: 'c1', type: 'function', function: { name: 'get', arguments: '{"a"' } }],
            },
          },
        ],
      }) +
      ev({ choices: [{ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: ':1}' } }] } }] }) +
      'data: [DONE]\n\n';
    const r = replyFromSse('chat', Buffer.from(body));
    assert.deepEqual(r?.message, {
      role: 'assistant',
      content: null,
      tool_calls: [{ type: 'function', id: 'c1', function: { name: 'get', arguments: '{"a":1}' } }],
    });
  });

  it('puts a completion stream together', () => {
    const body = ev({ choices: [{ index: 0, text: 'a' }] }) + ev({ choices: [{ index: 0, text: 'b' }] });
    assert.deepEqual(replyFromSse('completion', Buffer.from(body)), { message: null, text: 'ab', usage: null });
  });

  it('stops keeping bytes past its cap', () => {
    const c = new Capture(4);
    c.push(Buffer.from('ab'));
    assert.equal(c.body().toString(), 'ab');
    c.push(Buffer.from('cde'));
    assert.equal(c.overflow, true);
  });
});

describe('gateway record input', () => {
  const base = { session: 's', lineageRoot: 'root', defaultModel: async () => 'dflt' };
  it('appends the assistant reply to the exact messages', async () => {
    const messages = [{ role: 'user', content: 'hi', name: 'u' }];
    const r = await toRecordInput(
      { ...base, kind: 'chat', request: { model: 'm', messages }, reply: () => null },
      { message: { role: 'assistant', content: 'yo' }, text: null, usage },
    );
    assert.deepEqual(r, {
      session: 's',
      model: 'm',
      lineageRoot: 'root',
      usage,
      messages: [...messages, { role: 'assistant', content: 'yo' }],
    });
  });

  it('keeps the prompt and the completion (echo removed), and falls back to the default model', async () => {
    const r = await toRecordInput(
      { ...base, kind: 'completion', request: { prompt: ['Once'], echo: true }, reply: () => null },
      { message: null, text: 'Once upon', usage: null },
    );
    assert.deepEqual(r, {
      session: 's',
      model: 'dflt',
      lineageRoot: 'root',
      usage: undefined,
      prompt: 'Once',
      completion: ' upon',
    });
    const ids = await toRecordInput(
      { ...base, kind: 'completion', request: { model: 'm', prompt: [1, 2, 3] }, reply: () => null },
      { message: null, text: 'x', usage: null },
    );
    assert.deepEqual(ids?.prompt, [1, 2, 3]);
  });
});

describe('gateway recorder', () => {
  const log = { warn: () => {} } as unknown as Logger;
  const x = (n: number, session = 's'): Exchange => ({
    session,
    kind: 'chat',
    request: { model: 'm', messages: [{ role: 'user', content: `turn ${n}` }] },
    reply: () => null,
    lineageRoot: 'r',
    defaultModel: async () => 'm',
  });
  /** A session service that only notes what it was asked to record. */
  const noting = () => {
    const writes: { session: string; content: unknown; turns: number | undefined }[] = [];
    const sessions = {
      record: async (input: RecordInput) => {
        writes.push({ session: input.session, content: input.messages?.[0]?.content, turns: input.turns });
        return { id: input.session } as SessionRecord;
      },
    } as unknown as SessionService;
    return { writes, sessions };
  };

  it('holds turns back (write-behind) and writes only the newest, counting the turns it stands for', async () => {
    const { writes, sessions } = noting();
    // A quiet period far longer than the test: nothing is written until someone asks.
    const rec = new Recorder(sessions, log, new Metrics(), () => {}, { quietMs: 60_000, maxDelayMs: 120_000 });
    for (let n = 1; n <= 5; n++) rec.enqueue(x(n));
    rec.enqueue(x(1, 'other'));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(writes, [], 'nothing written while the sessions are busy');
    assert.equal(rec.inFlight, 2, 'one exchange per session waits, however many turns came');
    await rec.flush('s');
    assert.deepEqual(
      writes,
      [{ session: 's', content: 'turn 5', turns: 5 }],
      'flush(session) writes that session only',
    );
    assert.equal(rec.inFlight, 1);
    await rec.flush();
    assert.deepEqual(writes.at(-1), { session: 'other', content: 'turn 1', turns: undefined });
    assert.equal(rec.inFlight, 0);
    await rec.flush('s');
    assert.equal(writes.length, 2, 'a flush with nothing waiting writes nothing');
  });

  it('a flush during a write also waits for the turns that arrived meanwhile', async () => {
    const writes: unknown[] = [];
    let release: () => void = () => {};
    const sessions = {
      record: async (input: RecordInput) => {
        writes.push(input.messages?.[0]?.content);
        if (writes.length === 1) await new Promise<void>((r) => (release = r));
        return { id: input.session } as SessionRecord;
      },
    } as unknown as SessionService;
    const rec = new Recorder(sessions, log, new Metrics(), () => {}, { quietMs: 60_000, maxDelayMs: 120_000 });
    rec.enqueue(x(1));
    const first = rec.flush('s');
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(writes, ['turn 1'], 'the first write is under way');
    rec.enqueue(x(2));
    let settled = false;
    const second = rec.flush('s').then(() => {
      settled = true;
    });
    await new Promise((r) => setImmediate(r));
    assert.equal(settled, false, 'not settled while turn 2 is unwritten');
    release();
    await Promise.all([first, second]);
    assert.deepEqual(writes, ['turn 1', 'turn 2']);
    assert.equal(rec.inFlight, 0);
  });

  it('writes on its own once the session goes quiet', async () => {
    const { writes, sessions } = noting();
    const rec = new Recorder(sessions, log, new Metrics(), () => {}, { quietMs: 1, maxDelayMs: 50 });
    rec.enqueue(x(1));
    rec.enqueue(x(2));
    for (let i = 0; i < 500 && writes.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(writes, [{ session: 's', content: 'turn 2', turns: 2 }]);
  });

  it('records a session in order, folding turns that queue up behind a slow write into the newest', async () => {
    const writes: { messages: unknown; turns: number | undefined }[] = [];
    let release: () => void = () => {};
    const fakeSessions = {
      record: async (input: RecordInput) => {
        writes.push({ messages: input.messages, turns: input.turns });
        if (writes.length === 1) await new Promise<void>((r) => (release = r));
        return { id: input.session } as SessionRecord;
      },
    } as unknown as SessionService;
    // No quiet period: each turn is written as soon as the one before it is.
    const rec = new Recorder(fakeSessions, log, new Metrics(), () => {}, { quietMs: 0 });
    rec.enqueue(x(1));
    await new Promise((r) => setImmediate(r));
    rec.enqueue(x(2));
    rec.enqueue(x(3));
    rec.enqueue(x(4));
    assert.equal(rec.inFlight, 2);
    release();
    await rec.drain(5000);
    assert.equal(rec.inFlight, 0);
    assert.deepEqual(writes, [
      { messages: [{ role: 'user', content: 'turn 1' }], turns: undefined },
      { messages: [{ role: 'user', content: 'turn 4' }], turns: 3 },
    ]);
  });
});
