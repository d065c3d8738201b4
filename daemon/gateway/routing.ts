import { SESSION_ID_RE, SESSION_ID_RULE } from '../protocol/index.js';
import { badRequest, type GatewayError } from './errors.js';

export type RouteKind = 'chat' | 'completion';
/** Bounded label values for metrics (never the raw URL). */
export type RouteLabel = 'chat' | 'completions' | 'models' | 'tokenize' | 'health' | 'other';

export interface Route {
  /** Session named by the path or the X-CWM-Session header; null = pure passthrough. */
  session: string | null;
  /** Path (with query) to request from the engine, the /s/<session> prefix removed. */
  upstreamPath: string;
  /** Session-aware endpoints: the body is rewritten and the exchange recorded. */
  kind: RouteKind | null;
  label: RouteLabel;
}

const SESSION_HEADER = 'x-cwm-session';

function labelOf(pathname: string): RouteLabel {
  switch (pathname) {
    case '/v1/chat/completions':
      return 'chat';
    case '/v1/completions':
      return 'completions';
    case '/v1/models':
      return 'models';
    case '/tokenize':
    case '/detokenize':
      return 'tokenize';
    case '/health':
    case '/ping':
    case '/version':
      return 'health';
    default:
      return 'other';
  }
}

function checkSession(id: string, where: string): string {
  if (!SESSION_ID_RE.test(id)) {
    throw badRequest(
      `invalid session id ${JSON.stringify(id.slice(0, 80))} in ${where}: ${SESSION_ID_RULE}`,
      'session',
    );
  }
  return id;
}

/**
 * Which session a request belongs to: a `/s/<session>/...` path prefix or the X-CWM-Session header (both
 * must agree when both are given). Throws a 400 GatewayError that names the session rule.
 */
export function resolveRoute(method: string, rawUrl: string, headers: Record<string, unknown>): Route {
  let path = rawUrl;
  let session: string | null = null;
  if (path.startsWith('/s/')) {
    const end = path.indexOf('/', 3);
    const seg = end === -1 ? path.slice(3) : path.slice(3, end);
    const q = seg.indexOf('?');
    session = checkSession(q === -1 ? seg : seg.slice(0, q), 'the /s/<session>/ path');
    path = end === -1 ? `/${q === -1 ? '' : seg.slice(q)}` : path.slice(end);
  }
  const h = headers[SESSION_HEADER];
  if (h !== undefined) {
    const value = (Array.isArray(h) ? h.join(',') : String(h)).trim();
    const fromHeader = checkSession(value, 'the X-CWM-Session header');
    if (session !== null && session !== fromHeader) {
      throw badRequest(
        `the X-CWM-Session header (${fromHeader}) and the /s/${session}/ path name different sessions`,
        'session',
      ) as GatewayError;
    }
    session = fromHeader;
  }
  const q = path.indexOf('?');
  const pathname = q === -1 ? path : path.slice(0, q);
  const label = labelOf(pathname);
  const kind: RouteKind | null =
    session !== null && method === 'POST'
      ? label === 'chat'
        ? 'chat'
        : label === 'completions'
          ? 'completion'
          : null
      : null;
  return { session, upstreamPath: path, kind, label };
}

export { SESSION_HEADER };
