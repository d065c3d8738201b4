import type { Logger } from 'pino';
import { CwmClient } from '../client/rpc-client.js';
import {
  CwmError,
  isCwmError,
  type MethodName,
  type ParamsOf,
  PROTOCOL_VERSION,
  type ResultOf,
} from '../daemon/protocol/index.js';
import { VERSION } from '../daemon/version.js';
import type { DaemonRpc } from './tools/tool.js';

/** How the daemon gets started when it is not running; injected so tests and the CLI share one implementation. */
export interface Starter {
  /** Describes who would start it, for messages: "the systemd user service", "cwm-mcp". */
  start(socket: string): Promise<{ pid: number; via: string }>;
  /** How a person starts it by hand (for the error when starting is off or failed). */
  howToStart(socket: string): Promise<string>;
}

export interface LinkOptions {
  socket: string;
  /** Start the daemon when it is not running (false with --no-autostart). */
  autostart: boolean;
  starter: Starter;
  log: Logger;
  connectTimeoutMs?: number;
  /** Open a connection (defaults to CwmClient.connect with the daemon.hello handshake). */
  connect?: (socket: string, timeoutMs: number) => Promise<CwmClient>;
}

/**
 * CwmClient reports a closed connection as CONNECTION_LOST; `details.sent === false` means the request never left
 * (safe to resend even when it mutates), otherwise it was in flight and may have run.
 */
function connectionGone(err: unknown): 'not-sent' | 'lost' | null {
  if (!isCwmError(err) || err.code !== 'CONNECTION_LOST') return null;
  return err.details?.sent === false ? 'not-sent' : 'lost';
}

/** A daemon of another protocol version: say which side is older and what to run. */
export function mismatchError(daemonProtocol: number | null, daemonVersion: string | null): CwmError {
  const them = `cwmd${daemonVersion ? ` ${daemonVersion}` : ''} (protocol ${daemonProtocol ?? 'unknown'})`;
  const us = `cwm-mcp ${VERSION} (protocol ${PROTOCOL_VERSION})`;
  if (daemonProtocol !== null && daemonProtocol > PROTOCOL_VERSION) {
    return new CwmError('PROTOCOL_MISMATCH', `${them} is newer than this ${us}`, {
      hint:
        'the editor is running an old cwm-mcp: point its MCP config at the current `cwm-mcp` and restart the MCP ' +
        'server (if cwm was downgraded on purpose, run `cwm daemon restart` to start the matching daemon)',
      details: { daemonProtocol, shimProtocol: PROTOCOL_VERSION },
    });
  }
  return new CwmError('PROTOCOL_MISMATCH', `${them} is older than this ${us}: it was started before cwm was upgraded`, {
    hint: 'restart the daemon with `cwm daemon restart`, then call the tool again',
    details: { daemonProtocol, shimProtocol: PROTOCOL_VERSION },
  });
}

function asMismatch(err: unknown): CwmError | null {
  if (!isCwmError(err) || err.code !== 'PROTOCOL_MISMATCH') return null;
  const d = err.details ?? {};
  const daemonProtocol = typeof d.daemonProtocol === 'number' ? d.daemonProtocol : null;
  return mismatchError(daemonProtocol, null);
}

/**
 * The shim's one connection to cwmd, opened lazily and reopened after the daemon restarts.
 *
 * Connect algorithm (run on the first call, and again whenever the connection is gone):
 *  1. connect to the socket and say daemon.hello with our protocol version;
 *  2. a protocol mismatch is final for this call: explain which side is older and what to run (nothing is started
 *     or stopped: another client may be using that daemon);
 *  3. not running: with autostart off, fail with how to start it; otherwise have the Starter start it (through the
 *     service manager when a service owns it, else spawned like `cwm daemon start`) and connect again;
 *  4. if starting failed, connect once more anyway: another shim may have won the race to start it.
 * A call that finds the connection closed before its request left is sent again on a new connection; a call cut
 * off mid-way is retried only when the tool is read-only (a freeze must not run twice).
 */
export class DaemonLink implements DaemonRpc {
  private client: CwmClient | null = null;
  private opening: Promise<CwmClient> | null = null;
  private closed = false;

  constructor(private readonly opts: LinkOptions) {}

