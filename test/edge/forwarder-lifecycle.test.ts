/** The forwarder's lifecycle: start, notify, close (with a request in flight), restart on the same database. */
import { performance } from 'node:perf_hooks';
import { ack, insertReadings, metricValue as metric, range, seqsOf, until, useForwarderHarness } from '../support/forwarder-fixtures.js';
import { answer } from '../support/http-script.js';

const h = useForwarderHarness();
const { make, pending } = h;

describe('Forwarder lifecycle', () => {
  test('a forwarder restarted on the same database resumes after acked_seq', async () => {
    await insertReadings(h.fx, 1, 10);
    const first = make();
    await first.fwd.start();
    await until(async () => (await pending()) === 0);
    expect(await first.fwd.close()).toEqual({ pending: 0 });

    await insertReadings(h.fx, 11, 5);
    const second = make();
    await second.fwd.start();
    expect(second.fwd.status().ackedSeq).toBe(10);
    await until(async () => (await pending()) === 0);
    expect(h.cloud.requests.map(seqsOf)).toEqual([range(1, 10), range(11, 15)]);
    expect(second.fwd.status().ackedSeq).toBe(15);
  });

  test('close() during a slow request aborts it after the grace, keeps its rows, and reports them', async () => {
    expect.assertions(6);
    await insertReadings(h.fx, 1, 10);
    h.cloud.script(answer.hang());
    const { fwd, registry } = make({ requestTimeoutMs: 10_000, closeGraceMs: 100 });
    await fwd.start();
    await h.cloud.waitForRequests(1);
    expect(fwd.status().inflightUpToSeq).toBe(10);

    const t0 = performance.now();
    const report = await fwd.close();
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(report).toEqual({ pending: 10 });
    expect(await fwd.close()).toBe(report); // idempotent
    expect(await metric(registry, 'braid_forward_requests_total', { outcome: 'retry' })).toBe(0);
    await expect(fwd.start()).rejects.toMatchObject({ code: 'BRAID_ERR_CLOSED' });
  });

  test('close() lets a request that answers within the grace apply its ack', async () => {
    await insertReadings(h.fx, 1, 10);
    h.cloud.script(answer.after(100, ack()));
    const { fwd } = make({ closeGraceMs: 2000 });
    await fwd.start();
    await h.cloud.waitForRequests(1);
    expect(await fwd.close()).toEqual({ pending: 0 });
    expect(await pending()).toBe(0);
  });

  test('the next forwarder resends what an aborted request carried', async () => {
    await insertReadings(h.fx, 1, 4);
    h.cloud.script(answer.hang());
    const first = make({ closeGraceMs: 0 });
    await first.fwd.start();
    await h.cloud.waitForRequests(1);
    await first.fwd.close();
    const second = make();
    await second.fwd.start();
    await until(async () => (await pending()) === 0);
    expect(h.cloud.requests.map(seqsOf)).toEqual([range(1, 4), range(1, 4)]);
  });

  test('with no url it sends nothing, keeps readings buffered, and still reports status', async () => {
    await insertReadings(h.fx, 1, 10);
    const { fwd } = make({ url: null });
    await fwd.start();
    fwd.notify();
    await new Promise((r) => setTimeout(r, 100));
    expect(h.cloud.requests).toHaveLength(0);
    expect(fwd.status()).toMatchObject({ ackedSeq: 0, inflightUpToSeq: 0, batchesSent: 0, lastSuccessAt: null });
    expect(await fwd.close()).toEqual({ pending: 10 });
  });

  test('notify() wakes an idle forwarder without waiting for the idle poll', async () => {
    const { fwd } = make({ idlePollMs: 60_000 });
    await fwd.start();
    await new Promise((r) => setTimeout(r, 50));
    await insertReadings(h.fx, 1, 3);
    const t0 = performance.now();
    fwd.notify();
    await h.cloud.waitForRequests(1, 2000);
    expect(performance.now() - t0).toBeLessThan(1000);
  });

  test('Symbol.asyncDispose closes the forwarder', async () => {
    expect.assertions(2);
    const { fwd } = make();
    await fwd.start();
    await fwd[Symbol.asyncDispose]();
    expect(fwd.status().ackedSeq).toBe(0);
    await expect(fwd.start()).rejects.toMatchObject({ code: 'BRAID_ERR_CLOSED' });
  });

  test('bad options are refused with the key named', () => {
    expect(() => make({ batchMaxReadings: 0 })).toThrow(expect.objectContaining({ code: 'BRAID_ERR_CONFIG_INVALID', message: expect.stringContaining('batchMaxReadings') }));
    expect(() => make({ jitter: 2 })).toThrow(expect.objectContaining({ code: 'BRAID_ERR_CONFIG_INVALID' }));
  });
});
