import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { isNamedPipe } from '../paths.js';
import { CwmError, PROTOCOL_VERSION } from '../protocol/index.js';

export type ProbeResult = { state: 'free' } | { state: 'stale' } | { state: 'live'; pid: number | null };

/**
 * Is another daemon on this socket? Connect and say hello: a live daemon answers with its pid; ECONNREFUSED means a
 * stale file left by a crash; ENOENT means free. This runs before the registry is opened (see npm-deps.md §3.1).
 */
export function probeSocket(socket: string, timeoutMs = 2000): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const sock = net.connect(socket);
    let buf = '';
    const done = (r: ProbeResult) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => done({ state: 'live', pid: null }), timeoutMs);
    sock.on('connect', () => {
      sock.write(
        `${JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'daemon.hello', params: { protocolVersion: PROTOCOL_VERSION } })}\n`,
      );
    });
    sock.on('data', (d) => {
      buf += d.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl === -1) return;
      try {
        const msg = JSON.parse(buf.slice(0, nl)) as {
          result?: { pid?: number };
          error?: { data?: { details?: { pid?: number } } };
        };
        done({ state: 'live', pid: msg.result?.pid ?? msg.error?.data?.details?.pid ?? null });
      } catch {
        done({ state: 'live', pid: null });
      }
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') done({ state: 'free' });
      else if (err.code === 'ECONNREFUSED') done({ state: 'stale' });
      else done({ state: 'live', pid: null });
    });
  });
}

/**
 * The socket directory must be ours and private: another user who can write there could replace the socket.
 * Created 0700 when missing; an existing one that is group/world-writable or foreign-owned is refused.
 */
export function prepareSocketDir(socket: string): void {
  if (isNamedPipe(socket)) return;
  const dir = path.dirname(socket);
  if (!fs.existsSync(dir)) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    fs.chmodSync(dir, 0o700);
    return;
  }
  const st = fs.statSync(dir);
  const uid = typeof process.getuid === 'function' ? process.getuid() : null;
  if (uid !== null && st.uid !== uid) {
    throw new CwmError(
      'PERMISSION_DENIED',
      `socket directory ${dir} is owned by uid ${st.uid}, not by you (uid ${uid})`,
      {
        hint: 'use a directory you own for --socket / CWM_SOCKET',
      },
    );
  }
  if ((st.mode & 0o022) !== 0) {
    throw new CwmError(
      'PERMISSION_DENIED',
      `socket directory ${dir} is writable by group or others (mode ${(st.mode & 0o777).toString(8)})`,
      { hint: `run \`chmod 700 ${dir}\`, or use a private directory for --socket / CWM_SOCKET` },
    );
  }
}
