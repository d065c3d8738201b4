/**
 * Parsing and validation of /v1/completions, /v1/chat/completions and /tokenize bodies, with vLLM's
 * validator messages (reference §1.4, §1.5, §1.7, §1.8). Unknown fields are accepted and ignored.
 */
import { type ChatMessage, renderChat } from './chat-template.js';
import { badRequest, type HttpError, isRecord, vllmError } from './http-util.js';
import { encodeWithSpecial, isValidTokenId } from './tokenizer.js';
import type { SimOptions } from './types.js';

export const SALT_EMPTY_MSG = "Parameter 'cache_salt' must be a non-empty string if provided.";
export const SALT_RULE_MSG =
  "Parameter 'cache_salt' must be at most 128 characters and must not contain '@', '/', '\\', or NUL.";
export const STREAM_OPTIONS_MSG = 'Stream options can only be defined when `stream=True`.';
export const PROMPT_LOGPROBS_STREAM_MSG = '`prompt_logprobs` are not available when `stream=True`.';
export const EMPTY_PROMPT_MSG = 'Prompt cannot be empty';
export const BOTH_PROMPT_FLAGS_MSG = 'Cannot set both `continue_final_message` and `add_generation_prompt` to True.';

export interface GenRequest {
  kind: 'completion' | 'chat';
  prompt: Int32Array;
  /** Prompt text for `echo` (the given string, or the decoded ids). */
  promptText: string | null;
  maxTokens: number;
  stream: boolean;
  includeUsage: boolean;
  continuousUsage: boolean;
  salt: string | null;
  promptLogprobs: number | null;
  echo: boolean;
  n: number;
  ignoreEos: boolean;
  minTokens: number;
}

type Body = Record<string, unknown>;

/** Python truthiness for JSON values (what `data.get(x)` checks in vLLM's validators). */
function truthy(v: unknown): boolean {
  if (v === undefined || v === null || v === false || v === 0 || v === '') return false;
  if (Array.isArray(v)) return v.length > 0;
  if (isRecord(v)) return Object.keys(v).length > 0;
  return true;
}

function optBool(body: Body, key: string, dflt: boolean): boolean {
  const v = body[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'boolean') throw badRequest(`${key}: Input should be a valid boolean`, key);
  return v;
}

function optInt(body: Body, key: string): number | null {
  const v = body[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'number' || !Number.isInteger(v)) throw badRequest(`${key}: Input should be a valid integer`, key);
  return v;
}

function checkModel(body: Body, opts: SimOptions): void {
  const m = body.model;
  if (m === undefined || m === null) return;
  if (typeof m !== 'string' || m !== opts.model) {
    throw vllmError(404, `The model \`${String(m)}\` does not exist.`, 'NotFoundError', 'model');
  }
}

function checkSalt(body: Body, opts: SimOptions): string | null {
  const s = body.cache_salt;
  if (s === undefined || s === null) return null;
  if (typeof s !== 'string' || s.length === 0) throw badRequest(SALT_EMPTY_MSG, 'cache_salt');
  if (opts.profile !== 'vllm-0.10' && (s.length > 128 || /[@/\\\0]/.test(s))) {
    throw badRequest(SALT_RULE_MSG, 'cache_salt');
  }
  return s;
}

function checkStreamOptions(body: Body): void {
  if (truthy(body.stream_options) && !truthy(body.stream)) throw badRequest(STREAM_OPTIONS_MSG, 'stream_options');
}

function checkPromptLogprobs(body: Body, opts: SimOptions): number | null {
  const plp = optInt(body, 'prompt_logprobs');
  if (plp === null) return null;
  const stream = truthy(body.stream);
  if (opts.profile === 'vllm-0.10') {
    if (stream && plp > 0) throw badRequest(PROMPT_LOGPROBS_STREAM_MSG, 'prompt_logprobs');
    if (plp < 0) throw badRequest('`prompt_logprobs` must be a positive value.', 'prompt_logprobs');
  } else {
    if (stream && (plp > 0 || plp === -1)) throw badRequest(PROMPT_LOGPROBS_STREAM_MSG, 'prompt_logprobs');
    if (plp < 0 && plp !== -1) throw badRequest('`prompt_logprobs` must be a positive value or -1.', 'prompt_logprobs');
  }
  return plp;
}

