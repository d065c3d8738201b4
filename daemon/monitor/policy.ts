import type { SessionRecord } from '../registry/records.js';

export type AutoReason = 'threshold' | 'kv_pressure' | 'host_memory';

export interface ThresholdPolicy {
  threshold: number;
  maxTokens: number | null;
}

export interface PressurePolicy {
  kvHigh: number;
  kvLow: number;
  hostAvailableMin: number;
  hostAvailableOk: number;
}

/** Token count at which a session is auto-frozen: threshold × max_model_len, or maxTokens, whichever is lower. */
export function tokenLimit(maxModelLen: number | null, p: ThresholdPolicy): number | null {
  const byLen = maxModelLen !== null && maxModelLen > 0 ? p.threshold * maxModelLen : null;
  if (byLen === null) return p.maxTokens;
  if (p.maxTokens === null) return byLen;
  return Math.min(byLen, p.maxTokens);
}

export interface ThresholdState {
  tokens: number;
  state: SessionRecord['state'];
  /** Tokens at the last automatic freeze of this session (or of the auto window it was thawed from). */
  lastAutoTokens: number | null;
  lastAutoAt: number | null;
  /** The session was seen under the limit since its last automatic freeze (a new crossing is possible). */
  rearmed: boolean;
}

/**
 * Once per crossing: a session at or over the limit is frozen the first time; after that only when it went
 * back under the limit (its context was trimmed or restarted), then grew past the last freeze point again.
 * The cooldown spaces out automatic freezes of one session in any case.
 */
export function thresholdDue(s: ThresholdState, limit: number | null, nowMs: number, cooldownSeconds: number): boolean {
  if (limit === null || s.state !== 'active' || s.tokens < limit) return false;
  if (s.lastAutoAt !== null && nowMs - s.lastAutoAt < cooldownSeconds * 1000) return false;
  if (s.lastAutoTokens === null) return true;
  return (s.rearmed || s.lastAutoTokens < limit) && s.tokens > s.lastAutoTokens;
}

export interface PressureReadings {
  kvUsage: number | null;
  hostAvailable: number | null;
}

/**
 * Two signals, each with hysteresis: KV usage enters pressure at ≥ kvHigh and leaves below kvLow; host memory
 * enters when the available fraction is below hostAvailableMin and leaves at ≥ hostAvailableOk. Between the
 * watermarks the state does not change, so it never flaps. An unknown reading changes nothing.
 */
export class Hysteresis {
  kv = false;
  host = false;

  get under(): boolean {
    return this.kv || this.host;
  }

  /** The reason automatic freezes are made under right now (KV first). */
  get reason(): AutoReason | null {
    return this.kv ? 'kv_pressure' : this.host ? 'host_memory' : null;
  }

  update(r: PressureReadings, p: PressurePolicy): { entered: AutoReason[]; left: AutoReason[] } {
    const entered: AutoReason[] = [];
    const left: AutoReason[] = [];
    if (r.kvUsage !== null) {
      if (!this.kv && r.kvUsage >= p.kvHigh) {
        this.kv = true;
        entered.push('kv_pressure');
      } else if (this.kv && r.kvUsage < p.kvLow) {
        this.kv = false;
        left.push('kv_pressure');
      }
    }
    if (r.hostAvailable !== null) {
      if (!this.host && r.hostAvailable < p.hostAvailableMin) {
        this.host = true;
        entered.push('host_memory');
      } else if (this.host && r.hostAvailable >= p.hostAvailableOk) {
        this.host = false;
        left.push('host_memory');
      }
    }
    return { entered, left };
  }
}

/** Idle active sessions, least recently used first: the ones a pressure episode freezes. */
export function idleCandidates(
  sessions: readonly SessionRecord[],
  nowMs: number,
  idleSeconds: number,
): SessionRecord[] {
  return sessions
    .filter(
      (s) =>
        s.state === 'active' &&
        s.tokens > 0 &&
        s.autoFrozenAtTokens !== s.tokens &&
        nowMs - Date.parse(s.lastUsedAt) >= idleSeconds * 1000,
    )
    .sort((a, b) => (a.lastUsedAt < b.lastUsedAt ? -1 : a.lastUsedAt > b.lastUsedAt ? 1 : a.id < b.id ? -1 : 1));
}

/** `auto-<session>-<yyyymmddThhmmss>` (UTC), within the 128-character window-name rule; `n` > 1 adds `-n`. */
export function autoWindowName(session: string, at: Date, n = 1): string {
  const stamp = at
    .toISOString()
    .replace(/\.\d+Z$/, '')
    .replace(/[-:]/g, '');
  const suffix = `-${stamp}${n > 1 ? `-${n}` : ''}`;
  return `auto-${session.slice(0, 128 - 5 - suffix.length)}${suffix}`;
}
