// The Prometheus text parser the metrics tests read the exposition back with (prom2javascript;
// parse-prometheus-text-format was tried first and drops the labels of labelled histograms).
import { getMetricsFromIterator, type PromMetrics } from 'prom2javascript';

export interface PromSample {
  labels: Record<string, string>;
  value?: number;
  buckets?: Record<string, number>;
  count?: number;
  sum?: number;
}

export async function parseProm(text: string): Promise<PromMetrics> {
  return getMetricsFromIterator(text.split('\n')[Symbol.iterator]());
}

/** The one sample of `name` whose labels include `labels`. */
export function sample(m: PromMetrics, name: string, labels: Record<string, string> = {}): PromSample {
  const f = m[name];
  if (!f) throw new Error(`metric ${name} is missing`);
  const found = (f.data as PromSample[]).filter((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (found.length !== 1) throw new Error(`metric ${name}${JSON.stringify(labels)}: ${found.length} samples`);
  return found[0] as PromSample;
}

export const value = (m: PromMetrics, name: string, labels: Record<string, string> = {}) => Number(sample(m, name, labels).value);