function streamUsage(body: Body, opts: SimOptions): { includeUsage: boolean; continuousUsage: boolean } {
  const so = body.stream_options;
  if (!isRecord(so)) return { includeUsage: false, continuousUsage: false };
  const dflt = opts.profile === 'vllm-0.10';
  const inc = so.include_usage;
  const cont = so.continuous_usage_stats;
  return {
    includeUsage: inc === undefined || inc === null ? dflt : inc === true,
    continuousUsage: cont === true,
  };
}

/** Token ids array → Int32Array, validating each id. */
export function toTokenArray(v: readonly unknown[], param: string): Int32Array {
  const out = new Int32Array(v.length);
  for (let i = 0; i < v.length; i++) {
    const id = v[i];
    if (!isValidTokenId(id)) {
      if (typeof id === 'number' && Number.isInteger(id) && id >= 0) {
        throw badRequest(`Token id ${id} is out of vocabulary`, param);
      }
      throw badRequest(`${param}: token ids must be integers ≥ 0`, param);
    }
    out[i] = id;
  }
  return out;
}

function contextError(maxModelLen: number, promptLen: number, maxTokens: number | null): HttpError {
  if (maxTokens === null) {
    return badRequest(
      `This model's maximum context length is ${maxModelLen} tokens. However, you requested ${promptLen} ` +
        'tokens in the messages, Please reduce the length of the messages.',
    );
  }
  return badRequest(
    `This model's maximum context length is ${maxModelLen} tokens. However, you requested ` +
      `${promptLen + maxTokens} tokens (${promptLen} in the messages, ${maxTokens} in the completion). ` +
      'Please reduce the length of the messages or completion.',
  );
}

function commonChecks(body: Body, opts: SimOptions): { salt: string | null; promptLogprobs: number | null } {
  checkStreamOptions(body);
  const promptLogprobs = checkPromptLogprobs(body, opts);
  const salt = checkSalt(body, opts);
  return { salt, promptLogprobs };
}

function finishRequest(
  kind: 'completion' | 'chat',
  body: Body,
  opts: SimOptions,
  prompt: Int32Array,
  promptText: string | null,
  requestedMax: number | null,
  common: { salt: string | null; promptLogprobs: number | null },
): GenRequest {
  const P = prompt.length;
  const echo = kind === 'completion' && optBool(body, 'echo', false);
  if (requestedMax !== null && requestedMax < 0)
    throw badRequest(`max_tokens must be at least 1, got ${requestedMax}.`);
  if (requestedMax === 0 && !echo) throw badRequest('max_tokens must be at least 1, got 0.');
  if (requestedMax === null && kind === 'chat' && P >= opts.maxModelLen) {
    throw contextError(opts.maxModelLen, P, null);
  }
  const maxTokens = requestedMax ?? (kind === 'chat' ? opts.maxModelLen - P : 16);
  if (P + maxTokens > opts.maxModelLen) throw contextError(opts.maxModelLen, P, maxTokens);
  const n = optInt(body, 'n') ?? 1;
  if (n < 1) throw badRequest(`n must be at least 1, got ${n}.`, 'n');
  const minTokens = optInt(body, 'min_tokens') ?? 0;
  const stream = optBool(body, 'stream', false);
  return {
    kind,
    prompt,
    promptText,
    maxTokens,
    stream,
    ...streamUsage(body, opts),
    salt: common.salt,
    promptLogprobs: common.promptLogprobs,
    echo,
    n,
    ignoreEos: optBool(body, 'ignore_eos', false),
    minTokens: Math.max(0, minTokens),
  };
}

