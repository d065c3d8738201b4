import type { Logger } from 'pino';
import type { Metrics } from '../metrics.js';
import type { ChatMessage } from '../protocol/index.js';
import { isRecord } from '../protocol/index.js';
import type { SessionRecord } from '../registry/records.js';
import type { RecordInput, SessionService } from '../services/sessions.js';
import type { Reply } from './capture.js';
import type { RouteKind } from './routing.js';

export interface Exchange {
  session: string;
  kind: RouteKind;
  /** The request body as sent to the engine. */
  request: Record<string, unknown>;
  /** Parsed later, off the response path. */
  reply: () => Reply | null;
  lineageRoot: string;
  /** Model to fall back on when the request names none. */
  defaultModel: () => Promise<string | null>;
}

/** The record for one exchange: exact messages plus the reply (chat), or prompt plus completion. */
export async function toRecordInput(x: Exchange, reply: Reply | null): Promise<RecordInput | null> {
  const model = typeof x.request.model === 'string' ? x.request.model : await x.defaultModel();
  if (!model) return null;
  const base = { session: x.session, model, lineageRoot: x.lineageRoot, usage: reply?.usage ?? undefined };
  if (x.kind === 'chat') {
    if (!Array.isArray(x.request.messages)) return null;
    const messages = (x.request.messages as unknown[]).filter(isRecord) as ChatMessage[];
    return { ...base, messages: reply?.message ? [...messages, reply.message] : messages };
  }
  let prompt = x.request.prompt;
  // The usual single-prompt batch shape, ["text"] or [[ids]]; real batches are not one conversation.
  if (Array.isArray(prompt) && prompt.length === 1 && (typeof prompt[0] === 'string' || Array.isArray(prompt[0]))) {
    prompt = prompt[0];
  }
  const isIds = Array.isArray(prompt) && prompt.every((t) => typeof t === 'number');
  if (typeof prompt !== 'string' && !isIds) return null;
  let completion = reply?.text ?? undefined;
  if (
    completion !== undefined &&
    x.request.echo === true &&
    typeof prompt === 'string' &&
    completion.startsWith(prompt)
  ) {
    completion = completion.slice(prompt.length);
  }
  return { ...base, prompt: prompt as string | number[], ...(completion !== undefined ? { completion } : {}) };
}

interface Lane {
  /** The newest exchange not yet recorded, and how many older ones it replaced. */
  next: Exchange | null;
  folded: number;
  running: boolean;
  /** Write-behind timer for `next`, and when the oldest exchange it stands for arrived. */
  timer: NodeJS.Timeout | null;
  firstAt: number;
  /** Readers waiting for everything enqueued so far to be written. */
  waiters: (() => void)[];
}

/** A session's turns are written once it has been quiet this long... */
export const RECORD_QUIET_MS = 250;
/** ...or at the latest this long after the first unwritten turn, however busy it stays. */
export const RECORD_MAX_DELAY_MS = 1000;

export interface RecorderTiming {
  quietMs: number;
  maxDelayMs: number;
}

/**
 * Records exchanges into their sessions after the response went out, write-behind: one at a time per session, in
 * the order the responses finished, once the session has been quiet for a moment (bounded). Each exchange carries
 * the session's whole context, so only the newest waiting one is written (counting the turns it replaced): a busy
 * session costs one record (one engine /tokenize, one registry batch) per quiet period instead of one per turn, the
 * backlog never grows beyond one exchange per session, and the session still ends up exact. Readers that must see
 * the latest turn (session.get/list/end/record, freeze, thaw) call flush() first, so nobody reads a stale session.
 * A daemon crash can lose the unwritten turns (at most RECORD_MAX_DELAY_MS of them); the next turn carries the whole
 * context again and restores them.
 */
export class Recorder {
  private readonly lanes = new Map<string, Lane>();
  private pending = 0;
  private readonly timing: RecorderTiming;

