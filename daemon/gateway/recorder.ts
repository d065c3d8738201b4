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
}

/**
 * Records exchanges into their sessions after the response went out, one at a time per session, in the order
 * the responses finished. Each exchange carries the session's whole context, so when a session's turns arrive
 * faster than they can be recorded, only the newest waiting one is written (counting the turns it replaced):
 * the backlog never grows beyond one exchange per session, and the session still ends up exact.
 */
export class Recorder {
  private readonly lanes = new Map<string, Lane>();
  private pending = 0;
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly sessions: SessionService,
    private readonly log: Logger,
    private readonly metrics: Metrics,
    private readonly onRecorded: (record: SessionRecord) => void = () => {},
  ) {}

  /** Exchanges waiting or being written. */
  get inFlight(): number {
    return this.pending;
  }

  enqueue(x: Exchange): void {
    let lane = this.lanes.get(x.session);
    if (!lane) {
      lane = { next: null, folded: 0, running: false };
      this.lanes.set(x.session, lane);
    }
    if (lane.next !== null) {
      lane.folded++;
      this.pending--;
      this.metrics.gatewayRecords.inc({ outcome: 'coalesced' });
    }
    lane.next = x;
    this.pending++;
    if (!lane.running) void this.drainLane(x.session, lane);
  }

  private async drainLane(session: string, lane: Lane): Promise<void> {
    lane.running = true;
    while (lane.next !== null) {
      const x = lane.next;
      const turns = 1 + lane.folded;
      lane.next = null;
      lane.folded = 0;
      await this.run(x, turns);
      this.pending--;
    }
    lane.running = false;
    this.lanes.delete(session);
    if (this.pending === 0) for (const w of this.idleWaiters.splice(0)) w();
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

  /** Wait until every queued record is written (bounded). */
  async drain(timeoutMs: number): Promise<void> {
    if (this.pending === 0) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, timeoutMs);
      this.idleWaiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }
}
