import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { swapFileName } from '../../daemon/backends/llamacpp/backend.js';
import {
  checkStateFile,
  commonPrefix,
  describeStateFile,
  parseStateHeader,
  readStateHeader,
  removeStateFile,
  STATE_MAGIC,
  stateFileName,
  statePath,
} from '../../daemon/backends/llamacpp/state-file.js';

/** A state file as llama_state_seq_save_file writes it: magic, version, packed token list, KV bytes. */
function stateBytes(tokens: number[], kvBytes = 64): Buffer {
  const b = Buffer.alloc(12 + (tokens.length + 4) * 4 + kvBytes);
  b.writeUInt32LE(STATE_MAGIC, 0);
  b.writeUInt32LE(3, 4);
  b.writeUInt32LE(tokens.length + 4, 8);
  b.writeInt32LE(-1, 12);
  b.writeInt32LE(1, 16);
  b.writeInt32LE(tokens.length, 20);
  tokens.forEach((t, i) => {
    b.writeInt32LE(t, 24 + 4 * i);
  });
  b.writeInt32LE(0, 24 + 4 * tokens.length);
  for (let i = 0; i < kvBytes; i++) b[28 + 4 * tokens.length + i] = (i * 37) & 0xff;
  return b;
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cwm-sf-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('llama.cpp state files', () => {
  it('names are flat: a window id plus .bin, never a path', () => {
    assert.equal(stateFileName('AbC_-09xyz'), 'AbC_-09xyz.bin');
    for (const bad of ['../x', 'a/b', '', 'a.b', 'x'.repeat(200)]) assert.throws(() => stateFileName(bad));
    assert.throws(() => statePath(dir, '../etc/passwd.bin'));
    assert.match(swapFileName('any session/id'), /^cwm-swap-[0-9a-f]{32}\.bin$/);
  });

  it('parses the packed token list of the header', () => {
    const b = stateBytes([1, 300, 301, 302]);
    assert.deepEqual(parseStateHeader(b), { version: 3, tokens: [1, 300, 301, 302] });
    assert.deepEqual(parseStateHeader(stateBytes([]))?.tokens, []);
    const wrongMagic = Buffer.from(b);
    wrongMagic.write('XXXX', 0, 'latin1');
    assert.equal(parseStateHeader(wrongMagic), null);
    const wrongVersion = Buffer.from(b);
    wrongVersion.writeUInt32LE(2, 4);
    assert.equal(parseStateHeader(wrongVersion), null);
    const wrongCount = Buffer.from(b);
    wrongCount.writeInt32LE(9, 20);
    assert.equal(parseStateHeader(wrongCount), null);
    assert.equal(parseStateHeader(b.subarray(0, 20)), null, 'cut inside the token list');
    assert.equal(parseStateHeader(Buffer.alloc(0)), null);
  });

  it('checks a recorded file: ok, missing, truncated, corrupt, unparseable', async () => {
    const tokens = Array.from({ length: 100 }, (_, i) => 259 + i);
    const name = stateFileName('win1');
    fs.writeFileSync(statePath(dir, name), stateBytes(tokens, 4096));
    const rec = await describeStateFile(dir, name);
    assert.equal(rec.size, fs.statSync(statePath(dir, name)).size);
    assert.equal(
      rec.sha256,
      createHash('sha256')
        .update(fs.readFileSync(statePath(dir, name)))
        .digest('hex'),
    );
    assert.deepEqual((await readStateHeader(statePath(dir, name)))?.tokens, tokens);

    const ok = await checkStateFile(dir, rec);
    assert.ok(ok.ok);
    assert.deepEqual(ok.header.tokens, tokens);

    const flipped = fs.readFileSync(statePath(dir, name));
    flipped[flipped.length - 10] = (flipped[flipped.length - 10] ?? 0) ^ 1;
    fs.writeFileSync(statePath(dir, name), flipped);
    const corrupt = await checkStateFile(dir, rec);
    assert.ok(!corrupt.ok && corrupt.problem === 'corrupt', JSON.stringify(corrupt));
    assert.match(corrupt.message, /sha256/);

    fs.truncateSync(statePath(dir, name), 100);
    const cut = await checkStateFile(dir, rec);
    assert.ok(!cut.ok && cut.problem === 'truncated');

    // Same size and checksum as recorded, but not a state file: refused before it reaches the server.
    const junk = Buffer.alloc(500, 7);
    fs.writeFileSync(statePath(dir, name), junk);
    const junkRec = { file: name, size: 500, sha256: createHash('sha256').update(junk).digest('hex') };
    const unparsed = await checkStateFile(dir, junkRec);
    assert.ok(!unparsed.ok && unparsed.problem === 'corrupt');

    assert.equal(await removeStateFile(dir, name), true);
    assert.equal(await removeStateFile(dir, name), false, 'removing twice is fine');
    const missing = await checkStateFile(dir, rec);
    assert.ok(!missing.ok && missing.problem === 'missing');
    assert.match(missing.message, /missing/);

    const escaped = await checkStateFile(dir, { ...rec, file: '../x.bin' });
    assert.ok(!escaped.ok && escaped.problem === 'unreadable');
  });

  it('common prefix of token lists', () => {
    assert.equal(commonPrefix([1, 2, 3], [1, 2, 3]), 3);
    assert.equal(commonPrefix([1, 2, 3], [1, 2]), 2);
    assert.equal(commonPrefix([1, 9], [1, 2]), 1);
    assert.equal(commonPrefix([], [1]), 0);
  });
});
