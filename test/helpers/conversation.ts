/** Deterministic conversations of a chosen size, for tests and benchmarks. */
const WORDS =
  'the model keeps a cache of keys and values for every token so that a long conversation can continue without computing everything again when the window fills up we freeze it under a name and later thaw it exactly'.split(
    ' ',
  );

export type Message = {
  role: 'system' | 'user' | 'assistant';
  content: string;
};

function text(words: number, seed: number): string {
  const out: string[] = [];
  let x = seed * 2654435761;
  for (let i = 0; i < words; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out.push(WORDS[x % WORDS.length] as string);
    if (i % 17 === 16) out.push(`${x % 1000}.`);
  }
  return out.join(' ');
}

/** About `approxTokens` tokens of alternating user/assistant turns (the simulator's tokenizer: ~1.4 tokens per word here). */
export function conversation(approxTokens: number, seed = 1, wordsPerTurn = 200): Message[] {
  const messages: Message[] = [{ role: 'system', content: `You are test assistant number ${seed}.` }];
  let budget = Math.round(approxTokens / 1.39);
  let i = 0;
  while (budget > 0) {
    const n = Math.min(wordsPerTurn, budget);
    messages.push({ role: i % 2 === 0 ? 'user' : 'assistant', content: text(n, seed * 1000 + i) });
    budget -= n + 6;
    i++;
  }
  if (messages[messages.length - 1]?.role === 'user') messages.push({ role: 'assistant', content: 'Understood.' });
  return messages;
}
