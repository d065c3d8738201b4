import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SlotTable } from '../../daemon/backends/llamacpp/slots.js';

const idle = () => false;

describe('llama.cpp slot table', () => {
  it('binds a session to its own slot, then its hint, then a free slot', () => {
    const t = new SlotTable();
    t.resize(3);
    assert.deepEqual(t.choose('a', null, idle, 1000), { slot: 0, victim: null, how: 'free' });
    t.bind(0, 'a', 1000);
    assert.deepEqual(t.choose('a', 2, idle, 1001), { slot: 0, victim: null, how: 'own' });
    assert.deepEqual(t.choose('b', 2, idle, 1001), { slot: 2, victim: null, how: 'hint' });
    assert.deepEqual(t.choose('b', 0, idle, 1001), { slot: 1, victim: null, how: 'free' }, 'a held hint is ignored');
    assert.deepEqual(
      t.choose('b', 7, idle, 1001),
      { slot: 1, victim: null, how: 'free' },
      'an invalid hint is ignored',
    );
  });

  it('evicts the least recently used idle slot, sparing busy and recently used ones', () => {
    const t = new SlotTable();
    t.resize(3);
    t.bind(0, 'a', 1000);
    t.bind(1, 'b', 500);
    t.bind(2, 'c', 800);
    const now = 10_000;
    assert.deepEqual(t.choose('d', null, idle, now), { slot: 1, victim: 'b', how: 'idle' });
    assert.deepEqual(
      t.choose('d', null, (s) => s === 1, now),
      { slot: 2, victim: 'c', how: 'idle' },
    );
    t.touch(2, now - 100); // pointed at a moment ago: its request may not have reached the server yet
    assert.deepEqual(
      t.choose('d', null, (s) => s === 1, now),
      { slot: 0, victim: 'a', how: 'idle' },
    );
    assert.deepEqual(
      t.choose('d', null, () => true, now),
      { slot: 1, victim: 'b', how: 'busy' },
      'all busy: LRU',
    );
  });

  it('keeps one slot per session and one session per slot', () => {
    const t = new SlotTable();
    t.resize(2);
    assert.equal(t.bind(0, 'a'), null);
    assert.equal(t.bind(1, 'a'), null, 'moving a session frees its old slot');
    assert.equal(t.holder(0), null);
    assert.equal(t.slotOf('a'), 1);
    assert.equal(t.bind(1, 'b'), 'a', 'the previous holder is returned');
    assert.equal(t.slotOf('a'), null);
    t.release('b');
    assert.equal(t.holder(1), null);
    assert.throws(() => t.bind(2, 'c'), RangeError);
  });

  it('follows the server slot count', () => {
    const t = new SlotTable();
    t.resize(3);
    t.bind(2, 'c');
    t.bind(0, 'a');
    t.resize(2);
    assert.equal(t.slotOf('c'), null, 'a binding to a slot that no longer exists is dropped');
    assert.equal(t.slotOf('a'), 0);
    assert.equal(t.valid(2), false);
    t.resize(0);
    assert.throws(() => t.choose('x', null, idle), RangeError);
  });
});
