import { isIP } from 'node:net';
import { CwmError } from '../protocol/index.js';

export interface ListenAddress {
  host: string;
  port: number;
}

/** `host:port` or `[v6]:port` → parts. The config schema already checked the shape; this checks the values. */
export function parseListen(listen: string): ListenAddress {
  const m = /^(?:\[([0-9a-fA-F:]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(listen);
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new CwmError('CONFIG_INVALID', `gateway.listen "${listen}" is not host:port`, {
      hint: 'e.g. 127.0.0.1:8765 (port 0 picks a free port)',
    });
  }
  return { host: (m[1] ?? m[2]) as string, port };
}

/** Loopback only: 127.0.0.0/8, ::1 (also as ::ffff:127.x) and the name localhost. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1' || /^(0:){7}1$/.test(h) || /^::ffff:127\./.test(h);
  return false;
}

/** The gateway never listens beyond this machine: it has no TLS, and its token is optional. */
export function checkLoopback(listen: string): ListenAddress {
  const addr = parseListen(listen);
  if (!isLoopbackHost(addr.host)) {
    throw new CwmError(
      'CONFIG_INVALID',
      `gateway.listen "${listen}" is not a loopback address: the gateway only listens on this machine`,
      {
        hint: 'use 127.0.0.1:<port> (or [::1]:<port>); put a TLS reverse proxy in front to expose it, or set gateway.listen to null (--gateway off) to disable it',
      },
    );
  }
  return addr;
}

export function urlOf(host: string, port: number): string {
  return `http://${isIP(host) === 6 ? `[${host}]` : host}:${port}`;
}
