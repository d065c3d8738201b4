import type { ChatMessage, Usage } from '../protocol/index.js';
import { isRecord } from '../protocol/index.js';
import type { RouteKind } from './routing.js';
import { sseEvents } from './sse.js';

/** What the engine answered, reduced to what a session records: the first choice and the usage. */
export interface Reply {
  /** Chat: the assistant message as the next request will send it back. */
  message: ChatMessage | null;
  /** Completions: the generated text. */
  text: string | null;
  usage: Usage | null;
}

/** Collects response bytes up to a cap (past it, recording is skipped rather than memory spent). */
export class Capture {
  private chunks: Buffer[] = [];
  private size = 0;
  overflow = false;

  constructor(private readonly maxBytes: number) {}

  push(chunk: Buffer): void {
    if (this.overflow) return;
    this.size += chunk.length;
    if (this.size > this.maxBytes) {
      this.overflow = true;
      this.chunks = [];
      return;
    }
    this.chunks.push(chunk);
  }

  body(): Buffer {
    return this.chunks.length === 1 ? (this.chunks[0] as Buffer) : Buffer.concat(this.chunks);
  }
}

function usageOf(v: unknown): Usage | null {
  if (!isRecord(v) || typeof v.prompt_tokens !== 'number') return null;
  return v as unknown as Usage;
}

interface ToolCallAcc {
  id?: string;
  type?: string;
  function: { name: string; arguments: string };
}

function assistantMessage(content: string | null, toolCalls: unknown[] | null): ChatMessage {
  const m: ChatMessage = { role: 'assistant', content };
  if (toolCalls && toolCalls.length > 0) m.tool_calls = toolCalls;
  return m;
}

/** A non-streaming JSON answer (chat.completion or text_completion). */
export function replyFromJson(kind: RouteKind, body: Buffer): Reply | null {
  let v: unknown;
  try {
    v = JSON.parse(body.toString('utf8'));
  } catch {
    return null;
  }
  if (!isRecord(v) || !Array.isArray(v.choices)) return null;
  const first = (v.choices as unknown[]).find((c) => isRecord(c) && (c.index ?? 0) === 0) ?? v.choices[0];
  const usage = usageOf(v.usage);
  if (!isRecord(first)) return { message: null, text: null, usage };
  if (kind === 'chat') {
    const msg = isRecord(first.message) ? first.message : {};
    const content = typeof msg.content === 'string' ? msg.content : null;
    const tools = Array.isArray(msg.tool_calls) ? msg.tool_calls : null;
    return { message: assistantMessage(content, tools), text: null, usage };
  }
  return { message: null, text: typeof first.text === 'string' ? first.text : '', usage };
}

/** A streamed answer: the deltas of choice 0 put together, and the last usage seen. */
export function replyFromSse(kind: RouteKind, body: Buffer): Reply | null {
  let content = '';
  let sawContent = false;
  let usage: Usage | null = null;
  const tools = new Map<number, ToolCallAcc>();
  let any = false;
  for (const ev of sseEvents(body)) {
    if (!isRecord(ev)) continue;
    any = true;
    const u = usageOf(ev.usage);
    if (u) usage = u;
    if (!Array.isArray(ev.choices)) continue;
    for (const c of ev.choices as unknown[]) {
      if (!isRecord(c) || (c.index ?? 0) !== 0) continue;
      if (kind === 'completion') {
        if (typeof c.text === 'string') content += c.text;
        continue;
      }
      const d = isRecord(c.delta) ? c.delta : null;
      if (!d) continue;
      if (typeof d.content === 'string') {
        content += d.content;
        sawContent = true;
      }
      if (Array.isArray(d.tool_calls)) {
        for (const tc of d.tool_calls as unknown[]) {
          if (!isRecord(tc)) continue;
          const i = typeof tc.index === 'number' ? tc.index : tools.size;
          const acc = tools.get(i) ?? { function: { name: '', arguments: '' } };
          if (typeof tc.id === 'string') acc.id = tc.id;
          if (typeof tc.type === 'string') acc.type = tc.type;
          const f = isRecord(tc.function) ? tc.function : {};
          if (typeof f.name === 'string') acc.function.name += f.name;
          if (typeof f.arguments === 'string') acc.function.arguments += f.arguments;
          tools.set(i, acc);
        }
      }
    }
  }
  if (!any) return null;
  if (kind === 'completion') return { message: null, text: content, usage };
  const calls = [...tools.entries()].sort((a, b) => a[0] - b[0]).map(([, t]) => ({ type: 'function', ...t }));
  return { message: assistantMessage(sawContent || calls.length === 0 ? content : null, calls), text: null, usage };
}
