import { createHmac, randomBytes } from 'node:crypto';

/**
 * cache_salt for a lineage: HMAC-SHA256(daemon secret, lineage root), base64url (43 chars: within vLLM's 128-char
 * limit and free of '@', '/', '\' and NUL). Clients never choose salts, and the same lineage always gets the same one.
 */
export function deriveSalt(secret: Buffer, lineageRoot: string): string {
  return createHmac('sha256', secret).update(`cwm-salt-v1:${lineageRoot}`).digest('base64url');
}

export function newLineageRoot(): string {
  return randomBytes(12).toString('base64url');
}
