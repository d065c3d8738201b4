/**
 * Hostile-input fuzzer for the daemon's socket: malformed frames of every kind over many connections, with every
 * answer checked to be a proper JSON-RPC 2.0 error object, while a well-behaved client keeps working and the
 * daemon's resident memory is sampled from /proc/<pid>/status.
 *
 * Used by test/integration/fuzz.test.ts (100,000 frames) and test/soak/soak.ts (more).
 */
import fs from 'node:fs';
import net from 'node:net';
import type { CwmClient } from '../../client/rpc-client.js';
import { rng } from './crash-harness.js';

export interface Frame {
  bytes: Buffer;
  /** Lines the daemon must answer with (0 for notifications and blank lines). */
  answers: 0 | 1;
  /** The daemon answers this frame and then closes the connection (parse errors, bad UTF-8, oversized lines). */
  closing: boolean;
  kind: string;
}

const REAL_METHODS = [
  'daemon.hello',
  'daemon.status',
  'daemon.shutdown',
  'session.record',
  'session.list',
  'session.get',
  'session.end',
  'window.freeze',
  'window.thaw',
  'window.clone',
  'window.delete',
  'window.list',
  'window.get',
  'window.export',
  'window.import',
  'autofreeze.get',
  'autofreeze.set',
  'audit.list',
  'config.show',
  'cache.stats',
  'health.check',
  'registry.check',
];

/** Params that no real method accepts (so a fuzz frame never runs a real operation). */
const BAD_PARAMS: unknown[] = [[1, 2, 3], [], ['window.delete'], [{ name: 'x' }]];

/** Per-method params of the wrong type or shape: each fails validation for that method. */
const BAD_TYPED: Record<string, unknown[]> = {
  'window.get': [{ name: 123 }, { name: '../../etc/passwd' }, { name: '' }, { name: 'a'.repeat(200) }, {}],
  'window.freeze': [
    { session: '../x', name: 'ok' },
    { session: 'ok', name: '/etc' },
    { session: 1, name: 2 },
  ],
  'window.delete': [{ name: null }, { name: 'a/b' }, { name: 'x', cascade: 'yes' }],
  'window.thaw': [{ name: 'x', warm: 'no' }, { name: '\u0000' }, { name: 'x', newSession: '../../s' }],
  'window.clone': [{ name: 'x' }, { name: 'x', newName: 'a b' }],
  'window.export': [{ name: 'x' }, { name: 'x', file: '' }, { name: 'x', file: 5 }],
  'window.import': [{ file: '' }, { file: 'x'.repeat(5000) }, { name: 'x' }],
  'window.list': [{ limit: 1e308 }, { limit: -1 }, { sort: 'evil' }, { tags: ['UPPER'] }, { offset: 1.5 }],
  'session.record': [{ session: 'a', model: 5 }, { session: 'a', model: 'm' }, { session: 'a' }],
  'session.get': [{ session: 12 }, { session: '..' }],
  'session.end': [{}],
  'audit.list': [{ limit: 0 }, { limit: Number.POSITIVE_INFINITY }, { limit: 'all' }],
  'autofreeze.set': [{ threshold: 2 }, { enabled: 'yes' }, { intervalSeconds: -5 }],
  'daemon.hello': [{ protocolVersion: 'one' }, { protocolVersion: 1.5 }],
  'daemon.shutdown': [{ reason: 5 }, { reason: 'x'.repeat(500) }],
  'health.check': [{ component: 'everything' }],
  'registry.check': [{ repair: 'please' }],
};

const PROTO_NAMES = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf', 'prototype', ''];

function line(v: string): Buffer {
  return Buffer.from(`${v}\n`, 'utf8');
}

