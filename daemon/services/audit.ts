import type { AuditEvent } from '../protocol/index.js';
import type { BatchOp, Registry } from '../registry/db.js';

export type AuditActor = AuditEvent['actor'];

export interface AuditInput {
  action: string;
  actor: AuditActor;
  target?: string | null;
  outcome?: 'ok' | 'error';
  reason?: string | null;
  details?: Record<string, unknown>;
}

const MAX_EVENTS = 100_000;

/**
 * Audit events live in the registry, keyed by time so listing newest-first is a reverse range read. An event that
 * belongs to a change is written in that change's batch, so the trail never disagrees with the data.
 */
export class AuditLog {
  private seq = 0;
  private written = 0;
  private pruning: Promise<void> | null = null;

  constructor(
    private readonly reg: Registry,
    /** Events kept; older ones are pruned every 1,000 writes. */
    private readonly maxEvents = MAX_EVENTS,
  ) {}

  op(input: AuditInput): BatchOp {
    const now = new Date();
    const id = `${now.getTime().toString().padStart(15, '0')}-${(this.seq++ % 1e6).toString().padStart(6, '0')}`;
    const event: AuditEvent = {
      id,
      time: now.toISOString(),
      action: input.action,
      actor: input.actor,
      target: input.target ?? null,
      outcome: input.outcome ?? 'ok',
      reason: input.reason ?? null,
      details: input.details ?? {},
    };
    // Most events ride in the batch of the change they describe (never through record()), so the pruning is
    // scheduled from here: checking only in record() meant it practically never ran and the trail grew unbounded.
    if (++this.written % 1000 === 0) this.schedulePrune();
    return { type: 'put', sublevel: this.reg.audit, key: id, value: event };
  }

  /** Record an event on its own (for actions with no registry change, or failures). */
  async record(input: AuditInput): Promise<void> {
    await this.reg.batch([this.op(input)]);
  }

  /** Wait for a scheduled prune (tests, shutdown). */
  async settled(): Promise<void> {
    await this.pruning;
  }

  private schedulePrune(): void {
    this.pruning ??= new Promise<void>((resolve) => setImmediate(resolve))
      .then(() => this.prune())
      .catch(() => {
        // best effort: the registry may be closing, or the disk full; the next thousand writes try again
      })
      .finally(() => {
        this.pruning = null;
      });
  }

  async list(opts: { limit: number; action?: string | undefined; since?: string | undefined }): Promise<AuditEvent[]> {
    const out: AuditEvent[] = [];
    const gte = opts.since ? `${Date.parse(opts.since).toString().padStart(15, '0')}` : undefined;
    const iterOpts = gte ? { reverse: true, gte } : { reverse: true };
    for await (const value of this.reg.audit.values(iterOpts)) {
      const e = value as AuditEvent;
      if (opts.action && e.action !== opts.action) continue;
      out.push(e);
      if (out.length >= opts.limit) break;
    }
    return out;
  }

  private async prune(): Promise<void> {
    let n = 0;
    const doomed: BatchOp[] = [];
    for await (const key of this.reg.audit.keys({ reverse: true })) {
      n++;
      if (n > this.maxEvents) doomed.push({ type: 'del', sublevel: this.reg.audit, key });
      if (doomed.length >= 10_000) break;
    }
    await this.reg.batch(doomed);
  }
}
