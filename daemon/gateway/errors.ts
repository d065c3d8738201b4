import type { ServerResponse } from 'node:http';

/** An OpenAI-style error answered by the gateway itself (engine errors pass through as the engine sent them). */
export class GatewayError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly param: string | null = null,
  ) {
    super(message);
    this.name = 'GatewayError';
  }
}

export function errorBody(status: number, message: string, type: string, param: string | null = null): string {
  return JSON.stringify({ error: { message, type, param, code: status } });
}

export function sendError(res: ServerResponse, e: GatewayError, extra: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = errorBody(e.status, e.message, e.type, e.param);
  res.writeHead(e.status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    ...extra,
  });
  res.end(body);
}

export const badRequest = (message: string, param: string | null = null) =>
  new GatewayError(400, message, 'BadRequestError', param);
