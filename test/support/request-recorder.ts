/**
 * Watches one route of a real cloud (a CloudServer plugin, added with useFirst before start): when
 * each request arrived and was answered, by the server's own hooks, what it answered, and how many
 * were in flight at once. Optionally holds each request `delayMs` before handling it, like a slow
 * link or a loaded cloud (the cloud itself runs unchanged).
 */
import { performance } from 'node:perf_hooks';
import { createCloud } from '../../cloud/app.js';
import type { CloudPlugin } from '../../cloud/server.js';
import { testCloudConfig } from './cloud.js';

export interface RecordedRequest {
  /** performance.now() when the request arrived (onRequest, before any delay). */
  start: number;
  /** performance.now() when the answer went out (onSend). */
  end: number;
  status: number;
  /** The answer body, parsed when JSON. */
  answer: Record<string, unknown> | null;
}

export interface RequestRecorder {
  plugin: CloudPlugin;
  readonly requests: RecordedRequest[];
  /** Most requests to the route in flight at the same moment. */
  readonly maxInFlight: number;
}

export function recordRoute(path: string, o: { delayMs?: number } = {}): RequestRecorder {
  const requests: RecordedRequest[] = [];
  const started = new WeakMap<object, number>();
  let inFlight = 0;
  let maxInFlight = 0;
  const plugin: CloudPlugin = (app) => {
    app.addHook('onRequest', async (req) => {
      if (req.url !== path) return;
      started.set(req, performance.now());
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      if (o.delayMs) await new Promise((r) => setTimeout(r, o.delayMs));
    });
    app.addHook('onSend', async (req, reply, payload) => {
      const start = started.get(req);
      if (start === undefined) return payload;
      started.delete(req);
      inFlight--;
      let answer: Record<string, unknown> | null = null;
      try { answer = typeof payload === 'string' ? JSON.parse(payload) as Record<string, unknown> : null; } catch { /* not JSON */ }
      requests.push({ start, end: performance.now(), status: reply.statusCode, answer });
      return payload;
    });
  };
  return { plugin, requests, get maxInFlight() { return maxInFlight; } };
}

/** The whole cloud of `braid cloud` (createCloud) on `dir`, with `rec` watching its route from the first request. */
export async function startRecordedCloud(dir: string, rec: RequestRecorder): Promise<{ url: string; close: () => Promise<void> }> {
  const app = createCloud(testCloudConfig(dir));
  app.server.useFirst(rec.plugin);
  const { url } = await app.server.start();
  return { url, close: () => app.server.close() };
}
