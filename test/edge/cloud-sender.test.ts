/**
 * edge/cloudclient's CloudSender, the loop under the forwarder and the speed pusher, driven by
 * plain step functions: which wait each wake-up ends, the start-to-start idle cadence, the last
 * step close() grants a lingering batch, the status and metrics bookkeeping.
 */
import { performance } from 'node:perf_hooks';
import { Counter, Gauge, Registry } from 'prom-client';
import { HttpError } from '../../shared/errors.js';
import { nullLogger } from '../../shared/logger.js';
import { CloudSender, IDLE, type Next, NOW, type Step } from '../../edge/cloudclient/index.js';
import { metricValue } from '../support/forwarder-fixtures.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let senders: CloudSender[] = [];
afterEach(async () => {
  for (const s of senders) await s.close();
  senders = [];
});

function make(o: { idleMs?: number; closeGraceMs?: number; maxSize?: number } = {}) {
  const registry = new Registry();
  const registers = [registry];
  const metrics = {
    requests: new Counter({ name: 't_requests_total', help: 'h', labelNames: ['outcome'] as const, registers }),
    consecutiveFailures: new Gauge({ name: 't_failures', help: 'h', registers }),
    lastSuccess: new Gauge({ name: 't_last_success', help: 'h', registers }),
  };
  const sender = new CloudSender({
    name: 'test sender', what: 'test request', sizeField: 'size', log: nullLogger(), metrics, now: Date.now,
    options: { idleMs: 60_000, closeGraceMs: 500, maxSize: 100, retryInitialMs: 60_000, retryMaxMs: 60_000, jitter: 0, ...o },
  });
  senders.push(sender);
  return { sender, registry };
}

/** A step that answers `script` in turn (then IDLE) and records when each run began and with what flush. */
function scripted(script: Array<Next | (() => Promise<Next>)>) {
  const runs: Array<{ at: number; flush: boolean }> = [];
  const step: Step = async (flush) => {
    runs.push({ at: performance.now(), flush });
    const s = script.shift() ?? IDLE;
    return typeof s === 'function' ? s() : s;
  };
  return { runs, step };
}

test('poke() ends an idle wait but not a backoff; retryNow() ends a backoff', async () => {
  const { sender } = make();
  const { runs, step } = scripted([IDLE, { kind: 'backoff', ms: 60_000 }]);
  sender.begin();
  sender.run(step);
  await sleep(50);
  expect(runs).toHaveLength(1);
  sender.poke();
  await sleep(50);
  expect(runs).toHaveLength(2); // now backing off
  sender.poke();
  await sleep(50);
  expect(runs).toHaveLength(2);
  sender.retryNow(); // no failure counted yet: nothing to cut short
  await sleep(50);
  expect(runs).toHaveLength(2);
  sender.failed(new Error('down'), null);
  sender.retryNow();
  await sleep(50);
  expect(runs).toHaveLength(3);
});

test('idle waits run start to start: a slow step is followed after the rest of the interval, a slower one at once', async () => {
  // Five times the 200 / 120 / 300 ms this was written with: a pause of the event loop longer than
  // 120 ms (a major GC late in an in-band run) fired the rest of the interval past its slack.
  const IDLE_MS = 1_000;
  const [SLOW, SLOWER] = [600, 1_500];
  const { sender } = make({ idleMs: IDLE_MS });
  const slow = (ms: number) => async () => { await sleep(ms); return IDLE; };
  const { runs, step } = scripted([slow(SLOW), slow(SLOWER), slow(0)]);
  sender.begin();
  sender.run(step);
  const until = performance.now() + 20_000;
  while (runs.length < 3 && performance.now() < until) await sleep(20);
  expect(runs.length).toBeGreaterThanOrEqual(3);
  const gap = (i: number) => runs[i].at - runs[i - 1].at;
  // After the rest of the interval (start to start), not a whole interval after the step ended.
  expect(gap(1)).toBeGreaterThanOrEqual(IDLE_MS - 5);
  expect(gap(1)).toBeLessThan(IDLE_MS + SLOW);
  // At once after a step longer than the interval, not an interval after it.
  expect(gap(2)).toBeGreaterThanOrEqual(SLOWER - 5);
  expect(gap(2)).toBeLessThan(SLOWER + IDLE_MS);
});

test('close() during a linger runs one last step with flush; during an idle wait, none', async () => {
  const a = make();
  const lingering = scripted([{ kind: 'linger', ms: 60_000 }]);
  a.sender.begin();
  a.sender.run(lingering.step);
  await sleep(30);
  await a.sender.close();
  expect(lingering.runs.map((r) => r.flush)).toEqual([false, true]);

  const b = make();
  const idle = scripted([IDLE]);
  b.sender.begin();
  b.sender.run(idle.step);
  await sleep(30);
  await b.sender.close();
  expect(idle.runs.map((r) => r.flush)).toEqual([false]);
  expect(() => b.sender.begin()).toThrow(expect.objectContaining({ code: 'BRAID_ERR_CLOSED' }));
});

test('close() aborts a request still running after the grace period', async () => {
  const { sender } = make({ closeGraceMs: 50 });
  let aborted = false;
  sender.begin();
  sender.run(async () => {
    await new Promise<void>((resolve) => sender.signal.addEventListener('abort', () => resolve()));
    aborted = sender.abortedByClose();
    return NOW;
  });
  await sleep(20);
  const t0 = performance.now();
  await sender.close();
  expect(aborted).toBe(true);
  expect(performance.now() - t0).toBeLessThan(1000);
});

test('bookkeeping: a 413 halves the working size, successes grow it back, failures and success show in status and metrics', async () => {
  const { sender, registry } = make({ maxSize: 100 });
  sender.begin();
  expect(sender.requestFailed(new HttpError(413, '{"code":"BRAID_ERR_BODY_TOO_LARGE"}'), 100)).toEqual(NOW);
  expect(sender.size).toBe(50);
  expect(sender.status()).toMatchObject({ consecutiveFailures: 0, lastError: { code: 'BRAID_ERR_BODY_TOO_LARGE', status: 413 } });
  expect(sender.requestFailed(new HttpError(401, '{"code":"BRAID_ERR_UNAUTHORIZED"}'), 50)).toEqual({ kind: 'backoff', ms: 60_000 });
  expect(await metricValue(registry, 't_requests_total', { outcome: 'rejected' })).toBe(1);
  expect(await metricValue(registry, 't_failures')).toBe(1);
  sender.answered();
  sender.progressed();
  expect(sender.size).toBe(62);
  expect(sender.status()).toMatchObject({ consecutiveFailures: 0, lastSuccessAt: expect.any(Number) });
  expect(await metricValue(registry, 't_failures')).toBe(0);
  expect(await metricValue(registry, 't_last_success')).toBeGreaterThan(0);
});
