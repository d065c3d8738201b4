/**
 * Llama-3 style chat template, rendered directly to token ids, segment by segment:
 *
 *   <|begin_of_text|>
 *   per message:  <|start_header_id|> role <|end_header_id|> "\n\n" content <|eot_id|>
 *   generation:   <|start_header_id|> assistant <|end_header_id|> "\n\n"
 *
 * Every segment is tokenized on its own and the ids are concatenated, so segment boundaries never merge and
 * the template is prefix-stable: tokens(messages, agp=false) is an exact prefix of tokens(messages + [m])
 * and of tokens(messages, agp=true). `continue_final_message` renders the last message without its
 * <|eot_id|> (and no generation prompt). Content is not trimmed (the real Llama-3 template trims).
 */
import { BOS_ID, END_HEADER_ID, EOT_ID, encode, START_HEADER_ID } from './tokenizer.js';

export interface ChatMessage {
  role: string;
  content: string;
}

export interface ChatTemplateOptions {
  addGenerationPrompt: boolean;
  continueFinalMessage: boolean;
  /** vLLM's chat-form `add_special_tokens` (default false): true adds a second BOS, as real tokenizers do. */
  addSpecialTokens?: boolean;
}

const NEWLINES = encode('\n\n');
const MEMO_LIMIT = 4096;
const MEMO_MIN_CHARS = 256;
/** Memo of long message bodies → ids, so growing conversations are not re-tokenized on every turn. */
const memo = new Map<string, readonly number[]>();

function contentTokens(text: string): readonly number[] {
  if (text.length < MEMO_MIN_CHARS) return encode(text);
  const hit = memo.get(text);
  if (hit !== undefined) {
    memo.delete(text);
    memo.set(text, hit);
    return hit;
  }
  const ids = encode(text);
  memo.set(text, ids);
  if (memo.size > MEMO_LIMIT) {
    const oldest = memo.keys().next();
    if (oldest.done !== true) memo.delete(oldest.value);
  }
  return ids;
}

function pushAll(out: number[], ids: readonly number[]): void {
  for (let i = 0; i < ids.length; i++) out.push(ids[i] as number);
}

function pushHeader(out: number[], role: string): void {
  out.push(START_HEADER_ID);
  pushAll(out, encode(role));
  out.push(END_HEADER_ID);
  pushAll(out, NEWLINES);
}

/** Render messages to token ids (see module comment for the exact layout). */
export function renderChat(messages: readonly ChatMessage[], opts: ChatTemplateOptions): number[] {
  const out: number[] = [BOS_ID];
  if (opts.addSpecialTokens === true) out.unshift(BOS_ID);
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i] as ChatMessage;
    pushHeader(out, m.role);
    pushAll(out, contentTokens(m.content));
    const isLast = i === messages.length - 1;
    if (!(isLast && opts.continueFinalMessage)) out.push(EOT_ID);
  }
  if (opts.addGenerationPrompt && !opts.continueFinalMessage) pushHeader(out, 'assistant');
  return out;
}

/** The rendered prompt as text (what `decode(renderChat(...))` returns). */
export function renderChatText(messages: readonly ChatMessage[], opts: ChatTemplateOptions): string {
  let s = opts.addSpecialTokens === true ? '<|begin_of_text|><|begin_of_text|>' : '<|begin_of_text|>';
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i] as ChatMessage;
    s += `<|start_header_id|>${m.role}<|end_header_id|>\n\n${m.content}`;
    if (!(i === messages.length - 1 && opts.continueFinalMessage)) s += '<|eot_id|>';
  }
  if (opts.addGenerationPrompt && !opts.continueFinalMessage) s += '<|start_header_id|>assistant<|end_header_id|>\n\n';
  return s;
}
