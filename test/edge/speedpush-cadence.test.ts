/**
 * The speed pusher's cadence (docs/serving.md): pushes start every speed.pushIntervalMs, start to
 * start, however long each takes, and never overlap; a push longer than the interval is followed
 * at once. Timestamps are the real cloud's own (a route recorder on its server), and the cloud is
 * made slow by holding each push before it is handled, as a slow link would.
 */
import { SPEED_PATH } from '../../edge/speedpush/index.js';
import { type TestGateway, eventually, startTestGateway, tempDir } from '../support/gateway.js';
import { type RequestRecorder, recordRoute, startRecordedCloud } from '../support/request-recorder.js';
import { credentials } from '../cloud/speed-fixtures.js';

const GW = 'gw-cadence';

let cloudDir: { path: string; remove: () => void };
let closeCloud: (() => Promise<void>) | null = null;
let gw: TestGateway | null = null;

beforeEach(() => {
  cloudDir = tempDir('braid-cadence-cloud-');
});

afterEach(async () => {
  await gw?.close();
  gw = null;
  await closeCloud?.();
  closeCloud = null;
  cloudDir.remove();
});

/** A real cloud whose speed route answers `delayMs` late, and a gateway pushing to it every `intervalMs`. */
async function run(intervalMs: number, delayMs: number, pushes: number): Promise<RequestRecorder> {
  const { tokens } = await credentials(cloudDir.path, [GW]);
  const rec = recordRoute(SPEED_PATH, { delayMs });
  const cloud = await startRecordedCloud(cloudDir.path, rec);
  closeCloud = cloud.close;
  const { url } = cloud;
  gw = await startTestGateway({ id: GW, cloud: { url, token: tokens[GW] }, speed: { pushIntervalMs: intervalMs } });
  await eventually(() => rec.requests.length >= pushes, 20_000, 25);
  return rec;
}

/** Gaps between the starts of consecutive pushes, as the cloud saw them arrive. */
function gaps(rec: RequestRecorder): number[] {
  const starts = rec.requests.map((r) => r.start).sort((a, b) => a - b);
  return starts.slice(1).map((t, i) => t - starts[i]);
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

test('pushes start every pushIntervalMs, start to start: a slow push does not stretch the cadence', async () => {
  const rec = await run(400, 250, 8);
  expect(rec.requests.every((r) => r.status === 200)).toBe(true);
  expect(rec.maxInFlight).toBe(1);
  const g = gaps(rec);
  // Sleeping the interval after each push ended would space them 400 + 250 ms apart.
  expect(median(g)).toBeLessThan(400 + 250 / 2);
  // Not early either: the next push waits out the interval from the last one's start (a single
  // gap may be shorter by however much longer the previous push took to build and connect).
  expect(median(g)).toBeGreaterThan(400 - 25);
});

test('a push longer than the interval is followed at once, never overlapped', async () => {
  const rec = await run(200, 500, 6);
  expect(rec.requests.every((r) => r.status === 200)).toBe(true);
  expect(rec.maxInFlight).toBe(1);
  const g = gaps(rec);
  expect(Math.min(...g)).toBeGreaterThanOrEqual(500 - 5);
  // Back to back: no interval added after a push that already took longer than one.
  expect(median(g)).toBeLessThan(500 + 200);
  // Each push starts only after the previous one was answered.
  const sorted = [...rec.requests].sort((a, b) => a.start - b.start);
  for (let i = 1; i < sorted.length; i++) expect(sorted[i].start).toBeGreaterThanOrEqual(sorted[i - 1].end - 1);
});
