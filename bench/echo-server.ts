/**
 * The baseline for bench/rpc: a raw NDJSON server on the same kind of socket that answers each request line with a
 * minimal JSON-RPC result, with no validation, no dispatch and no logging. Run as its own process, like cwmd.
 */
import net from 'node:net';

const socket = process.argv[2];
if (!socket) throw new Error('usage: echo-server <socket>');
const server = net.createServer((sock) => {
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('data', (chunk: string) => {
    buf += chunk;
    let nl = buf.indexOf('\n');
    let out = '';
    while (nl !== -1) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      const id = (JSON.parse(line) as { id: unknown }).id;
      out += `${JSON.stringify({ jsonrpc: '2.0', id, result: { protocolVersion: 1, daemonVersion: 'echo', pid: process.pid, capabilities: [] } })}\n`;
      nl = buf.indexOf('\n');
    }
    if (out) sock.write(out);
  });
  sock.on('error', () => {});
});
server.listen(socket, () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
