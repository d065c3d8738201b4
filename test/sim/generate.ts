/**
 * Deterministic "model": the generated tokens are a pure function of the prompt token ids (seeded by a hash
 * of the prompt length and its last 16 tokens, plus the choice index). Output is English-looking words with
 * sentences ending in '.', every token a single whole-word token, so re-tokenizing the text gives the same
 * ids. The natural length is 16..79 tokens, the last one being <|eot_id|> (finish_reason "stop"; the EOT
 * token counts in completion_tokens but not in the text). So `max_tokens <= 16` always ends with "length".
 * `ignore_eos` never stops early; `min_tokens` delays the stop.
 */
import { EOT_ID, encode, tokenText } from './tokenizer.js';
import { GENERATION_WORDS } from './words.js';

export type FinishReason = 'stop' | 'length';

export interface GenerationParams {
  maxTokens: number;
  ignoreEos: boolean;
  minTokens: number;
  choiceIndex: number;
}

export interface Generation {
  tokens: number[];
  finishReason: FinishReason;
}

interface WordIds {
  plain: number;
  spaced: number;
  cap: number;
  spacedCap: number;
}

function single(text: string): number | undefined {
  const ids = encode(text);
  return ids.length === 1 ? ids[0] : undefined;
}

const WORD_IDS: readonly WordIds[] = GENERATION_WORDS.flatMap((w) => {
  const cap = (w[0] as string).toUpperCase() + w.slice(1);
  const plain = single(w);
  const spaced = single(` ${w}`);
  const capId = single(cap);
  const spacedCap = single(` ${cap}`);
  if (plain === undefined || spaced === undefined || capId === undefined || spacedCap === undefined) return [];
  return [{ plain, spaced, cap: capId, spacedCap }];
});
const PERIOD_ID = 46;

function mulberry32(seed: number): () => number {
  let a = seed | 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return (t ^ (t >>> 14)) >>> 0;
  };
}

export function generationSeed(prompt: ArrayLike<number>, choiceIndex: number): number {
  let h = 0x811c9dc5 ^ prompt.length;
  const from = Math.max(0, prompt.length - 16);
  for (let i = from; i < prompt.length; i++) h = Math.imul(h ^ (prompt[i] as number), 0x01000193);
  h = Math.imul(h ^ choiceIndex, 0x01000193);
  return h >>> 0;
}

export function generate(prompt: ArrayLike<number>, p: GenerationParams): Generation {
  const rand = mulberry32(generationSeed(prompt, p.choiceIndex));
  let natural = 16 + (rand() % 64);
  if (natural < p.minTokens + 1) natural = p.minTokens + 1;
  const stops = !p.ignoreEos && natural <= p.maxTokens;
  const count = stops ? natural : Math.max(0, p.maxTokens);
  const tokens: number[] = new Array(count);
  let sentenceLeft = 0;
  for (let i = 0; i < count; i++) {
    if (stops && i === count - 1) {
      tokens[i] = EOT_ID;
      break;
    }
    const w = WORD_IDS[rand() % WORD_IDS.length] as WordIds;
    if (i === 0) {
      tokens[i] = w.cap;
      sentenceLeft = 5 + (rand() % 10);
    } else if (sentenceLeft === 0) {
      tokens[i] = PERIOD_ID;
      sentenceLeft = -1;
    } else if (sentenceLeft < 0) {
      tokens[i] = w.spacedCap;
      sentenceLeft = 5 + (rand() % 10);
    } else {
      tokens[i] = w.spaced;
      sentenceLeft--;
    }
  }
  return { tokens, finishReason: stops ? 'stop' : 'length' };
}

/** Text of one generated token as streamed (special tokens are skipped, like skip_special_tokens=true). */
export function deltaText(id: number): string {
  return id >= 128000 ? '' : tokenText(id);
}
