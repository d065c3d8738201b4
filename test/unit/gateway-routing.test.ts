import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bearerOk } from '../../daemon/gateway/auth.js';
import { GatewayError } from '../../daemon/gateway/errors.js';
import { checkLoopback, isLoopbackHost, parseListen } from '../../daemon/gateway/listen.js';
import { upstreamHeaders } from '../../daemon/gateway/proxy.js';
import { rewriteRequest } from '../../daemon/gateway/rewrite.js';
import { resolveRoute } from '../../daemon/gateway/routing.js';
import { SESSION_ID_RULE } from '../../daemon/protocol/index.js';

function gatewayError(fn: () => unknown): GatewayError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof GatewayError, `expected a GatewayError, got ${err}`);
    return err;
  }
  assert.fail('expected an error');
}

describe('gateway routing', () => {
  it('takes the session from the path prefix and strips it', () => {
    const r = resolveRoute('POST', '/s/chat-1/v1/chat/completions?x=1', {});
    assert.deepEqual(r, { session: 'chat-1', upstreamPath: '/v1/chat/completions?x=1', kind: 'chat', label: 'chat' });
  });

  it('takes the session from the X-CWM-Session header', () => {
    const r = resolveRoute('POST', '/v1/completions', { 'x-cwm-session': 's1' });
    assert.equal(r.session, 's1');
    assert.equal(r.kind, 'completion');
    assert.equal(r.upstreamPath, '/v1/completions');
  });

  it('passes requests without a session, and non-generation paths, through', () => {
    assert.deepEqual(resolveRoute('POST', '/v1/chat/completions', {}), {
      session: null,
      upstreamPath: '/v1/chat/completions',
      kind: null,
      label: 'chat',
    });
    const models = resolveRoute('GET', '/s/s1/v1/models', {});
    assert.equal(models.kind, null);
    assert.equal(models.upstreamPath, '/v1/models');
    assert.equal(resolveRoute('GET', '/v1/chat/completions', { 'x-cwm-session': 's1' }).kind, null);
    assert.equal(resolveRoute('GET', '/s/s1', {}).upstreamPath, '/');
  });

  it('rejects an invalid session id naming the rule', () => {
    for (const bad of ['-x', 'a b', 'x'.repeat(65), '']) {
      const e = gatewayError(() => resolveRoute('POST', '/v1/chat/completions', { 'x-cwm-session': bad }));
      assert.equal(e.status, 400);
      assert.ok(e.message.includes(SESSION_ID_RULE), e.message);
    }
    const e = gatewayError(() => resolveRoute('POST', '/s/bad%20id/v1/chat/completions', {}));
    assert.ok(e.message.includes('/s/<session>/'));
  });

  it('rejects a header and a path that disagree', () => {
    const e = gatewayError(() => resolveRoute('POST', '/s/a/v1/completions', { 'x-cwm-session': 'b' }));
    assert.equal(e.status, 400);
  });
});

describe('gateway auth and listen address', () => {
  const token = 'a-long-enough-token-1234';
  it('accepts only the right bearer token', () => {
    assert.equal(bearerOk(null, undefined), true);
    assert.equal(bearerOk(token, `Bearer ${token}`), true);
    assert.equal(bearerOk(token, `bearer ${token}`), true);
    assert.equal(bearerOk(token, undefined), false);
    assert.equal(bearerOk(token, 'Bearer nope'), false);
    assert.equal(bearerOk(token, token), false);
    assert.equal(bearerOk(token, `Bearer ${token}x`), false);
  });

  it('accepts loopback addresses only', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', '::1', 'localhost', '0:0:0:0:0:0:0:1']) assert.ok(isLoopbackHost(h), h);
    for (const h of ['0.0.0.0', '192.168.1.2', '::', 'example.com', '10.0.0.1']) assert.ok(!isLoopbackHost(h), h);
    assert.deepEqual(parseListen('[::1]:0'), { host: '::1', port: 0 });
    assert.throws(() => checkLoopback('0.0.0.0:8765'), /loopback/);
    assert.deepEqual(checkLoopback('127.0.0.1:8765'), { host: '127.0.0.1', port: 8765 });
  });
});

describe('gateway body rewrite', () => {
  const salt = 'daemon-salt';
  const decorate = async (b: Record<string, unknown>) => {
    b.cache_salt = salt;
  };
  const raw = (o: unknown) => Buffer.from(JSON.stringify(o));

  it('adds the salt and leaves the rest alone', async () => {
    const r = await rewriteRequest(
      raw({ model: 'm', messages: [{ role: 'user', content: 'hi' }] }),
      'replace',
      decorate,
    );
    assert.deepEqual(JSON.parse(r.body.toString()), {
      model: 'm',
      messages: [{ role: 'user', content: 'hi' }],
      cache_salt: salt,
    });
    assert.equal(r.stream, false);
    assert.equal(r.stripUsage, false);
  });

  it('replaces or rejects a client salt per policy', async () => {
    const r = await rewriteRequest(raw({ prompt: 'x', cache_salt: 'mine' }), 'replace', decorate);
    assert.equal(r.json.cache_salt, salt);
    await assert.rejects(
      rewriteRequest(raw({ prompt: 'x', cache_salt: 'mine' }), 'reject', decorate),
      (e: GatewayError) => e.status === 400 && e.param === 'cache_salt',
    );
  });

  it('forces usage on streams and remembers whether the client asked', async () => {
    const a = await rewriteRequest(raw({ prompt: 'x', stream: true }), 'replace', decorate);
    assert.deepEqual(a.json.stream_options, { include_usage: true });
    assert.equal(a.stripUsage, true);
    const b = await rewriteRequest(
      raw({ prompt: 'x', stream: true, stream_options: { include_usage: true } }),
      'replace',
      decorate,
    );
    assert.equal(b.stripUsage, false);
    const c = await rewriteRequest(
      raw({ prompt: 'x', stream: true, stream_options: { continuous_usage_stats: true } }),
      'replace',
      decorate,
    );
    assert.deepEqual(c.json.stream_options, { continuous_usage_stats: true, include_usage: true });
    assert.equal(c.stripUsage, true);
  });

  it('answers 400 for a body that is not a JSON object', async () => {
    await assert.rejects(
      rewriteRequest(Buffer.from('{nope'), 'replace', decorate),
      (e: GatewayError) => e.status === 400,
    );
    await assert.rejects(
      rewriteRequest(Buffer.from('[1]'), 'replace', decorate),
      (e: GatewayError) => e.status === 400,
    );
  });
});

describe('gateway upstream headers', () => {
  it('drops hop-by-hop headers, the session header and what the gateway replaces', () => {
    const h = upstreamHeaders(
      {
        host: 'gw',
        connection: 'keep-alive',
        'transfer-encoding': 'chunked',
        'x-cwm-session': 's1',
        authorization: 'Bearer gateway-token',
        'content-type': 'application/json',
        'x-request-id': 'r1',
      },
      { drop: new Set(['host', 'x-cwm-session', 'authorization']), set: { authorization: 'Bearer engine-key' } },
    );
    assert.deepEqual(h, {
      'content-type': 'application/json',
      'x-request-id': 'r1',
      authorization: 'Bearer engine-key',
    });
  });
});
