/**
 * Which cwm session holds which llama-server slot. llama-server has a fixed number of slots (`-np`); each keeps
 * one token sequence's KV. The table is only a placement hint: a request's `cache_prompt` reuse is checked token
 * by token by the server itself, so a wrong entry costs a recompute, never a wrong answer.
 */
import { Mutex } from '../../registry/mutex.js';

export interface SlotEntry {
  session: string | null;
  /** ms timestamp of the last time a request or an operation was pointed at this slot */
  lastUsed: number;
}

export interface SlotChoice {
  slot: number;
  /** The session that held the slot and has to give it up (its KV should be saved away first). */
  victim: string | null;
  /** How the slot was found. */
  how: 'own' | 'hint' | 'free' | 'idle' | 'busy';
}

export class SlotTable {
  private entries: SlotEntry[] = [];
  private readonly bySession = new Map<string, number>();
  /** Table changes and the slot saves/restores they trigger run one at a time. */
  readonly mutex = new Mutex();

  get size(): number {
    return this.entries.length;
  }

  /** Follow the server's slot count (`/props` total_slots); bindings to slots that no longer exist are dropped. */
  resize(total: number): void {
    if (total === this.entries.length) return;
    for (let i = total; i < this.entries.length; i++) {
      const s = this.entries[i]?.session;
      if (s) this.bySession.delete(s);
    }
    this.entries = Array.from({ length: total }, (_, i) => this.entries[i] ?? { session: null, lastUsed: 0 });
  }

  valid(slot: number): boolean {
    return Number.isInteger(slot) && slot >= 0 && slot < this.entries.length;
  }

  slotOf(session: string): number | null {
    return this.bySession.get(session) ?? null;
  }

  holder(slot: number): string | null {
    return this.entries[slot]?.session ?? null;
  }

  /** Give the slot to a session (it leaves any slot it had); returns the previous holder. */
  bind(slot: number, session: string, now: number = Date.now()): string | null {
    const e = this.entries[slot];
    if (!e) throw new RangeError(`slot ${slot} is out of range (0..${this.entries.length - 1})`);
    const prev = e.session;
    if (prev === session) {
      e.lastUsed = now;
      return null;
    }
    if (prev) this.bySession.delete(prev);
    const old = this.bySession.get(session);
    if (old !== undefined) {
      const oe = this.entries[old];
      if (oe) oe.session = null;
    }
    e.session = session;
    e.lastUsed = now;
    this.bySession.set(session, slot);
    return prev;
  }

  release(session: string): void {
    const slot = this.bySession.get(session);
    if (slot === undefined) return;
    this.bySession.delete(session);
    const e = this.entries[slot];
    if (e) e.session = null;
  }

  touch(slot: number, now: number = Date.now()): void {
    const e = this.entries[slot];
    if (e) e.lastUsed = now;
  }

  /**
   * Where a session should run: its own slot; else the slot it had before (hint) if nobody holds it; else a free
   * slot; else the least recently used slot the server reports idle and nobody was pointed at within graceMs;
   * else the least recently used slot of all (the server queues the request until that slot is free).
   */
  choose(
    session: string,
    hint: number | null,
    processing: (slot: number) => boolean,
    now: number = Date.now(),
    graceMs = 2000,
  ): SlotChoice {
    if (this.entries.length === 0) throw new RangeError('the engine reports no slots');
    const own = this.bySession.get(session);
    if (own !== undefined) return { slot: own, victim: null, how: 'own' };
    if (hint !== null && this.valid(hint) && this.entries[hint]?.session === null) {
      return { slot: hint, victim: null, how: 'hint' };
    }
    const free = this.entries.findIndex((e) => e.session === null);
    if (free !== -1) return { slot: free, victim: null, how: 'free' };
    const lru = (ids: number[]): number =>
      ids.reduce((best, id) => ((this.entries[id]?.lastUsed ?? 0) < (this.entries[best]?.lastUsed ?? 0) ? id : best));
    const all = this.entries.map((_, i) => i);
    const idle = all.filter((i) => !processing(i) && now - (this.entries[i]?.lastUsed ?? 0) >= graceMs);
    if (idle.length > 0) {
      const slot = lru(idle);
      return { slot, victim: this.entries[slot]?.session ?? null, how: 'idle' };
    }
    const slot = lru(all);
    return { slot, victim: this.entries[slot]?.session ?? null, how: 'busy' };
  }

  snapshot(): { slot: number; session: string | null; lastUsed: number }[] {
    return this.entries.map((e, slot) => ({ slot, session: e.session, lastUsed: e.lastUsed }));
  }
}
