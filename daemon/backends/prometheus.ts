export interface Sample {
  labels: Record<string, string>;
  value: number;
}

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/** Prometheus text exposition → samples by metric name. Label order does not matter; bad lines are skipped. */
export function parsePrometheus(text: string): Map<string, Sample[]> {
  const out = new Map<string, Sample[]>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const value = Number(m[3]);
    if (Number.isNaN(value) && m[3] !== 'NaN') continue;
    const labels: Record<string, string> = {};
    if (m[2]) for (const l of m[2].matchAll(LABEL)) labels[l[1] as string] = (l[2] as string).replace(/\\(.)/g, '$1');
    const name = m[1] as string;
    let list = out.get(name);
    if (!list) {
      list = [];
      out.set(name, list);
    }
    list.push({ labels, value });
  }
  return out;
}

/** Sum of a metric over all its series, trying names in order (new names first, then pre-0.10 ones). */
export function sumOf(metrics: Map<string, Sample[]>, ...names: string[]): number | null {
  for (const n of names) {
    const list = metrics.get(n);
    if (list && list.length > 0) return list.reduce((a, s) => a + s.value, 0);
  }
  return null;
}

export function maxOf(metrics: Map<string, Sample[]>, ...names: string[]): number | null {
  for (const n of names) {
    const list = metrics.get(n);
    if (list && list.length > 0) return Math.max(...list.map((s) => s.value));
  }
  return null;
}
