import type { Logger } from 'pino';
import { startDaemon } from '../client/daemon-process.js';
import { type Host, LAUNCHD_LABEL } from '../client/service/host.js';
import { findService, startService, usableService } from '../client/service/manager.js';
import type { Starter } from './link.js';

/**
 * Start cwmd the way `cwm daemon start` does: through the service manager when an installed, enabled service owns
 * this socket (so it stays supervised), else spawned in the background with the same function the CLI uses.
 */
export function daemonStarter(host: Host, log: Logger, defaultSocket: string): Starter {
  return {
    async start(socket) {
      const svc = await usableService(socket, host, (msg) => log.warn(msg));
      if (svc) {
        const r = await startService(svc, host);
        return { pid: r.pid, via: `${svc.manager} ${svc.scope} service` };
      }
      const r = await startDaemon(socket);
      return { pid: r.pid, via: r.already ? 'already running' : 'spawned' };
    },
    async howToStart(socket) {
      const svc = findService(socket, host);
      if (svc?.manager === 'systemd') {
        return svc.scope === 'user'
          ? 'start it with `systemctl --user start cwmd` (it is installed as a user service)'
          : 'start it with `sudo systemctl start cwmd` (it is installed as a system service)';
      }
      if (svc?.manager === 'launchd') {
        return `start it with \`launchctl kickstart gui/${host.uid}/${LAUNCHD_LABEL}\` (it is installed as a LaunchAgent)`;
      }
      return socket === defaultSocket
        ? 'start it with `cwm daemon start`'
        : `start it with \`cwm --socket ${socket} daemon start\``;
    },
  };
}
