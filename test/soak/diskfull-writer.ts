/**
 * Child process for test/integration/diskfull.test.ts: drive the registry into a real ENOSPC inside LevelDB (the
 * free-space reserve turned off), free the space, write more, print what was acknowledged, then SIGKILL itself so
 * the parent can check that every acknowledged write survived recovery.
 *
 *   node --import tsx test/soak/diskfull-writer.ts <registry dir> <filler file>
 */
import fs from 'node:fs';
import { pino } from 'pino';
import { isCwmError } from '../../daemon/protocol/index.js';
import { Registry } from '../../daemon/registry/db.js';

const [location, filler] = process.argv.slice(2) as [string, string];
const reg = await Registry.open(location, pino({ level: 'silent' }));
reg.diskReserveBytes = 0;
const put = (key: string, bytes: number) =>
  reg.batch([{ type: 'put', sublevel: reg.chunks, key, value: Buffer.alloc(bytes, key.length) }]);
const acked: string[] = [];
for (let i = 0; i < 10; i++) {
  await put(`before-${i}`, 1000);
  acked.push(`before-${i}`);
}
const fd = fs.openSync(filler, 'w');
try {
  for (;;) fs.writeSync(fd, Buffer.alloc(65_536, 1));
} catch {}
try {
  for (;;) fs.writeSync(fd, Buffer.alloc(1));
} catch {}
fs.closeSync(fd);
let failure: { code: string; retryable: boolean; message: string; hint: string | null } | null = null;
try {
  await put('too-big', 300_000);
} catch (err) {
  failure = isCwmError(err)
    ? { code: err.code, retryable: err.retryable, message: err.message, hint: err.hint }
    : { code: 'raw', retryable: false, message: String(err), hint: null };
}
let whileFull: string | null = null;
try {
  await put('while-full', 100);
  acked.push('while-full');
} catch (err) {
  whileFull = isCwmError(err) ? err.code : String(err);
}
fs.rmSync(filler);
for (let i = 0; i < 50; i++) {
  await put(`after-${i}`, 3000);
  acked.push(`after-${i}`);
}
process.stdout.write(`${JSON.stringify({ acked, failure, whileFull })}\n`, () => process.kill(process.pid, 'SIGKILL'));
