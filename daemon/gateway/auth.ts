import { createHash, timingSafeEqual } from 'node:crypto';

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/**
 * Bearer-token check in constant time: both sides are hashed first, so the comparison is always between two
 * 32-byte digests and neither the token's length nor its content leaks through timing.
 */
export function bearerOk(expected: string | null, authorization: string | undefined): boolean {
  if (expected === null) return true;
  if (authorization === undefined) return false;
  const m = /^Bearer[ \t]+(\S+)\s*$/i.exec(authorization);
  const given = m ? (m[1] as string) : '';
  const ok = timingSafeEqual(digest(given), digest(expected));
  return ok && given !== '';
}