  constructor(
    private readonly sessions: SessionService,
    private readonly log: Logger,
    private readonly metrics: Metrics,
    private readonly onRecorded: (record: SessionRecord) => void = () => {},
    timing: Partial<RecorderTiming> = {},
  ) {
    this.timing = { quietMs: RECORD_QUIET_MS, maxDelayMs: RECORD_MAX_DELAY_MS, ...timing };
  }

  /** Exchanges waiting or being written. */
  get inFlight(): number {
    return this.pending;
  }

  enqueue(x: Exchange): void {
    let lane = this.lanes.get(x.session);
    if (!lane) {
      lane = { next: null, folded: 0, running: false, timer: null, firstAt: 0, waiters: [] };
      this.lanes.set(x.session, lane);
    }
    if (lane.next !== null) {
      lane.folded++;
      this.pending--;
      this.metrics.gatewayRecords.inc({ outcome: 'coalesced' });
    } else {
      lane.firstAt = performance.now();
    }
    lane.next = x;
    this.pending++;
    // A running write reschedules what arrived meanwhile when it ends.
    if (!lane.running) this.schedule(x.session, lane);
  }

  private schedule(session: string, lane: Lane): void {
    const { quietMs, maxDelayMs } = this.timing;
    if (quietMs <= 0 || lane.waiters.length > 0) {
      void this.drainLane(session, lane);
      return;
    }
    if (lane.timer !== null) {
      // Quiet period restarts with each turn, but never past the first unwritten turn's deadline.
      if (performance.now() + quietMs <= lane.firstAt + maxDelayMs) lane.timer.refresh();
      return;
    }
    lane.timer = setTimeout(() => {
      lane.timer = null;
      void this.drainLane(session, lane);
    }, quietMs);
  }

  private async drainLane(session: string, lane: Lane): Promise<void> {
    if (lane.running) return;
    if (lane.timer !== null) {
      clearTimeout(lane.timer);
      lane.timer = null;
    }
    lane.running = true;
    // Write the newest exchange; keep going while someone is waiting for the turns that arrived meanwhile.
    do {
      const x = lane.next;
      if (x === null) break;
      const turns = 1 + lane.folded;
      lane.next = null;
      lane.folded = 0;
      await this.run(x, turns);
      this.pending--;
    } while (lane.next !== null && lane.waiters.length > 0);
    lane.running = false;
    if (lane.next !== null) {
      // A turn came in during the write (enqueue noted when): it waits for its own quiet period.
      this.schedule(session, lane);
      return;
    }
    this.lanes.delete(session);
    for (const w of lane.waiters.splice(0)) w();
  }

  private async run(x: Exchange, turns: number): Promise<void> {
    try {
      const input = await toRecordInput(x, x.reply());
      if (!input) {
        this.metrics.gatewayRecords.inc({ outcome: 'skipped' });
        return;
      }
      if (turns > 1) input.turns = turns;
      const record = await this.sessions.record(input, 'gateway');
      this.metrics.gatewayRecords.inc({ outcome: 'ok' });
      this.onRecorded(record);
    } catch (err) {
      this.metrics.gatewayRecords.inc({ outcome: 'error' });
      this.log.warn({ err, session: x.session }, 'could not record a gateway exchange into its session');
    }
  }

  /** Write now whatever is waiting for `session` (every session when omitted), and resolve once it is written. */
  flush(session?: string): Promise<void> {
    if (session === undefined) return Promise.all([...this.lanes.keys()].map((s) => this.flush(s))).then(() => {});
    const lane = this.lanes.get(session);
    if (!lane) return Promise.resolve();
    return new Promise<void>((resolve) => {
      lane.waiters.push(resolve);
      if (!lane.running) void this.drainLane(session, lane);
    });
  }

  /** Write everything waiting, and wait until it is written (bounded). */
  async drain(timeoutMs: number): Promise<void> {
    if (this.pending === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.flush(),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, timeoutMs);
      }),
    ]);
    clearTimeout(timer);
  }
}
