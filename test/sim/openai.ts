/**
 * /v1/completions and /v1/chat/completions: admission into the engine, the latency model (timers only, never
 * a busy loop), non-streaming JSON and SSE streaming with one chunk per generated token.
 *
 * Latency: TTFT = recomputed_tokens·prefillUsPerToken + loaded_tokens·loadUsPerToken; each further token
 * adds decodeUsPerToken (streams are paced against absolute deadlines, so sub-millisecond per-token costs
 * add up correctly).
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep, setImmediate as yieldLoop } from 'node:timers/promises';
import { AbortedError, type Admission } from './engine.js';
import { deltaText, type Generation, generate } from './generate.js';
import type { Responder } from './http-util.js';
import type { GenRequest } from './requests.js';
import type { SimState } from './state.js';
import { decode, tokenStr } from './tokenizer.js';

interface Usage {
  prompt_tokens: number;
  total_tokens: number;
  completion_tokens: number;
  prompt_tokens_details: { cached_tokens: number } | null;
}

function isAbort(e: unknown): boolean {
  return e instanceof AbortedError || (e instanceof Error && e.name === 'AbortError');
}

async function sleepMs(ms: number, signal: AbortSignal): Promise<void> {
  if (ms <= 0) return;
  await sleep(ms, undefined, { signal });
}

function usageOf(state: SimState, promptLen: number, completion: number, cached: number): Usage {
  const o = state.options;
  let details: Usage['prompt_tokens_details'] = null;
  if (o.promptTokensDetails && !(o.profile === 'vllm-0.10' && cached === 0)) details = { cached_tokens: cached };
  return {
    prompt_tokens: promptLen,
    total_tokens: promptLen + completion,
    completion_tokens: completion,
    prompt_tokens_details: details,
  };
}

type PromptLogprob = Record<string, { logprob: number; rank: number; decoded_token: string }> | null;

function promptLogprobs(prompt: Int32Array): PromptLogprob[] {
  const out: PromptLogprob[] = new Array(prompt.length);
  out[0] = null;
  for (let i = 1; i < prompt.length; i++) {
    const id = prompt[i] as number;
    out[i] = { [id]: { logprob: -((id % 97) + 1) / 10, rank: 1, decoded_token: tokenStr(id) } };
  }
  return out;
}

export async function handleGenerate(
  state: SimState,
  r: Responder,
  req: GenRequest,
  signal: AbortSignal,
  arrival: number,
): Promise<void> {
  const o = state.options;
  const engine = state.engine;
  const P = req.prompt.length;
  const gens: Generation[] = [];
  for (let i = 0; i < req.n; i++) {
    gens.push(
      generate(req.prompt, {
        maxTokens: req.maxTokens,
        ignoreEos: req.ignoreEos,
        minTokens: req.minTokens,
        choiceIndex: i,
      }),
    );
  }
  const steps = Math.max(...gens.map((g) => g.tokens.length));
  const kvTokens = P + Math.max(steps - 1, 0);
  engine.assertFits(kvTokens);

  const created = Math.floor(Date.now() / 1000);
  const id = `${req.kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID().replace(/-/g, '')}`;
  if (req.stream) {
    r.resetAfterChunks = Math.max(1, Math.floor((steps * req.n) / 2));
    r.startSse();
  }

  let adm: Admission;
  try {
    adm = await engine.admit({
      prompt: req.prompt,
      salt: req.salt,
      skipPrefixRead: req.promptLogprobs !== null,
      kvTokens,
      signal,
    });
  } catch (e) {
    if (isAbort(e)) return;
    throw e;
  }
  const first = gens[0] as Generation;
  try {
    const prefillMs = (adm.computed * o.prefillUsPerToken + adm.externalHit * o.loadUsPerToken) / 1000;
    await sleepMs(prefillMs, signal);
    engine.completePrefill(adm);
    const firstTokenAt = performance.now();
    const ttftS = (firstTokenAt - arrival) / 1000;
    const decodeMs = o.decodeUsPerToken / 1000;
    const completionTokens = gens.reduce((s, g) => s + g.tokens.length, 0);
    const usage = usageOf(state, P, completionTokens, adm.cachedTokens);
    const plp = req.promptLogprobs === null ? null : promptLogprobs(req.prompt);
    if (req.stream) {
      await streamTokens(state, r, req, gens, { id, created, usage, firstTokenAt, decodeMs, signal });
    } else {
      await sleepMs(Math.max(steps - 1, 0) * decodeMs, signal);
      r.json(
        200,
        req.kind === 'chat'
          ? chatBody(state, id, created, gens, usage, plp)
          : completionBody(state, req, id, created, gens, usage, plp),
      );
    }
    engine.finish(adm, first.tokens, first.finishReason, ttftS, (performance.now() - arrival) / 1000);
  } catch (e) {
    engine.abort(adm);
    if (!isAbort(e)) throw e;
  }
}

function completionBody(
  state: SimState,
  req: GenRequest,
  id: string,
  created: number,
  gens: Generation[],
  usage: Usage,
  plp: PromptLogprob[] | null,
): unknown {
  const echoText = req.echo ? (req.promptText ?? decode(req.prompt)) : '';
  return {
    id,
    object: 'text_completion',
    created,
    model: state.options.model,
    choices: gens.map((g, index) => ({
      index,
      text: echoText + decode(g.tokens, { skipSpecialTokens: true }),
      logprobs: null,
      finish_reason: g.finishReason,
      stop_reason: null,
      prompt_logprobs: plp,
    })),
    service_tier: null,
    system_fingerprint: null,
    usage,
    kv_transfer_params: null,
  };
}

function chatBody(
  state: SimState,
  id: string,
  created: number,
  gens: Generation[],
  usage: Usage,
  plp: PromptLogprob[] | null,
): unknown {
  return {
    id,
    object: 'chat.completion',
    created,
    model: state.options.model,
    choices: gens.map((g, index) => ({
      index,
      message: {
        role: 'assistant',
        content: decode(g.tokens, { skipSpecialTokens: true }),
        refusal: null,
        annotations: null,
        audio: null,
        function_call: null,
        tool_calls: [],
        reasoning_content: null,
      },
      logprobs: null,
      finish_reason: g.finishReason,
      stop_reason: null,
    })),
    service_tier: null,
    system_fingerprint: null,
    usage,
    prompt_logprobs: plp,
    kv_transfer_params: null,
  };
}

interface StreamCtx {
  id: string;
  created: number;
  usage: Usage;
  firstTokenAt: number;
  decodeMs: number;
  signal: AbortSignal;
}

async function streamTokens(
  state: SimState,
  r: Responder,
  req: GenRequest,
  gens: Generation[],
  ctx: StreamCtx,
): Promise<void> {
  const chat = req.kind === 'chat';
  const object = chat ? 'chat.completion.chunk' : 'text_completion';
  const head = { id: ctx.id, object, created: ctx.created, model: state.options.model };
  const P = req.prompt.length;
  const steps = Math.max(...gens.map((g) => g.tokens.length));
  const echoText = req.echo ? (req.promptText ?? decode(req.prompt)) : '';
  if (chat) {
    for (let i = 0; i < gens.length; i++) {
      const choice = { index: i, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null };
      if (!r.sse({ ...head, choices: [choice] }, false)) throw new AbortedError();
    }
  }
  let emitted = 0;
  for (let step = 0; step < steps; step++) {
    if (step > 0) {
      const wait = ctx.firstTokenAt + step * ctx.decodeMs - performance.now();
      if (wait >= 1) await sleepMs(wait, ctx.signal);
      else if (step % 256 === 0) await yieldLoop(undefined, { signal: ctx.signal });
    }
    for (let i = 0; i < gens.length; i++) {
      const g = gens[i] as Generation;
      if (step >= g.tokens.length) continue;
      const last = step === g.tokens.length - 1;
      let text = deltaText(g.tokens[step] as number);
      if (step === 0 && echoText !== '') text = echoText + text;
      emitted++;
      const finish = last ? g.finishReason : null;
      const choice = chat
        ? { index: i, delta: { content: text }, logprobs: null, finish_reason: finish, stop_reason: null }
        : { index: i, text, logprobs: null, finish_reason: finish, stop_reason: null };
      const chunk: Record<string, unknown> = { ...head, choices: [choice] };
      if (req.continuousUsage) {
        chunk.usage = { prompt_tokens: P, total_tokens: P + emitted, completion_tokens: emitted };
      }
      if (!r.sse(chunk, true)) throw new AbortedError();
    }
  }
  if (req.includeUsage) {
    if (!r.sse({ ...head, choices: [], usage: ctx.usage }, false)) throw new AbortedError();
  }
  r.endSse();
}
