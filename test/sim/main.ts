/**
 * CLI: `npm run sim -- --port 8000 [--lmcache-port 9000] [--gpu-blocks 4096] …`
 * Prints one JSON line {"url","lmcacheUrl","model","profile"} on stdout when ready; logs go to stderr.
 * Exits 0 on SIGTERM/SIGINT after closing both servers.
 */
import { parseArgs } from 'node:util';
import { startSimulator } from './index.js';
import type { SimOptions, SimProfile } from './types.js';

const USAGE = `usage: tsx test/sim/main.ts [options]
  --port N                 vLLM port (default 0 = ephemeral)
  --lmcache-port N         LMCache controller port (default 0 = ephemeral)
  --host 127.0.0.1         bind address (loopback only)
  --model NAME             served model name (default sim/llama-3-8b-instruct)
  --max-model-len N        (default 32768)
  --block-size N           (default 16)
  --gpu-blocks N           num_gpu_blocks (default 4096)
  --lmcache-chunk-size N   (default 256)
  --lmcache-cpu-chunks N   (default 64)
  --lmcache-disk-chunks N  (default 256)
  --no-lmcache             plain vLLM without the LMCache tier
  --profile P              vllm-0.12 (default) | vllm-0.10
  --no-prompt-tokens-details
  --version-string V       /version value
  --prefill-us N           µs per recomputed prompt token (default 20)
  --load-us N              µs per token loaded from LMCache (default 1)
  --decode-us N            µs per generated token (default 200)
  --hash-algo A            fast (default) | sha256_cbor
  --help`;

function num(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`--${name} must be a number, got ${v}`);
  return n;
}

function parse(argv: string[]): Partial<SimOptions> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      port: { type: 'string' },
      'lmcache-port': { type: 'string' },
      host: { type: 'string' },
      model: { type: 'string' },
      'max-model-len': { type: 'string' },
      'block-size': { type: 'string' },
      'gpu-blocks': { type: 'string' },
      'lmcache-chunk-size': { type: 'string' },
      'lmcache-cpu-chunks': { type: 'string' },
      'lmcache-disk-chunks': { type: 'string' },
      'no-lmcache': { type: 'boolean' },
      profile: { type: 'string' },
      'no-prompt-tokens-details': { type: 'boolean' },
      'version-string': { type: 'string' },
      'prefill-us': { type: 'string' },
      'load-us': { type: 'string' },
      'decode-us': { type: 'string' },
      'hash-algo': { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (values.help === true) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const o: Partial<SimOptions> = {};
  const set = <K extends keyof SimOptions>(k: K, v: SimOptions[K] | undefined): void => {
    if (v !== undefined) o[k] = v;
  };
  set('port', num('port', values.port));
  set('lmcachePort', num('lmcache-port', values['lmcache-port']));
  set('host', values.host);
  set('model', values.model);
  set('maxModelLen', num('max-model-len', values['max-model-len']));
  set('blockSize', num('block-size', values['block-size']));
  set('gpuBlocks', num('gpu-blocks', values['gpu-blocks']));
  set('lmcacheChunkSize', num('lmcache-chunk-size', values['lmcache-chunk-size']));
  set('lmcacheCpuChunks', num('lmcache-cpu-chunks', values['lmcache-cpu-chunks']));
  set('lmcacheDiskChunks', num('lmcache-disk-chunks', values['lmcache-disk-chunks']));
  if (values['no-lmcache'] === true) o.lmcache = false;
  if (values.profile !== undefined) {
    if (values.profile !== 'vllm-0.10' && values.profile !== 'vllm-0.12') {
      throw new Error(`--profile must be vllm-0.10 or vllm-0.12, got ${values.profile}`);
    }
    o.profile = values.profile as SimProfile;
  }
  if (values['no-prompt-tokens-details'] === true) o.promptTokensDetails = false;
  set('version', values['version-string']);
  set('prefillUsPerToken', num('prefill-us', values['prefill-us']));
  set('loadUsPerToken', num('load-us', values['load-us']));
  set('decodeUsPerToken', num('decode-us', values['decode-us']));
  const algo = values['hash-algo'];
  if (algo !== undefined) {
    if (algo !== 'fast' && algo !== 'sha256_cbor') throw new Error('--hash-algo must be fast or sha256_cbor');
    o.hashAlgo = algo;
  }
  return o;
}

async function main(): Promise<void> {
  let opts: Partial<SimOptions>;
  try {
    opts = parse(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n${USAGE}\n`);
    process.exit(2);
  }
  const sim = await startSimulator(opts);
  process.stdout.write(
    `${JSON.stringify({ url: sim.url, lmcacheUrl: sim.lmcacheUrl, model: sim.options.model, profile: sim.options.profile })}\n`,
  );
  process.stderr.write(`sim: vLLM on ${sim.url}, LMCache controller on ${sim.lmcacheUrl}\n`);
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`sim: ${signal}, shutting down\n`);
    sim.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((e: unknown) => {
  process.stderr.write(`sim: fatal: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