export function frameGenerator(seed: number, maxLineBytes: number) {
  const rand = rng(seed);
  const int = (n: number) => Math.floor(rand() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)] as T;
  let idn = 0;
  const id = (): unknown => {
    const r = rand();
    if (r < 0.6) return ++idn;
    if (r < 0.8) return `f-${++idn}`;
    if (r < 0.85) return null;
    return pick([Number('1e400'), -0, Number('123456789012345678901234567890'), Number('1.5e-400'), 2 ** 53 + 1]);
  };
  const idText = () => {
    const r = rand();
    if (r < 0.9) return JSON.stringify(id()) ?? 'null';
    return pick(['1e400', '-1e400', '123456789012345678901234567890123456789', '0.0000000000000000000001e-999']);
  };
  const req = (method: string, params?: unknown, withId = true): string => {
    const parts = ['"jsonrpc":"2.0"'];
    if (withId) parts.push(`"id":${idText()}`);
    parts.push(`"method":${JSON.stringify(method)}`);
    if (params !== undefined) parts.push(`"params":${JSON.stringify(params)}`);
    return `{${parts.join(',')}}`;
  };
  const deep = (depth: number, open: string, close: string) => `${open.repeat(depth)}${close.repeat(depth)}`;
  const maxDepth = Math.max(1, Math.floor((maxLineBytes - 200) / 6));

  /** One well-formed-but-wrong request line (always answered: it carries an id, or is invalid). */
  const answeredJson = (): { text: string; kind: string } => {
    const r = int(12);
    switch (r) {
      case 0:
        return { text: req(`no.such.${int(1e6)}`), kind: 'unknown-method' };
      case 1:
        return { text: req(pick(PROTO_NAMES)), kind: 'prototype-method' };
      case 2:
        return { text: req(pick(REAL_METHODS), pick(BAD_PARAMS)), kind: 'array-params' };
      case 3: {
        const m = pick(Object.keys(BAD_TYPED));
        return { text: req(m, pick(BAD_TYPED[m] as unknown[])), kind: 'wrong-types' };
      }
      case 4: {
        // wrong types in the envelope itself
        const env = pick([
          `{"jsonrpc":${pick(['1', 'null', '"1.0"', 'true', '{}', '[]', '"2.0 "'])},"id":1,"method":"daemon.status"}`,
          `{"jsonrpc":"2.0","id":${pick(['{}', '[]', 'true', '{"a":1}'])},"method":"daemon.status"}`,
          `{"jsonrpc":"2.0","id":1,"method":${pick(['1', 'null', '{}', '[]', 'true', '1e400'])}}`,
          `{"jsonrpc":"2.0","id":1,"method":"daemon.status","params":${pick(['1', '"x"', 'true', 'null'])}}`,
          `{"jsonrpc":"2.0","id":1,"result":1}`,
          `{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"x"}}`,
          `{"jsonrpc":"2.0","id":1}`,
          '{}',
        ]);
        return { text: env, kind: 'bad-envelope' };
      }
      case 5:
        return {
          text: pick(['null', '1', '-1e400', '"str"', 'true', 'false', '[]', '[null]', '[1,2,3]', '"\\u0000"']),
          kind: 'not-an-object',
        };
      case 6: {
        const d = 2 + int(maxDepth - 1); // depth 1 would be "tags": [], a valid list call
        const text = pick([
          () => `{"jsonrpc":"2.0","id":${idText()},"method":"window.list","params":{"tags":${deep(d, '[', ']')}}}`,
          () =>
            `{"jsonrpc":"2.0","id":${idText()},"method":"window.get","params":${'{"a":'.repeat(d)}1${'}'.repeat(d)}}`,
          () => deep(d, '[', ']'),
        ])();
        return { text, kind: 'deep-nesting' };
      }
      case 7: {
        const n = 1 + int(20);
        const members: string[] = [];
        for (let i = 0; i < n; i++) {
          let m = pick(['null', '1', '{}', '[]']);
          if (rand() < 0.5) {
            const x = answeredJson().text;
            if (x.length < maxLineBytes / 40) m = x;
          }
          members.push(m);
        }
        return { text: `[${members.join(',')}]`, kind: 'batch' };
      }
      case 8: {
        const n = pick(['1e308', '1e400', '-1e400', '123456789012345678901234567890', '-0.0e-999']);
        return {
          text: `{"jsonrpc":"2.0","id":${idText()},"method":"window.list","params":{"limit":${n}}}`,
          kind: 'huge-numbers',
        };
      }
      case 9: {
        const big = 'x'.repeat(Math.min(Math.floor((maxLineBytes - 300) / 2), 1000 + int(30_000)));
        return {
          text: req(rand() < 0.5 ? big : 'window.get', rand() < 0.5 ? { name: big } : undefined),
          kind: 'long-strings',
        };
      }
      case 10:
        return {
          text: req(
            'window.get',
            JSON.parse('{"__proto__":{"name":"x","lineage":true},"constructor":{"prototype":{"polluted":1}}}'),
          ),
          kind: 'proto-keys',
        };
      default:
        return {
          text: `{"jsonrpc":"2.0","id":${idText()},"method":"window.get","params":{"name":"\\ud800\\udfff\\u0000\u202e${'\u0301'.repeat(int(50))}"}}`,
          kind: 'odd-unicode',
        };
    }
  };

  /** A frame that is answered and keeps the connection open. */
  const keepOpen = (): Frame => {
    const r = rand();
    if (r < 0.04)
      return {
        bytes: line(req(`no.such.${int(100)}`, undefined, false)),
        answers: 0,
        closing: false,
        kind: 'notification',
      };
    if (r < 0.06) return { bytes: line(pick(['', ' ', '\t', '\r'])), answers: 0, closing: false, kind: 'blank' };
    const { text, kind } = answeredJson();
    return { bytes: line(text), answers: 1, closing: false, kind };
  };

  /** A frame after which the daemon answers once and closes the connection. */
  const closing = (): Frame => {
    const r = int(5);
    switch (r) {
      case 0: {
        const b = Buffer.alloc(1 + int(200));
        for (let i = 0; i < b.length; i++) b[i] = int(256);
        // random bytes, but not valid JSON by construction (a leading '}' never starts a JSON text)
        b[0] = 0x7d;
        for (let i = 0; i < b.length; i++) if (b[i] === 0x0a) b[i] = 0x20;
        return { bytes: Buffer.concat([b, Buffer.of(0x0a)]), answers: 1, closing: true, kind: 'random-bytes' };
      }
      case 1: {
        const bad = pick([
          [0xff],
          [0xfe, 0xff],
          [0xc0, 0xaf],
          [0xed, 0xa0, 0x80],
          [0xe2, 0x82],
          [0xf8, 0x88, 0x80, 0x80, 0x80],
        ]);
        const pre = Buffer.from('{"jsonrpc":"2.0","id":1,"method":"window.get","params":{"name":"');
        return {
          bytes: Buffer.concat([pre, Buffer.from(bad), Buffer.from('"}}\n')]),
          answers: 1,
          closing: true,
          kind: 'invalid-utf8',
        };
      }
      case 2: {
        const full = req('window.list', { limit: 5, tags: ['a', 'b'] });
        return {
          bytes: line(full.slice(0, 1 + int(full.length - 2))),
          answers: 1,
          closing: true,
          kind: 'truncated-json',
        };
      }
      case 3: {
        const n = maxLineBytes + 1 + int(maxLineBytes);
        const b = Buffer.alloc(n + 1, 0x61);
        b[n] = 0x0a;
        return { bytes: b, answers: 1, closing: true, kind: 'oversized' };
      }
      default:
        return {
          bytes: line(`{"jsonrpc":"2.0","id":1,"method":"x"${'}'.repeat(2 + int(3))}`),
          answers: 1,
          closing: true,
          kind: 'trailing-garbage',
        };
    }
  };

  return { keepOpen, closing, int, rand };
}

