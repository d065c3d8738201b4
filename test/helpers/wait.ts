import assert from 'node:assert/strict';

/**
 * Poll until `fn` returns a truthy value and return it; fail naming `what` after `ms`. For effects that happen
 * after a call returns (a write-behind record, a retried release, a reloaded config). Never a timing assertion:
 * the deadline only bounds a wait that should end much sooner.
 */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | null | undefined | false>,
  ms = 15_000,
  everyMs = 25,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
