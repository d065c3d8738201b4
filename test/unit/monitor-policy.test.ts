import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  autoWindowName,
  Hysteresis,
  idleCandidates,
  type ThresholdState,
  thresholdDue,
  tokenLimit,
} from '../../daemon/monitor/policy.js';
import { WINDOW_NAME_RE } from '../../daemon/protocol/index.js';
import type { SessionRecord } from '../../daemon/registry/records.js';

const pressure = { kvHigh: 0.9, kvLow: 0.75, hostAvailableMin: 0.1, hostAvailableOk: 0.2 };

function st(p: Partial<ThresholdState>): ThresholdState {
  return { tokens: 0, state: 'active', lastAutoTokens: null, lastAutoAt: null, rearmed: false, ...p };
}

function session(id: string, lastUsedAt: string, p: Partial<SessionRecord> = {}): SessionRecord {
  return {
    id,
    model: 'm',
    state: 'active',
    kind: 'chat',
    tokens: 100,
    maxModelLen: 2048,
    turns: 1,
    createdAt: lastUsedAt,
    updatedAt: lastUsedAt,
    lastUsedAt,
    sourceWindow: null,
    lastWindow: null,
    lastUsage: null,
    lineageRoot: 'r',
    slot: null,
    autoFrozenAtTokens: null,
    autoFrozenAt: null,
    ...p,
  };
}

describe('monitor: token threshold', () => {
  it('uses threshold × max_model_len or maxTokens, whichever is lower', () => {
    assert.equal(tokenLimit(2048, { threshold: 0.5, maxTokens: null }), 1024);
    assert.equal(tokenLimit(2048, { threshold: 0.5, maxTokens: 500 }), 500);
    assert.equal(tokenLimit(null, { threshold: 0.5, maxTokens: 500 }), 500);
    assert.equal(tokenLimit(null, { threshold: 0.5, maxTokens: null }), null);
  });

  it('freezes at the crossing, once', () => {
    const now = 1_000_000;
    assert.equal(thresholdDue(st({ tokens: 1023 }), 1024, now, 60), false);
    assert.equal(thresholdDue(st({ tokens: 1024 }), 1024, now, 60), true);
    // already frozen at 1100; it grew without going back under the limit: no new crossing
    assert.equal(thresholdDue(st({ tokens: 1500, lastAutoTokens: 1100, lastAutoAt: 0 }), 1024, now, 60), false);
  });

  it('freezes again after a new crossing past the last freeze point, after the cooldown', () => {
    const now = 1_000_000;
    const again = st({ tokens: 1200, lastAutoTokens: 1100, lastAutoAt: now - 120_000, rearmed: true });
    assert.equal(thresholdDue(again, 1024, now, 60), true);
    assert.equal(thresholdDue({ ...again, lastAutoAt: now - 30_000 }, 1024, now, 60), false, 'cooldown');
    assert.equal(thresholdDue({ ...again, tokens: 1050 }, 1024, now, 60), false, 'not past the last point');
    // the last automatic freeze was below the limit (a pressure freeze): reaching the limit is a crossing
    assert.equal(thresholdDue(st({ tokens: 1024, lastAutoTokens: 400, lastAutoAt: 0 }), 1024, now, 60), true);
  });

  it('leaves frozen, thawed and ended sessions alone', () => {
    for (const state of ['frozen', 'thawed', 'ended'] as const) {
      assert.equal(thresholdDue(st({ tokens: 2000, state }), 1024, 0, 0), false);
    }
  });
});

describe('monitor: pressure hysteresis', () => {
  it('enters at the high watermark, stays in the band, leaves under the low one', () => {
    const h = new Hysteresis();
    const seq = [0.5, 0.89, 0.95, 0.85, 0.8, 0.76, 0.74, 0.8, 0.89, 0.9];
    const under = seq.map((kv) => {
      h.update({ kvUsage: kv, hostAvailable: 0.5 }, pressure);
      return h.under;
    });
    assert.deepEqual(under, [false, false, true, true, true, true, false, false, false, true]);
  });

  it('never flaps on readings that wobble inside the band', () => {
    const h = new Hysteresis();
    h.update({ kvUsage: 0.95, hostAvailable: null }, pressure);
    let changes = 0;
    for (let i = 0; i < 100; i++) {
      const r = h.update({ kvUsage: 0.76 + (i % 10) * 0.013, hostAvailable: null }, pressure);
      changes += r.entered.length + r.left.length;
    }
    assert.equal(changes, 0);
    assert.equal(h.reason, 'kv_pressure');
  });

  it('tracks host memory separately and ignores unknown readings', () => {
    const h = new Hysteresis();
    assert.deepEqual(h.update({ kvUsage: null, hostAvailable: 0.05 }, pressure), {
      entered: ['host_memory'],
      left: [],
    });
    assert.equal(h.reason, 'host_memory');
    h.update({ kvUsage: null, hostAvailable: null }, pressure);
    assert.equal(h.under, true);
    h.update({ kvUsage: null, hostAvailable: 0.15 }, pressure);
    assert.equal(h.under, true);
    assert.deepEqual(h.update({ kvUsage: 0.1, hostAvailable: 0.2 }, pressure), { entered: [], left: ['host_memory'] });
    assert.equal(h.under, false);
  });
});

describe('monitor: idle candidates and names', () => {
  it('orders idle active sessions least recently used first', () => {
    const now = Date.parse('2026-01-01T00:10:00Z');
    const list = [
      session('b', '2026-01-01T00:02:00Z'),
      session('a', '2026-01-01T00:01:00Z'),
      session('recent', '2026-01-01T00:09:50Z'),
      session('frozen', '2026-01-01T00:00:00Z', { state: 'frozen' }),
      session('same-length', '2026-01-01T00:00:00Z', { autoFrozenAtTokens: 100 }),
      session('empty', '2026-01-01T00:00:00Z', { tokens: 0 }),
      session('c', '2026-01-01T00:03:00Z'),
    ];
    assert.deepEqual(
      idleCandidates(list, now, 30).map((s) => s.id),
      ['a', 'b', 'c'],
    );
  });

  it('names windows auto-<session>-<UTC time> within the window-name rule', () => {
    const at = new Date('2026-03-04T05:06:07.890Z');
    assert.equal(autoWindowName('chat-1', at), 'auto-chat-1-20260304T050607');
    assert.equal(autoWindowName('chat-1', at, 2), 'auto-chat-1-20260304T050607-2');
    const long = autoWindowName('x'.repeat(64), at, 3);
    assert.ok(long.length <= 128 && WINDOW_NAME_RE.test(long), long);
  });
});
