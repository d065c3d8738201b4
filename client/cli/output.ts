import { CwmError, isCwmError } from '../../daemon/protocol/index.js';

/**
 * Characters a terminal may act on rather than print: C0 controls (ESC starts colour, title and hyperlink
 * sequences; CR and BS overwrite what was shown), DEL, C1 controls (U+009B is a one-character CSI on some
 * terminals), and the bidi and line-separator characters that make text display other than it reads. Window
 * descriptions, session messages and engine text are free text from other programs (an MCP client, the engine), so
 * everything the CLI prints passes through here; newline and tab are kept where text may span lines.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const UNSAFE_MULTILINE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const UNSAFE_INLINE = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/** `text` with every unsafe character shown as a \uXXXX escape (also a valid escape inside JSON strings). */
export function safeText(text: string, multiline = true): string {
  return text.replace(multiline ? UNSAFE_MULTILINE : UNSAFE_INLINE, (ch) => {
    if (!multiline && ch === '\n') return '\\n';
    if (!multiline && ch === '\t') return ' ';
    return `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`;
  });
}

export interface Column<T> {
  header: string;
  get: (row: T) => string | number | boolean | null | undefined;
  align?: 'left' | 'right';
}

/** A plain, aligned text table; no colours so it survives pipes and logs. */
export function table<T>(rows: T[], columns: Column<T>[]): string {
  const cells = rows.map((r) => columns.map((c) => fmt(c.get(r))));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((row) => (row[i] as string).length)));
  const line = (vals: string[]) =>
    vals
      .map((v, i) =>
        (columns[i] as Column<T>).align === 'right' ? v.padStart(widths[i] as number) : v.padEnd(widths[i] as number),
      )
      .join('  ')
      .trimEnd();
  return [line(columns.map((c) => c.header)), ...cells.map(line)].join('\n');
}

/** One table cell or key-value value: on one line, nothing a terminal would act on. */
function fmt(v: string | number | boolean | null | undefined): string {
  if (v === null || v === undefined) return '-';
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  return safeText(String(v), false);
}

export function kv(pairs: [string, string | number | boolean | null | undefined][]): string {
  const w = Math.max(...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${`${k}:`.padEnd(w + 1)}  ${fmt(v)}`).join('\n');
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

export function ago(iso: string | null): string {
  if (!iso) return '-';
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return `${Math.round(s)}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

export function out(text: string): void {
  const t = safeText(text);
  process.stdout.write(t.endsWith('\n') ? t : `${t}\n`);
}

/** JSON output: JSON.stringify escapes C0 but not C1 or bidi characters; the escapes added here parse back the same. */
export function printJson(value: unknown): void {
  process.stdout.write(`${safeText(JSON.stringify(value, null, 2))}\n`);
}

export function warn(text: string): void {
  process.stderr.write(`warning: ${safeText(text)}\n`);
}

const USAGE_CODES = new Set(['INVALID_PARAMS', 'BAD_NAME']);

/** The one place an error becomes CLI output: message + hint on stderr (JSON when --json), exit 1 (2 for usage). */
export function exitWithError(err: unknown, json: boolean): never {
  const e = isCwmError(err) ? err : new CwmError('INTERNAL', err instanceof Error ? err.message : String(err));
  if (json) {
    process.stderr.write(
      `${safeText(JSON.stringify({ error: { code: e.code, message: e.message, hint: e.hint, retryable: e.retryable, ...(e.details ? { details: e.details } : {}) } }))}\n`,
    );
  } else {
    process.stderr.write(`error: ${safeText(e.message)}\n`);
    if (e.hint) process.stderr.write(`hint: ${safeText(e.hint)}\n`);
  }
  process.exit(USAGE_CODES.has(e.code) ? 2 : 1);
}

/** A spinner on stderr for long operations, only on a TTY (and never with --json). */
export function progress(label: string, enabled: boolean): { stop(): void } {
  if (!enabled || !process.stderr.isTTY) return { stop() {} };
  const frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
  const t0 = Date.now();
  let i = 0;
  const timer = setInterval(() => {
    const s = ((Date.now() - t0) / 1000).toFixed(1);
    process.stderr.write(`\r${frames[i++ % frames.length]} ${label} ${s}s`);
  }, 100);
  return {
    stop() {
      clearInterval(timer);
      process.stderr.write('\r\x1b[K');
    },
  };
}