export function parseCompletion(raw: unknown, opts: SimOptions): GenRequest {
  if (!isRecord(raw)) throw badRequest('Request body must be a JSON object');
  const body = raw;
  const common = commonChecks(body, opts);
  checkModel(body, opts);
  const addSpecial = optBool(body, 'add_special_tokens', true);
  let p = body.prompt;
  if (p === undefined || p === null) throw badRequest('prompt: Field required', 'prompt');
  if (Array.isArray(p) && p.length === 1 && (typeof p[0] === 'string' || Array.isArray(p[0]))) p = p[0];
  let prompt: Int32Array;
  let promptText: string | null = null;
  if (typeof p === 'string') {
    if (p.length === 0) throw badRequest(EMPTY_PROMPT_MSG, 'prompt');
    prompt = Int32Array.from(encodeWithSpecial(p, addSpecial));
    promptText = p;
  } else if (Array.isArray(p)) {
    if (p.length === 0) throw badRequest(EMPTY_PROMPT_MSG, 'prompt');
    if (typeof p[0] !== 'number') {
      throw badRequest('sim: batched prompts (more than one prompt per request) are not supported', 'prompt');
    }
    prompt = toTokenArray(p, 'prompt');
  } else {
    throw badRequest('prompt: Input should be a valid string or a list of token ids', 'prompt');
  }
  const maxTokens = optInt(body, 'max_tokens');
  return finishRequest('completion', body, opts, prompt, promptText, maxTokens, common);
}

/** Normalise OpenAI chat messages (string content or text parts) for the template. */
export function parseMessages(v: unknown): ChatMessage[] {
  if (!Array.isArray(v)) throw badRequest('messages: Input should be a valid list', 'messages');
  return v.map((m, i) => {
    if (!isRecord(m) || typeof m.role !== 'string') {
      throw badRequest(`messages.${i}: each message needs a string role`, 'messages');
    }
    const c = m.content;
    let content: string;
    if (c === undefined || c === null) content = '';
    else if (typeof c === 'string') content = c;
    else if (Array.isArray(c)) {
      content = c
        .map((part) => {
          if (isRecord(part) && typeof part.text === 'string') return part.text;
          if (typeof part === 'string') return part;
          throw badRequest(`messages.${i}.content: only text parts are supported`, 'messages');
        })
        .join('\n');
    } else {
      throw badRequest(`messages.${i}.content: Input should be a valid string or list of parts`, 'messages');
    }
    return { role: m.role, content };
  });
}

export function chatPromptFlags(body: Body): { addGenerationPrompt: boolean; continueFinalMessage: boolean } {
  // add_generation_prompt defaults to true even with continue_final_message (real vLLM then fails in the
  // template with a similar message), so continue_final_message needs an explicit add_generation_prompt:false.
  const continueFinalMessage = optBool(body, 'continue_final_message', false);
  const addGenerationPrompt = optBool(body, 'add_generation_prompt', true);
  if (continueFinalMessage && addGenerationPrompt) throw badRequest(BOTH_PROMPT_FLAGS_MSG);
  return { addGenerationPrompt, continueFinalMessage };
}

export function parseChat(raw: unknown, opts: SimOptions): GenRequest {
  if (!isRecord(raw)) throw badRequest('Request body must be a JSON object');
  const body = raw;
  const common = commonChecks(body, opts);
  const flags = chatPromptFlags(body);
  checkModel(body, opts);
  const messages = parseMessages(body.messages);
  const ids = renderChat(messages, { ...flags, addSpecialTokens: optBool(body, 'add_special_tokens', false) });
  const prompt = Int32Array.from(ids);
  const maxTokens = optInt(body, 'max_completion_tokens') ?? optInt(body, 'max_tokens');
  return finishRequest('chat', body, opts, prompt, null, maxTokens, common);
}

export interface TokenizeResult {
  tokens: number[];
  returnTokenStrs: boolean;
}

export function parseTokenize(raw: unknown, opts: SimOptions): TokenizeResult {
  if (!isRecord(raw)) throw badRequest('Request body must be a JSON object');
  const body = raw;
  checkModel(body, opts);
  const returnTokenStrs = optBool(body, 'return_token_strs', false);
  let tokens: number[];
  if (body.messages !== undefined) {
    const flags = chatPromptFlags(body);
    const messages = parseMessages(body.messages);
    tokens = renderChat(messages, { ...flags, addSpecialTokens: optBool(body, 'add_special_tokens', false) });
  } else {
    if (typeof body.prompt !== 'string') throw badRequest('prompt: Input should be a valid string', 'prompt');
    tokens = encodeWithSpecial(body.prompt, optBool(body, 'add_special_tokens', true));
  }
  if (tokens.length > opts.maxModelLen) {
    throw badRequest(
      `This model's maximum context length is ${opts.maxModelLen} tokens. However, your request has ` +
        `${tokens.length} input tokens. Please reduce the length of the input messages.`,
    );
  }
  return { tokens, returnTokenStrs };
}