  get socket(): string {
    return this.opts.socket;
  }

  async call<M extends MethodName>(method: M, params: ParamsOf<M>, opts: { readOnly: boolean }): Promise<ResultOf<M>> {
    const c = await this.get();
    try {
      return await c.call(method, params);
    } catch (err) {
      const gone = connectionGone(err);
      if (!gone) throw err;
      this.drop(c);
      if (gone === 'lost' && !opts.readOnly) {
        throw new CwmError(
          'CONNECTION_LOST',
          `cwmd went away while running ${method}; it may or may not have finished`,
          {
            hint: 'check with window_status or window_list before trying again',
          },
        );
      }
      this.opts.log.info({ method }, 'connection to cwmd was closed; reconnecting');
      return (await this.get()).call(method, params);
    }
  }

  /** Connect (and start the daemon when allowed) without making a call; errors are only logged. */
  async warmUp(): Promise<void> {
    try {
      await this.get();
    } catch (err) {
      this.opts.log.warn({ err: (err as Error).message }, 'cwmd is not reachable yet');
    }
  }

  close(): void {
    this.closed = true;
    this.client?.close();
    this.client = null;
  }

  private drop(c: CwmClient): void {
    if (this.client === c) this.client = null;
    c.close();
  }

  private get(): Promise<CwmClient> {
    if (this.closed) return Promise.reject(new CwmError('CONNECTION_LOST', 'cwm-mcp is shutting down'));
    if (this.client) return Promise.resolve(this.client);
    this.opening ??= this.open().finally(() => {
      this.opening = null;
    });
    return this.opening;
  }

  private async connectOnce(): Promise<CwmClient> {
    const timeout = this.opts.connectTimeoutMs ?? 5000;
    let c: CwmClient;
    try {
      c = this.opts.connect
        ? await this.opts.connect(this.opts.socket, timeout)
        : await CwmClient.connect({
            socket: this.opts.socket,
            connectTimeoutMs: timeout,
            client: { name: 'cwm-mcp', version: VERSION },
          });
    } catch (err) {
      throw asMismatch(err) ?? err;
    }
    // A daemon that answered hello with another version (rather than refusing it) is just as unusable.
    if (c.hello && c.hello.protocolVersion !== PROTOCOL_VERSION) {
      c.close();
      throw mismatchError(c.hello.protocolVersion, c.hello.daemonVersion);
    }
    return c;
  }

  private async open(): Promise<CwmClient> {
    let c: CwmClient;
    try {
      c = await this.connectOnce();
    } catch (err) {
      if (!isCwmError(err) || err.code !== 'NOT_RUNNING') throw err;
      c = await this.startAndConnect(err);
    }
    if (this.closed) {
      c.close();
      throw new CwmError('CONNECTION_LOST', 'cwm-mcp is shutting down');
    }
    this.client = c;
    this.opts.log.info(
      { socket: this.opts.socket, pid: c.hello?.pid, daemon: c.hello?.daemonVersion },
      'connected to cwmd',
    );
    return c;
  }

  private async startAndConnect(notRunning: CwmError): Promise<CwmClient> {
    const { socket, starter, log } = this.opts;
    if (!this.opts.autostart) {
      throw new CwmError('NOT_RUNNING', `cwmd is not running on ${socket} (cwm-mcp runs with --no-autostart)`, {
        hint: `${await starter.howToStart(socket)}, then call the tool again`,
        retryable: true,
      });
    }
    try {
      const r = await starter.start(socket);
      log.info({ pid: r.pid, via: r.via, socket }, 'started cwmd');
    } catch (err) {
      // Another client may have started it meanwhile (two editors opening at once): one more look before failing.
      const again = await this.connectOnce().catch(() => null);
      if (again) return again;
      const why = err instanceof Error ? err.message : String(err);
      log.warn({ err: why }, 'could not start cwmd');
      throw new CwmError('NOT_RUNNING', `cwmd is not running on ${socket} and cwm-mcp could not start it: ${why}`, {
        hint: `${await starter.howToStart(socket)}${isCwmError(err) && err.hint ? ` (${err.hint})` : ''}`,
        retryable: true,
        cause: notRunning,
      });
    }
    return this.connectOnce();
  }
}
