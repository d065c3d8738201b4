/**
 * Fault injection state for one server (vLLM or the LMCache controller). Admin paths are never affected.
 * - '503': answer 503 with an error body; 'down': like 503 but also /health (vLLM's dead-engine state);
 * - 'slow': delay the response headers by delayMs; 'drop': destroy the socket without answering;
 * - 'reset-mid-stream': send part of the response (half the SSE token chunks, or half the body) and
 *   destroy the socket.
 * `count` = how many requests to affect before resetting to 'none'. `paths` = path prefixes to affect
 * (default: all, except /health and /ping for modes other than 'down').
 */
import { isRecord } from './http-util.js';
import type { FaultMode, FaultSpec, FaultTarget } from './types.js';

const MODES: readonly FaultMode[] = ['none', '503', 'slow', 'drop', 'reset-mid-stream', 'down'];

export interface ActiveFault {
  mode: Exclude<FaultMode, 'none'>;
  delayMs: number;
}

export interface FaultStatus {
  mode: FaultMode;
  delayMs: number;
  remaining: number | null;
  paths: string[] | null;
  affected: number;
}

export class FaultState {
  private mode: FaultMode = 'none';
  private delayMs = 1000;
  private remaining: number | null = null;
  private paths: string[] | null = null;
  private affected = 0;

  set(spec: FaultSpec): void {
    this.mode = spec.mode;
    this.delayMs = spec.delayMs ?? 1000;
    this.remaining = spec.count ?? null;
    this.paths = spec.paths ?? null;
    this.affected = 0;
  }

  clear(): void {
    this.set({ mode: 'none' });
  }

  status(): FaultStatus {
    return {
      mode: this.mode,
      delayMs: this.delayMs,
      remaining: this.remaining,
      paths: this.paths,
      affected: this.affected,
    };
  }

  /** The fault to apply to this request, if any (consumes one from `count`). */
  take(path: string): ActiveFault | null {
    if (this.mode === 'none' || path.startsWith('/admin/')) return null;
    if (this.paths !== null) {
      if (!this.paths.some((p) => path === p || path.startsWith(p))) return null;
    } else if (this.mode !== 'down' && (path === '/health' || path === '/ping')) {
      return null;
    }
    const fault: ActiveFault = { mode: this.mode, delayMs: this.delayMs };
    this.affected++;
    if (this.remaining !== null) {
      this.remaining--;
      if (this.remaining <= 0) {
        this.mode = 'none';
        this.remaining = null;
      }
    }
    return fault;
  }
}

/** Parse an `/admin/faults` body; returns an error message or the spec. */
export function parseFaultSpec(body: unknown): FaultSpec | string {
  if (!isRecord(body)) return 'body must be a JSON object';
  const mode = body.mode;
  if (typeof mode !== 'string' || !(MODES as readonly string[]).includes(mode)) {
    return `mode must be one of ${MODES.join(', ')}`;
  }
  const spec: FaultSpec = { mode: mode as FaultMode };
  if (body.delayMs !== undefined && body.delayMs !== null) {
    if (typeof body.delayMs !== 'number' || !(body.delayMs >= 0)) return 'delayMs must be a number ≥ 0';
    spec.delayMs = body.delayMs;
  }
  if (body.count !== undefined && body.count !== null) {
    if (typeof body.count !== 'number' || !Number.isInteger(body.count) || body.count < 1) {
      return 'count must be an integer ≥ 1';
    }
    spec.count = body.count;
  }
  if (body.paths !== undefined && body.paths !== null) {
    if (!Array.isArray(body.paths) || !body.paths.every((p): p is string => typeof p === 'string')) {
      return 'paths must be an array of strings';
    }
    spec.paths = body.paths;
  }
  if (body.target !== undefined && body.target !== null) {
    if (body.target !== 'vllm' && body.target !== 'lmcache') return "target must be 'vllm' or 'lmcache'";
    spec.target = body.target as FaultTarget;
  }
  return spec;
}
