/** Reading prom-client metrics back: health documents and tests show the same numbers as /metrics. */
import type { Registry } from 'prom-client';

/** Sum of the samples of `name` whose labels include `labels` (all samples when none given); 0 if absent. */
export async function metricValue(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = registry.getSingleMetric(name);
  if (!m) return 0;
  const { values } = await m.get();
  return values
    .filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x))
    .reduce((a, v) => a + v.value, 0);
}

/** The same from Prometheus exposition text (what GET /metrics served). */
export function scrapedValue(text: string, name: string, labels: Record<string, string> = {}): number {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const inner = m[2] ?? '';
    if (want.every((w) => inner.split(',').includes(w))) sum += Number(m[3]);
  }
  return sum;
}
