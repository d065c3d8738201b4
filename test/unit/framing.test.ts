import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LineDecoder } from '../../daemon/server/framing.js';

describe('LineDecoder', () => {
  it('splits lines across chunk boundaries, including inside a multi-byte character', () => {
    const d = new LineDecoder(1024);
    const bytes = Buffer.from('{"a":"é€"}\n{"b":1}\n', 'utf8');
    const frames = [];
    for (let i = 0; i < bytes.length; i++) frames.push(...d.push(bytes.subarray(i, i + 1)));
    assert.deepEqual(frames, [
      { kind: 'line', text: '{"a":"é€"}' },
      { kind: 'line', text: '{"b":1}' },
    ]);
    assert.equal(d.pendingBytes, 0);
  });

  it('yields several lines from one chunk and keeps the partial tail', () => {
    const d = new LineDecoder(1024);
    assert.deepEqual(d.push(Buffer.from('a\nb\r\nc')), [
      { kind: 'line', text: 'a' },
      { kind: 'line', text: 'b' },
    ]);
    assert.equal(d.pendingBytes, 1);
    assert.deepEqual(d.push(Buffer.from('d\n')), [{ kind: 'line', text: 'cd' }]);
  });

  it('reports invalid UTF-8 instead of replacing it', () => {
    const d = new LineDecoder(1024);
    assert.deepEqual(d.push(Buffer.from([0x7b, 0xff, 0xfe, 0x7d, 0x0a])), [{ kind: 'invalid-utf8' }]);
  });

  it('stops at an oversized line, whether it arrives whole or in pieces, and yields nothing after', () => {
    const whole = new LineDecoder(8);
    assert.deepEqual(whole.push(Buffer.from('0123456789\nok\n')), [{ kind: 'too-large', bytes: 10 }]);
    assert.deepEqual(whole.push(Buffer.from('more\n')), []);
    const pieces = new LineDecoder(8);
    assert.deepEqual(pieces.push(Buffer.from('01234')), []);
    assert.deepEqual(pieces.push(Buffer.from('56789')), [{ kind: 'too-large', bytes: 10 }]);
  });

  it('accepts a line of exactly the limit', () => {
    const d = new LineDecoder(4);
    assert.deepEqual(d.push(Buffer.from('abcd\n')), [{ kind: 'line', text: 'abcd' }]);
  });
});