export interface FuzzOptions {
  socket: string;
  pid: number;
  frames: number;
  maxLineBytes: number;
  /** Parallel connections. */
  streams: number;
  seed: number;
  /** The well-behaved client's loop: one operation per call; throws on failure. */
  goodOp: (i: number) => Promise<void>;
  /** A CwmClient for the trickle connection's final check. */
  client: CwmClient;
  /** Split the frames into this many phases and sample RSS after each (a leak shows as growth phase over phase). */
  phases?: number;
}

export interface FuzzReport {
  seed: number;
  framesSent: number;
  answers: number;
  connections: number;
  closingFrames: number;
  byKind: Record<string, number>;
  badAnswers: string[];
  missingAnswers: number;
  goodOps: number;
  goodFailures: string[];
  rssBeforeKiB: number;
  rssMaxKiB: number;
  rssAfterKiB: number;
  /** RSS after each phase, KiB. */
  rssByPhaseKiB: number[];
  trickleBytes: number;
  trickleAnswer: string | null;
  seconds: number;
}

export function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

/** Every answer line: a JSON-RPC 2.0 error object (or a batch of them), never a result. */
function checkAnswer(text: string): string | null {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return `not JSON: ${text.slice(0, 200)}`;
  }
  const items = Array.isArray(v) ? v : [v];
  if (items.length === 0) return 'an empty batch answer';
  for (const it of items) {
    if (typeof it !== 'object' || it === null || Array.isArray(it)) return `not an object: ${text.slice(0, 200)}`;
    const o = it as Record<string, unknown>;
    if (o.jsonrpc !== '2.0') return `jsonrpc is ${JSON.stringify(o.jsonrpc)}`;
    if ('result' in o) return `a result, not an error: ${text.slice(0, 200)}`;
    if (!(typeof o.id === 'string' || typeof o.id === 'number' || o.id === null))
      return `bad id ${JSON.stringify(o.id)}`;
    const e = o.error as Record<string, unknown> | undefined;
    if (typeof e !== 'object' || e === null) return `no error object: ${text.slice(0, 200)}`;
    if (!Number.isInteger(e.code)) return `error code ${JSON.stringify(e.code)}`;
    if (typeof e.message !== 'string') return 'error message is not a string';
  }
  return null;
}

