import { isRecord } from '../protocol/index.js';
import { badRequest, GatewayError } from './errors.js';

export type ClientSaltPolicy = 'replace' | 'reject';

export interface Rewritten {
  /** The JSON body to send to the engine. */
  body: Buffer;
  /** The request as parsed (after the rewrite), for recording. */
  json: Record<string, unknown>;
  stream: boolean;
  /** The gateway added stream_options.include_usage: strip the extra usage chunk from the client's stream. */
  stripUsage: boolean;
}

export function parseJsonBody(raw: Buffer): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(raw.toString('utf8'));
  } catch (err) {
    throw badRequest(`the request body is not valid JSON: ${(err as Error).message}`);
  }
  if (!isRecord(v)) throw badRequest('the request body must be a JSON object');
  return v;
}

/**
 * Rewrite a session request: handle a client-supplied cache_salt per policy, let the backend add its fields
 * (cache_salt, id_slot), and make streams report usage. Everything else in the body is left as it was.
 */
export async function rewriteRequest(
  raw: Buffer,
  policy: ClientSaltPolicy,
  decorate: (body: Record<string, unknown>) => Promise<void>,
): Promise<Rewritten> {
  const json = parseJsonBody(raw);
  if (json.cache_salt !== undefined) {
    if (policy === 'reject') {
      throw new GatewayError(
        400,
        'cache_salt is chosen by cwm for session requests (gateway.clientSalt is "reject"): remove it from the request, or send the request without a session',
        'BadRequestError',
        'cache_salt',
      );
    }
    delete json.cache_salt;
  }
  await decorate(json);
  const stream = json.stream === true;
  let stripUsage = false;
  if (stream) {
    const so = isRecord(json.stream_options) ? json.stream_options : {};
    // The OpenAI default (and vLLM ≥ 0.12's) for an omitted include_usage is false: treat it as "not asked".
    if (so.include_usage !== true) {
      json.stream_options = { ...so, include_usage: true };
      stripUsage = true;
    }
  }
  return { body: Buffer.from(JSON.stringify(json), 'utf8'), json, stream, stripUsage };
}
