import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, beforeEach, describe, it } from 'node:test';
import { backoffMs, EngineHttp } from '../../daemon/backends/http.js';
import { isCwmError } from '../../daemon/protocol/index.js';

type Behaviour = (req: http.IncomingMessage, res: http.ServerResponse) => void;

/** A local engine stand-in whose answer per request is scripted; it counts every request it sees. */
class Engine {
  requests = 0;
  script: Behaviour[] = [];
  fallback: Behaviour = (_q, res) => json(res, 200, { ok: true });
  private server = http.createServer((req, res) => {
    this.requests++;
    req.resume();
    req.on('end', () => (this.script.shift() ?? this.fallback)(req, res));
  });
  url = '';

  async start(): Promise<void> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }
}

function json(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

const ok: Behaviour = (_q, res) => json(res, 200, { ok: true });
const unavailable: Behaviour = (_q, res) => json(res, 503, { error: { message: 'overloaded' } });
const drop: Behaviour = (q) => q.socket.destroy();
const midBody: Behaviour = (_q, res) => {
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' });
  res.write('{"ok": tr');
  setTimeout(() => res.socket?.destroy(), 5);
};
const never: Behaviour = () => {};

describe('EngineHttp: retries with backoff and jitter', () => {
  const engine = new Engine();
  before(() => engine.start());
  after(() => engine.close());
  beforeEach(() => {
    engine.requests = 0;
    engine.script = [];
    engine.fallback = ok;
  });

  const client = (o: Partial<ConstructorParameters<typeof EngineHttp>[1]> = {}) =>
    new EngineHttp(engine.url, { timeoutMs: 2000, retries: 3, label: 'test engine', ...o });

  it('retries 503, dropped connections and bodies cut mid-stream, then succeeds', async () => {
    const h = client();
    engine.script = [unavailable, drop, midBody];
    const r = await h.json<{ ok: boolean }>('POST', '/v1/completions', { prompt: [1] });
    assert.deepEqual(r.body, { ok: true });
    assert.equal(engine.requests, 4, 'three failures, then the answer');
    await h.close();
  });

  it('gives up after the configured retries with a structured, retryable error naming the engine', async () => {
    const h = client({ retries: 2, breakerThreshold: 100 });
    engine.fallback = unavailable;
    await assert.rejects(h.json('GET', '/v1/models'), (e: unknown) => {
      assert.ok(isCwmError(e));
      assert.equal(e.code, 'ENGINE_UNAVAILABLE');
      assert.equal(e.retryable, true);
      assert.match(e.message, /test engine answered 503 on \/v1\/models: overloaded/);
      assert.ok(e.hint);
      return true;
    });
    assert.equal(engine.requests, 3);
    engine.fallback = drop;
    engine.requests = 0;
    await assert.rejects(h.json('GET', '/v1/models'), (e: unknown) => {
      assert.ok(isCwmError(e));
      assert.equal(e.code, 'ENGINE_UNAVAILABLE');
      assert.equal(e.retryable, true);
      assert.match(e.message, /cannot reach test engine/);
      return true;
    });
    assert.equal(engine.requests, 3);
    await h.close();
  });

  it('does not retry what retrying cannot fix: 4xx, 500, and a POST that timed out (it may have run)', async () => {
    const h = client({ timeoutMs: 200, breakerThreshold: 100 });
    engine.script = [(_q, res) => json(res, 400, { error: { message: 'bad prompt' } })];
    await assert.rejects(h.json('POST', '/v1/completions', {}), (e: unknown) => {
      assert.ok(isCwmError(e));
      assert.equal(e.code, 'ENGINE_REJECTED');
      assert.equal(e.retryable, false);
      return true;
    });
    assert.equal(engine.requests, 1);
    engine.requests = 0;
    engine.script = [(_q, res) => json(res, 500, { error: { message: 'boom' } })];
    await assert.rejects(
      h.json('POST', '/v1/completions', {}),
      (e: unknown) => isCwmError(e) && e.code === 'ENGINE_ERROR',
    );
    assert.equal(engine.requests, 1);
    engine.requests = 0;
    engine.script = [never];
    await assert.rejects(h.json('POST', '/v1/completions', {}), (e: unknown) => {
      assert.ok(isCwmError(e));
      assert.equal(e.code, 'ENGINE_TIMEOUT');
      assert.equal(e.retryable, true);
      assert.match(e.message, /did not answer \/v1\/completions within 200 ms/);
      return true;
    });
    assert.equal(engine.requests, 1, 'a timed-out POST is not sent again');
    engine.requests = 0;
    engine.script = [never];
    const r = await h.json('GET', '/v1/models');
    assert.deepEqual(r.body, { ok: true });
    assert.equal(engine.requests, 2, 'a timed-out GET is retried');
    await h.close();
  });

  it('backs off exponentially with full jitter, capped', () => {
    for (let attempt = 0; attempt < 12; attempt++) {
      const cap = Math.min(5000, 100 * 2 ** attempt);
      const xs = Array.from({ length: 400 }, () => backoffMs(attempt));
      assert.ok(
        xs.every((x) => x >= 0 && x <= cap),
        `attempt ${attempt}: within [0, ${cap}]`,
      );
      assert.ok(new Set(xs).size > 300, `attempt ${attempt}: jittered, not lock-step`);
      // full jitter: spread over the whole window, not clustered at the top
      assert.ok(Math.min(...xs) < cap * 0.1 && Math.max(...xs) > cap * 0.9, `attempt ${attempt}: spread`);
    }
    assert.ok(backoffMs(3, 10, 50) <= 50);
  });
});

describe('EngineHttp: the circuit breaker', () => {
  const engine = new Engine();
  before(() => engine.start());
  after(() => engine.close());
  beforeEach(() => {
    engine.requests = 0;
    engine.script = [];
    engine.fallback = ok;
  });

  /** A client with `retries` retries whose breaker opens after `threshold` failures for `cooldownMs`. */
  const breaker = (retries: number, threshold: number, cooldownMs: number) =>
    new EngineHttp(engine.url, {
      timeoutMs: 1000,
      retries,
      label: 'test engine',
      breakerThreshold: threshold,
      breakerCooldownMs: cooldownMs,
    });

  it('opens after consecutive failures and then fails fast without touching the engine', async () => {
    const h = breaker(1, 4, 60_000);
    engine.fallback = unavailable;
    await assert.rejects(h.json('GET', '/a'));
    await assert.rejects(h.json('GET', '/a'));
    assert.equal(engine.requests, 4);
    assert.equal(h.breakerOpen, true);
    for (let i = 0; i < 100; i++) {
      await assert.rejects(h.json('GET', '/a'), (e: unknown) => {
        assert.ok(isCwmError(e));
        assert.equal(e.code, 'ENGINE_UNAVAILABLE');
        assert.equal(e.retryable, true);
        assert.match(e.message, /is failing; not retrying for now/);
        assert.ok(typeof e.details?.retryAfterMs === 'number' && e.details.retryAfterMs > 0);
        return true;
      });
    }
    assert.equal(engine.requests, 4, 'no request reached the engine while the breaker was open');
    await h.close();
  });

  it('a burst of concurrent callers stops retrying once the breaker trips', async () => {
    const h = breaker(3, 5, 60_000);
    engine.fallback = unavailable;
    const results = await Promise.allSettled(Array.from({ length: 40 }, () => h.json('GET', '/burst')));
    assert.ok(results.every((r) => r.status === 'rejected'));
    // Without the check between attempts this was 40 x 4 = 160 requests.
    assert.ok(engine.requests <= 40 + 5, `${engine.requests} requests for 40 callers`);
    await h.close();
  });

  it('after the cooldown lets one probe through; its success closes the breaker, its failure re-opens it', async () => {
    const h = breaker(2, 2, 150);
    engine.fallback = unavailable;
    await assert.rejects(h.json('GET', '/p'));
    assert.equal(h.breakerOpen, true);
    const seen = engine.requests;
    await new Promise((r) => setTimeout(r, 200));
    // half-open: many callers at once, only one request reaches the engine, and it fails: open again
    const probes = await Promise.allSettled(Array.from({ length: 20 }, () => h.json('GET', '/p')));
    assert.ok(probes.every((r) => r.status === 'rejected'));
    assert.equal(engine.requests, seen + 1, 'one probe, not a stampede');
    assert.equal(h.breakerOpen, true);
    await new Promise((r) => setTimeout(r, 200));
    engine.fallback = ok;
    const again = await Promise.allSettled(Array.from({ length: 20 }, () => h.json('GET', '/p')));
    const fulfilled = again.filter((r) => r.status === 'fulfilled').length;
    assert.ok(fulfilled >= 1, 'the probe succeeded');
    assert.equal(h.breakerOpen, false);
    const after = await h.json('GET', '/p');
    assert.deepEqual(after.body, { ok: true });
    await h.close();
  });

  it('a success in between resets the count: only consecutive failures open it', async () => {
    const h = breaker(0, 3, 60_000);
    engine.script = [unavailable, unavailable, ok, unavailable, unavailable, ok];
    for (let i = 0; i < 6; i++) await h.json('GET', '/x').catch(() => {});
    assert.equal(h.breakerOpen, false);
    await h.close();
  });
});

describe('engine answers are size-capped', () => {
  const engine = new Engine();
  const MAX = 64 * 1024;
  let http_: EngineHttp;
  before(async () => {
    await engine.start();
    http_ = new EngineHttp(engine.url, { timeoutMs: 5000, retries: 0, label: 'test engine', maxResponseBytes: MAX });
  });
  after(async () => {
    await http_.close();
    await engine.close();
  });
  const big = (n: number) => ({ tokens: Array.from({ length: n }, (_, i) => i) });
  const tooLarge = (e: unknown) =>
    isCwmError(e) && e.code === 'ENGINE_ERROR' && /more than 65536 bytes/.test(e.message) && e.hint !== undefined;

  it('reads an answer under the cap whole, across many chunks', async () => {
    engine.script.push((_q, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      const text = JSON.stringify(big(8000)); // ~46 KB, sent in 1 KB pieces without a length
      for (let i = 0; i < text.length; i += 1024) res.write(text.slice(i, i + 1024));
      res.end();
    });
    const r = await http_.json<{ tokens: number[] }>('GET', '/x');
    assert.equal(r.body.tokens.length, 8000);
    assert.equal(r.body.tokens[7999], 7999);
  });

  it('refuses a declared length over the cap without reading it', async () => {
    engine.script.push((_q, res) => json(res, 200, big(20_000)));
    await assert.rejects(http_.json('GET', '/declared'), tooLarge);
  });

  it('stops reading a chunked answer once it passes the cap', async () => {
    let written = 0;
    engine.script.push((_q, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      // An endless answer: it only ends because the reader hangs up.
      const piece = `${'9,'.repeat(4096)}`;
      const pump = () => {
        while (res.write(piece)) {
          written += piece.length;
          if (written > 1024 * 1024 * 1024) return res.end();
        }
        res.once('drain', pump);
      };
      res.write('{"tokens":[');
      pump();
    });
    await assert.rejects(http_.json('GET', '/endless'), tooLarge);
    // What the engine got rid of before the reader hung up: the cap plus socket buffers, nowhere near 1 GiB.
    assert.ok(written < 128 * 1024 * 1024, `the reader hung up long before the engine stopped (${written} bytes)`);
    // the client carries on
    engine.script.push(ok);
    assert.deepEqual((await http_.json('GET', '/after')).body, { ok: true });
  });
});