/** Send frames on one connection; resolve when every expected answer arrived (and, for a closing frame, the close). */
function stream(socket: string, frames: Frame[], report: FuzzReport): Promise<void> {
  const expected = frames.reduce((a, f) => a + f.answers, 0);
  const closing = frames.some((f) => f.closing);
  return new Promise((resolve) => {
    const s = net.connect(socket);
    let buf = '';
    let got = 0;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (got < expected) report.missingAnswers += expected - got;
      s.destroy();
      resolve();
    };
    const timer = setTimeout(finish, 20_000);
    s.on('connect', () => {
      for (const f of frames) s.write(f.bytes);
    });
    s.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      let nl = buf.indexOf('\n');
      while (nl >= 0) {
        const text = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        got++;
        report.answers++;
        const bad = checkAnswer(text);
        if (bad && report.badAnswers.length < 50) report.badAnswers.push(bad);
        nl = buf.indexOf('\n');
      }
      if (!closing && got >= expected) finish();
    });
    s.on('error', () => {});
    // The daemon half-closes after the answer to a closing frame; it may stop reading first, so our own unsent
    // bytes (an oversized line) would hold 'close' back until its 5 s cut-off. 'end' is the daemon's close.
    s.on('end', finish);
    s.on('close', finish);
    if (!closing && expected === 0) s.once('connect', () => setTimeout(finish, 50));
  });
}

export async function runFuzz(opts: FuzzOptions): Promise<FuzzReport> {
  const t0 = Date.now();
  const gen = frameGenerator(opts.seed, opts.maxLineBytes);
  const report: FuzzReport = {
    seed: opts.seed,
    framesSent: 0,
    answers: 0,
    connections: 0,
    closingFrames: 0,
    byKind: {},
    badAnswers: [],
    missingAnswers: 0,
    goodOps: 0,
    goodFailures: [],
    rssBeforeKiB: rssKiB(opts.pid),
    rssMaxKiB: 0,
    rssAfterKiB: 0,
    rssByPhaseKiB: [],
    trickleBytes: 0,
    trickleAnswer: null,
    seconds: 0,
  };
  report.rssMaxKiB = report.rssBeforeKiB;
  let running = true;
  const sampler = setInterval(() => {
    report.rssMaxKiB = Math.max(report.rssMaxKiB, rssKiB(opts.pid));
  }, 100);

  // The slow trickle: one partial line, a byte at a time, for the whole run.
  const partial = Buffer.from(
    `{"jsonrpc":"2.0","id":"trickle","method":"window.list","params":{"search":"${'t'.repeat(100_000)}`,
  );
  const trickle = net.connect(opts.socket);
  let trickleClosed = false;
  let trickleBuf = '';
  trickle.on('close', () => {
    trickleClosed = true;
  });
  trickle.on('error', () => {});
  trickle.on('data', (d: Buffer) => {
    trickleBuf += d.toString('utf8');
  });
  const tricklePump = (async () => {
    await new Promise((r) => trickle.once('connect', r));
    while (running && report.trickleBytes < partial.length && !trickleClosed) {
      trickle.write(partial.subarray(report.trickleBytes, report.trickleBytes + 1));
      report.trickleBytes++;
      await new Promise((r) => setTimeout(r, 20));
    }
  })();

  const good = (async () => {
    let i = 0;
    while (running) {
      try {
        await opts.goodOp(i++);
        report.goodOps++;
      } catch (err) {
        if (report.goodFailures.length < 20) report.goodFailures.push((err as Error).message);
      }
    }
  })();

  const count = (f: Frame) => {
    report.framesSent++;
    report.byKind[f.kind] = (report.byKind[f.kind] ?? 0) + 1;
    if (f.closing) report.closingFrames++;
  };
  let phaseEnd = 0;
  const worker = async () => {
    while (report.framesSent < phaseEnd) {
      const r = gen.rand();
      const frames: Frame[] = [];
      // many short connections (a few frames, then one that closes it) and some long pipelines
      const n = r < 0.95 ? gen.int(4) : 200 + gen.int(1500);
      for (let i = 0; i < n; i++) frames.push(gen.keepOpen());
      if (r < 0.95 || gen.rand() < 0.5) frames.push(gen.closing());
      for (const f of frames) count(f);
      report.connections++;
      await stream(opts.socket, frames, report);
    }
  };
  const phases = opts.phases ?? 1;
  for (let p = 1; p <= phases; p++) {
    phaseEnd = Math.ceil((opts.frames * p) / phases);
    await Promise.all(Array.from({ length: opts.streams }, worker));
    await new Promise((r) => setTimeout(r, 300));
    report.rssByPhaseKiB.push(rssKiB(opts.pid));
  }

  // The trickle connection is still open and still partial; a newline completes it into a truncated JSON line.
  running = false;
  await tricklePump;
  if (!trickleClosed) {
    const answered = new Promise<void>((r) => {
      trickle.once('close', () => r());
      setTimeout(r, 5000);
    });
    trickle.write('\n');
    await answered;
    report.trickleAnswer = trickleBuf.trim() || null;
  }
  trickle.destroy();
  await good;
  clearInterval(sampler);
  await new Promise((r) => setTimeout(r, 500));
  report.rssAfterKiB = rssKiB(opts.pid);
  report.seconds = (Date.now() - t0) / 1000;
  return report;
}
