import { CwmError, PROTOCOL_VERSION } from '../protocol/index.js';
import type { Handlers } from '../server/rpc-server.js';
import { VERSION } from '../version.js';

export const CAPABILITIES = ['windows', 'sessions', 'gateway', 'autofreeze', 'audit', 'export'];

export interface DaemonMethodDeps {
  status(): Promise<NonNullable<Awaited<ReturnType<NonNullable<Handlers['daemon.status']>>>>>;
  shutdown(reason: string): void;
}

export function daemonMethods(deps: DaemonMethodDeps): Handlers {
  return {
    'daemon.hello': (p) => {
      if (p.protocolVersion !== PROTOCOL_VERSION) {
        const newer = p.protocolVersion > PROTOCOL_VERSION;
        throw new CwmError(
          'PROTOCOL_MISMATCH',
          `protocol mismatch: the client speaks version ${p.protocolVersion}, cwmd ${VERSION} speaks version ${PROTOCOL_VERSION}`,
          {
            hint: newer
              ? 'the daemon is older than this client: restart it after the upgrade with `cwm daemon restart`'
              : 'this client is older than the daemon: upgrade the client (or the editor extension that launched it)',
            details: { clientProtocol: p.protocolVersion, daemonProtocol: PROTOCOL_VERSION, pid: process.pid },
          },
        );
      }
      return {
        protocolVersion: PROTOCOL_VERSION,
        daemonVersion: VERSION,
        pid: process.pid,
        capabilities: CAPABILITIES,
      };
    },
    'daemon.status': () => deps.status(),
    'daemon.shutdown': (p) => {
      // Answer first, then stop: the caller gets its reply before the socket goes away.
      setImmediate(() => deps.shutdown(p?.reason ?? 'daemon.shutdown requested'));
      return { stopping: true as const };
    },
  };
}
