/**
 * The conformance suite of the ingest store (cloud/store/ingest.ts), run by every implementation
 * (aedes' test/abstract-persistence.js style; test/cloud/store-ingest.test.ts runs it on each backend
 * of its list). Staging is a recording stand-in: the store decides and records, the test sees what
 * it was asked to stage. Every expectation is written out, so every backend answers the same rows:
 * - the same batch twice, or twice in one group, is stored once, the repeat counted as duplicates [INV-2];
 * - two stores on one database committing the same batches at once stage each reading once;
 * - a batch that skips seqs, or contradicts a stored epoch, is refused and leaves nothing, while the
 *   other requests of its group are stored;
 * - gap records are kept once and account for the seqs they name (cloud_lost ones counted);
 * - future readings and clock offsets are recorded with the group;
 * - a group whose staging throws leaves nothing: the resend is decided afresh [INV-1];
 * - sealBegin: vouched seqs, unvouched ones adopted only when nobody holds them, staged seqs the
 *   file lost reported and never valid; repeated, the same answer;
 * - many gateways' ranges recorded at once (a group's, a seal's) keep every range set merged;
 * - sealCommit: catalog, sealed (merged across segments), staged rows out; committed twice, the same catalog.
 */
import type { IngestStore, Placement, GroupCommitRequest } from '../../../cloud/store/ingest.js';
import type { CatalogEntry, GapRow } from '../../../cloud/store/ingest-state.js';
import { ReadingColumns } from '../../../cloud/ingest/columns.js';
import type { IngestBatch, ReadingTuple } from '../../../cloud/ingest/validate.js';
import { type StagingLine, seqRanges } from '../../../cloud/ingest/plan.js';
import type { Range } from '../../../cloud/ingest/ranges.js';
import { nullLogger } from '../../../shared/logger.js';

export interface IngestStoreHarness {
  store: IngestStore;
  /** Another store on the same database: a second node (PostgreSQL), a second connection and write queue (SQLite). */
  another: () => Promise<IngestStore>;
  /** The rows of a query written in SQL both dialects read alike (no parameters), numbers as numbers. */
  rows: (sql: string) => Promise<Array<Record<string, unknown>>>;
  /** Closes the stores and their connections (another()'s too). */
  close: () => Promise<void>;
}

const T = Date.UTC(2024, 10, 24, 12, 0);
const DAY = '2024-11-24';

/** Readings seq from..to of device d1, metric temp, epoch `epoch`, ts T - 1 h + seq s. */
function readings(from: number, to: number, epoch = 1, ts = (seq: number) => T - 3_600_000 + seq * 1000): ReadingTuple[] {
  const out: ReadingTuple[] = [];
  for (let s = from; s <= to; s++) out.push([s, epoch, 'd1', 'temp', ts(s), s / 2]);
  return out;
}

/** A batch carrying seqs from..to (no readings when from > to: firstSeq = lastSeq + 1). */
function batch(gateway: string, from: number, to: number, o: Partial<Pick<IngestBatch, 'epochs' | 'gaps' | 'firstSeq' | 'lastSeq'>> & { readings?: ReadingTuple[] } = {}): IngestBatch {
  return {
    gateway, firstSeq: o.firstSeq ?? from, lastSeq: o.lastSeq ?? to, readings: ReadingColumns.fromTuples(o.readings ?? readings(from, to)),
    epochs: o.epochs ?? [], gaps: o.gaps ?? [], sentAt: null,
  };
}

function gap(id: number, fromSeq: number, toSeq: number, reason = 'disk_budget'): GapRow {
  const lost = reason === 'cloud_lost';
  return { id, reason, fromSeq, toSeq, count: toSeq - fromSeq + 1, minTs: lost ? null : T - 7_200_000, maxTs: lost ? null : T - 7_100_000, devices: lost ? [] : ['d1'] };
}

/** A staging stand-in: records the lines it is asked to stage, all into `segment`. */
function stager(segment = 'seg-1', o: { delayMs?: number; fail?: boolean } = {}) {
  const lines: StagingLine[] = [];
  return {
    lines,
    /** The seqs staged, as "gateway:seq". */
    seqs: () => lines.flatMap((l) => [...l.rows.seq].map((seq) => `${l.gateway}:${seq}`)),
    stage: async (ls: StagingLine[]): Promise<Placement> => {
      if (o.delayMs) await new Promise((r) => setTimeout(r, o.delayMs));
      if (o.fail) throw new Error('disk full (staging stand-in)');
      lines.push(...ls);
      const byGateway = new Map<string, Range[]>();
      for (const l of ls) byGateway.set(l.gateway, [...(byGateway.get(l.gateway) ?? []), ...seqRanges(l.rows)]);
      return new Map([[segment, byGateway]]);
    },
  };
}

function request(batches: IngestBatch[], stage: GroupCommitRequest['stage'], o: Partial<GroupCommitRequest> = {}): GroupCommitRequest {
  return { batches, now: () => T, maxFutureMs: Infinity, clockOffset: () => null, stage, log: nullLogger(), ...o };
}

const accepted = (o: Partial<{ ackSeq: number; stored: number; duplicates: number; newEpochs: number; newGaps: number; newLostReadings: number }>) =>
  ({ ackSeq: 0, stored: 0, duplicates: 0, newEpochs: 0, newGaps: 0, newLostReadings: 0, future: null, ...o });

const seqList = (from: number, to: number, g = 'gw-1') => Array.from({ length: to - from + 1 }, (_, i) => `${g}:${from + i}`);

function entry(segment: string, gateway: string, minSeq: number, maxSeq: number): CatalogEntry {
  return {
    path: `master/day=${DAY}/part-${segment}.parquet`, day: DAY, rows: maxSeq - minSeq + 1, bytes: 4096,
    gateways: [{ gateway, minSeq, maxSeq, minEpoch: 1, maxEpoch: 1, rows: maxSeq - minSeq + 1 }],
  };
}

export function ingestStoreConformance(name: string, factory: () => Promise<IngestStoreHarness>): void {
  describe(`IngestStore conformance: ${name}`, () => {
    let h: IngestStoreHarness;
    let s: IngestStore;
    beforeEach(async () => {
      h = await factory();
      s = h.store;
    }, 30_000);
    afterEach(async () => { await h?.close(); });

    const received = () => h.rows('SELECT gateway, from_seq, to_seq FROM received ORDER BY gateway, from_seq');
    const staged = () => h.rows('SELECT segment, gateway, from_seq, to_seq FROM staged ORDER BY segment, gateway, from_seq');
    const epochs = () => h.rows('SELECT gateway, epoch, first_seq, last_seq FROM epochs ORDER BY gateway, epoch');
    const gaps = () => h.rows('SELECT gateway, id, reason, from_seq, to_seq, count, min_ts, max_ts FROM gaps ORDER BY gateway, id');

    test('the same batch twice is stored once, the repeat counted as duplicates; an overlapping one stores only its new seqs', async () => {
      const st = stager();
      const b = batch('gw-1', 1, 10, { epochs: [{ epoch: 1, firstSeq: 1, lastSeq: 10 }] });
      expect((await s.commitGroup(request([b], st.stage))).outcomes).toEqual([accepted({ ackSeq: 10, stored: 10, newEpochs: 1 })]);
      expect(st.seqs()).toEqual(seqList(1, 10));
      const again = await s.commitGroup(request([b], st.stage));
      expect(again.outcomes).toEqual([accepted({ ackSeq: 10, duplicates: 10 })]);
      expect(again.lines).toEqual([]);
      expect(st.seqs()).toEqual(seqList(1, 10));
      const over = await s.commitGroup(request([batch('gw-1', 6, 15)], st.stage));
      expect(over.outcomes).toEqual([accepted({ ackSeq: 15, stored: 5, duplicates: 5 })]);
      expect(over.added).toEqual(new Map([['gw-1', [{ from: 11, to: 15 }]]]));
      expect(st.seqs()).toEqual(seqList(1, 15));
      expect(await received()).toEqual([{ gateway: 'gw-1', from_seq: 1, to_seq: 15 }]);
      expect(await staged()).toEqual([{ segment: 'seg-1', gateway: 'gw-1', from_seq: 1, to_seq: 15 }]);
      expect(await epochs()).toEqual([{ gateway: 'gw-1', epoch: 1, first_seq: 1, last_seq: 10 }]);
    });

    test('a repeat within one group is stored once; outcomes come back in the group\'s order', async () => {
      const st = stager();
      const b = batch('gw-1', 1, 10);
      const plan = await s.commitGroup(request([b, batch('gw-2', 1, 3), b], st.stage));
      expect(plan.outcomes).toEqual([
        accepted({ ackSeq: 10, stored: 10 }), accepted({ ackSeq: 3, stored: 3 }), accepted({ ackSeq: 10, duplicates: 10 }),
      ]);
      expect(st.seqs()).toEqual([...seqList(1, 10), ...seqList(1, 3, 'gw-2')]);
      expect(await received()).toEqual([{ gateway: 'gw-1', from_seq: 1, to_seq: 10 }, { gateway: 'gw-2', from_seq: 1, to_seq: 3 }]);
    });

    test('two stores committing the same batches at once stage each reading once [INV-2]', async () => {
      const other = await h.another();
      const a = stager('seg-a', { delayMs: 20 });
      const b = stager('seg-b', { delayMs: 20 });
      for (let round = 0; round < 5; round++) {
        const from = round * 100 + 1;
        const group = [batch('gw-1', from, from + 99), batch('gw-2', from, from + 49, { lastSeq: from + 99, gaps: [gap(round + 1, from + 50, from + 99)] })];
        const [pa, pb] = await Promise.all([s.commitGroup(request(group, a.stage)), other.commitGroup(request([...group].reverse(), b.stage))]);
        const stored = [...pa.outcomes, ...pb.outcomes].reduce((n, o) => n + o.stored, 0);
        const dups = [...pa.outcomes, ...pb.outcomes].reduce((n, o) => n + o.duplicates, 0);
        expect({ stored, dups }).toEqual({ stored: 150, dups: 150 });
        expect([...pa.outcomes, ...pb.outcomes].reduce((n, o) => n + o.newGaps, 0)).toBe(1);
        for (const o of [...pa.outcomes, ...pb.outcomes]) expect(o.refused).toBeUndefined();
      }
      const all = [...a.seqs(), ...b.seqs()];
      expect(all.length).toBe(750);
      expect(new Set(all).size).toBe(750);
      expect(await received()).toEqual([
        { gateway: 'gw-1', from_seq: 1, to_seq: 500 },
        ...[0, 1, 2, 3, 4].map((r) => ({ gateway: 'gw-2', from_seq: r * 100 + 1, to_seq: r * 100 + 50 })),
      ]);
      const stagedSeqs = (await staged()).reduce((n, r) => n + (r.to_seq as number) - (r.from_seq as number) + 1, 0);
      expect(stagedSeqs).toBe(750);
      expect((await gaps()).length).toBe(5);
    });

    test('a batch that skips seqs is refused whole, the rest of its group stored; with a gap record for them it is accepted', async () => {
      const st = stager();
      await s.commitGroup(request([batch('gw-1', 1, 10)], st.stage));
      const skip = batch('gw-1', 15, 20, { epochs: [{ epoch: 2, firstSeq: 11, lastSeq: 20 }], gaps: [gap(1, 25, 26)], lastSeq: 26 });
      const plan = await s.commitGroup(request([skip, batch('gw-2', 1, 5)], st.stage));
      expect(plan.outcomes[0]).toMatchObject({ ackSeq: 0, stored: 0, duplicates: 0, newEpochs: 0, newGaps: 0 });
      expect(plan.outcomes[0].refused).toMatchObject({
        code: 'BRAID_ERR_INGEST_SEQ_SKIP', details: { heldSeq: 10, missing: [{ fromSeq: 11, toSeq: 14 }, { fromSeq: 21, toSeq: 24 }], missingCount: 8 },
      });
      expect(plan.outcomes[1]).toEqual(accepted({ ackSeq: 5, stored: 5 }));
      expect(await received()).toEqual([{ gateway: 'gw-1', from_seq: 1, to_seq: 10 }, { gateway: 'gw-2', from_seq: 1, to_seq: 5 }]);
      expect(await epochs()).toEqual([]);
      expect(await gaps()).toEqual([]);
      // The same seqs accounted for by gap records: accepted.
      const fixed = { ...skip, gaps: [gap(1, 11, 14), gap(2, 21, 26)] };
      expect((await s.commitGroup(request([fixed], st.stage))).outcomes).toEqual([accepted({ ackSeq: 26, stored: 6, newEpochs: 1, newGaps: 2 })]);
      // Seqs at or below what is held are never a skip: a retransmit of an older range only carries duplicates.
      expect((await s.commitGroup(request([batch('gw-1', 3, 4)], st.stage))).outcomes).toEqual([accepted({ ackSeq: 4, duplicates: 2 })]);
    });

    test('an epoch that contradicts a stored one, or itself within the batch, is refused and nothing of the batch kept', async () => {
      const st = stager();
      await s.commitGroup(request([batch('gw-1', 1, 10, { epochs: [{ epoch: 1, firstSeq: 1, lastSeq: 10 }] })], st.stage));
      const bad = batch('gw-1', 11, 20, { epochs: [{ epoch: 1, firstSeq: 1, lastSeq: 12 }, { epoch: 2, firstSeq: 13, lastSeq: 20 }], gaps: [gap(1, 21, 22)], lastSeq: 22 });
      const twice = batch('gw-1', 11, 20, { epochs: [{ epoch: 2, firstSeq: 11, lastSeq: 20 }, { epoch: 2, firstSeq: 11, lastSeq: 19 }] });
      const plan = await s.commitGroup(request([bad, twice], st.stage));
      expect(plan.outcomes.map((o) => o.refused?.code)).toEqual(['BRAID_ERR_INGEST_EPOCH_CONFLICT', 'BRAID_ERR_INGEST_EPOCH_CONFLICT']);
      expect(plan.outcomes[0].refused!.message).toMatch(/epoch 1 of gateway gw-1 is stored as seqs 1\.\.10, this batch says 1\.\.12/);
      expect(plan.outcomes[1].refused!.message).toMatch(/epoch 2 of gateway gw-1 appears twice/);
      expect(plan.outcomes.map((o) => o.stored)).toEqual([0, 0]);
      expect(plan.lines).toEqual([]);
      expect(await received()).toEqual([{ gateway: 'gw-1', from_seq: 1, to_seq: 10 }]);
      expect(await epochs()).toEqual([{ gateway: 'gw-1', epoch: 1, first_seq: 1, last_seq: 10 }]);
      expect(await gaps()).toEqual([]);
      // The same epoch resent as stored is no conflict.
      const good = batch('gw-1', 11, 20, { epochs: [{ epoch: 1, firstSeq: 1, lastSeq: 10 }, { epoch: 2, firstSeq: 11, lastSeq: 20 }] });
      expect((await s.commitGroup(request([good], st.stage))).outcomes).toEqual([accepted({ ackSeq: 20, stored: 10, newEpochs: 1 })]);
    });

    test('within one group, a batch\'s epochs count as stored for the batches after it: the same span is no new epoch, another span a conflict', async () => {
      const st = stager();
      const first = batch('gw-1', 1, 10, { epochs: [{ epoch: 1, firstSeq: 1, lastSeq: 10 }] });
      const same = batch('gw-1', 11, 20, { epochs: [{ epoch: 1, firstSeq: 1, lastSeq: 10 }, { epoch: 2, firstSeq: 11, lastSeq: 20 }] });
      const other = batch('gw-1', 21, 30, { epochs: [{ epoch: 2, firstSeq: 11, lastSeq: 21 }] });
      const gw2 = batch('gw-2', 1, 5, { epochs: [{ epoch: 1, firstSeq: 1, lastSeq: 5 }] });
      const plan = await s.commitGroup(request([first, same, other, gw2], st.stage));
      expect(plan.outcomes.map((o) => [o.stored, o.newEpochs, o.refused?.code ?? null])).toEqual([
        [10, 1, null], [10, 1, null], [0, 0, 'BRAID_ERR_INGEST_EPOCH_CONFLICT'], [5, 1, null],
      ]);
      expect(plan.outcomes[2].refused!.message).toMatch(/epoch 2 of gateway gw-1 is stored as seqs 11\.\.20, this batch says 11\.\.21/);
      expect(await epochs()).toEqual([
        { gateway: 'gw-1', epoch: 1, first_seq: 1, last_seq: 10 }, { gateway: 'gw-1', epoch: 2, first_seq: 11, last_seq: 20 },
        { gateway: 'gw-2', epoch: 1, first_seq: 1, last_seq: 5 },
      ]);
    });

    test('gap records are kept once, account for their seqs, and cloud_lost ones count their seqs', async () => {
      const st = stager();
      const b = batch('gw-1', 1, 5, { gaps: [gap(1, 6, 10)], lastSeq: 10 });
      expect((await s.commitGroup(request([b], st.stage))).outcomes).toEqual([accepted({ ackSeq: 10, stored: 5, newGaps: 1 })]);
      expect((await s.commitGroup(request([b], st.stage))).outcomes).toEqual([accepted({ ackSeq: 10, duplicates: 5 })]);
      // The next batch starts after the gap: no skip.
      expect((await s.commitGroup(request([batch('gw-1', 11, 12)], st.stage))).outcomes).toEqual([accepted({ ackSeq: 12, stored: 2 })]);
      // A gap-only batch (no readings) naming seqs the cloud lost.
      const lost = batch('gw-1', 15, 14, { readings: [], gaps: [gap(2, 13, 14, 'cloud_lost')] });
      expect((await s.commitGroup(request([lost], st.stage))).outcomes).toEqual([accepted({ ackSeq: 14, newGaps: 1, newLostReadings: 2 })]);
      expect((await s.commitGroup(request([lost], st.stage))).outcomes).toEqual([accepted({ ackSeq: 14 })]);
      expect(await gaps()).toEqual([
        { gateway: 'gw-1', id: 1, reason: 'disk_budget', from_seq: 6, to_seq: 10, count: 5, min_ts: T - 7_200_000, max_ts: T - 7_100_000 },
        { gateway: 'gw-1', id: 2, reason: 'cloud_lost', from_seq: 13, to_seq: 14, count: 2, min_ts: -1, max_ts: -1 },
      ]);
      expect(await received()).toEqual([{ gateway: 'gw-1', from_seq: 1, to_seq: 5 }, { gateway: 'gw-1', from_seq: 11, to_seq: 12 }]);
      expect((await s.commitGroup(request([batch('gw-1', 15, 16)], st.stage))).outcomes).toEqual([accepted({ ackSeq: 16, stored: 2 })]);
    });

    test('future readings and the clock offsets of the group\'s gateways are recorded with it', async () => {
      const st = stager();
      const ahead = batch('gw-1', 1, 4, { readings: readings(1, 4, 1, (seq) => (seq <= 2 ? T : T + 60_000 * seq)) });
      const plan = await s.commitGroup(request([ahead, batch('gw-2', 1, 1)], st.stage, {
        maxFutureMs: 120_000, clockOffset: (g, now) => (g === 'gw-1' && now === T ? 1234.4 : null),
      }));
      expect(plan.outcomes[0]).toEqual({ ...accepted({ ackSeq: 4, stored: 4 }), future: { count: 2, device: 'd1', metric: 'temp', ts: T + 240_000 } });
      expect(plan.outcomes[1].future).toBeNull();
      expect(await h.rows('SELECT gateway, offset_ms, offset_at, future_readings, future_device, future_metric, future_ts, future_at FROM gateway_clock ORDER BY gateway')).toEqual([
        { gateway: 'gw-1', offset_ms: 1234, offset_at: T, future_readings: 2, future_device: 'd1', future_metric: 'temp', future_ts: T + 240_000, future_at: T },
      ]);
      // A repeat is no new future reading.
      await s.commitGroup(request([ahead], st.stage, { maxFutureMs: 120_000 }));
      expect((await h.rows('SELECT future_readings FROM gateway_clock'))).toEqual([{ future_readings: 2 }]);
    });

    test('a group whose staging throws leaves nothing: its resend is decided afresh [INV-1]', async () => {
      const b = batch('gw-1', 1, 10, { epochs: [{ epoch: 1, firstSeq: 1, lastSeq: 10 }], gaps: [gap(1, 11, 12)], lastSeq: 12 });
      await expect(s.commitGroup(request([b], stager('seg-x', { fail: true }).stage))).rejects.toThrow(/disk full/);
      expect(await received()).toEqual([]);
      expect(await staged()).toEqual([]);
      expect(await epochs()).toEqual([]);
      expect(await gaps()).toEqual([]);
      const st = stager();
      expect((await s.commitGroup(request([b], st.stage))).outcomes).toEqual([accepted({ ackSeq: 12, stored: 10, newEpochs: 1, newGaps: 1 })]);
      expect(st.seqs()).toEqual(seqList(1, 10));
    });

    test('sealBegin: vouched seqs count, unvouched ones are adopted only if nobody holds them, lost ones are reported; repeated, the same answer', async () => {
      await s.commitGroup(request([batch('gw-1', 1, 10), batch('gw-3', 1, 2)], stager('seg-1').stage));
      await s.commitGroup(request([batch('gw-2', 20, 25, { firstSeq: 1, lastSeq: 25, gaps: [gap(1, 1, 19)] })], stager('seg-2').stage));
      // seg-1's file: gw-1 1..8 (9..10 lost), 11..12 from a commit that failed (nobody holds them);
      // gw-2 20..22, which seg-2 vouches for; gw-3's line is missing altogether.
      const inFile = new Map([['gw-1', [{ from: 1, to: 8 }, { from: 11, to: 12 }]], ['gw-2', [{ from: 20, to: 22 }]]]);
      const first = await s.sealBegin('seg-1', inFile);
      expect(first.valid).toEqual(new Map([['gw-1', [{ from: 1, to: 8 }, { from: 11, to: 12 }]], ['gw-2', []]]));
      expect(first.adopted).toBe(2);
      expect([...first.lost].sort((a, b) => a.gateway.localeCompare(b.gateway))).toEqual([
        { gateway: 'gw-1', lost: [{ from: 9, to: 10 }] }, { gateway: 'gw-3', lost: [{ from: 1, to: 2 }] },
      ]);
      expect(await received()).toEqual([
        { gateway: 'gw-1', from_seq: 1, to_seq: 12 }, { gateway: 'gw-2', from_seq: 20, to_seq: 25 }, { gateway: 'gw-3', from_seq: 1, to_seq: 2 },
      ]);
      expect(await staged()).toEqual([
        { segment: 'seg-1', gateway: 'gw-1', from_seq: 1, to_seq: 12 }, { segment: 'seg-1', gateway: 'gw-3', from_seq: 1, to_seq: 2 },
        { segment: 'seg-2', gateway: 'gw-2', from_seq: 20, to_seq: 25 },
      ]);
      const again = await s.sealBegin('seg-1', inFile);
      expect(again.valid).toEqual(first.valid);
      expect(again.adopted).toBe(0);
      // Another store (a node sealing after a crash) decides the same.
      const other = await (await h.another()).sealBegin('seg-1', inFile);
      expect(other.valid).toEqual(first.valid);
      expect(other.adopted).toBe(0);
    });

    test('many gateways\' ranges recorded at once keep every set merged: a range joining two rows, one spanning several, one apart, one growing at its end, a new gateway', async () => {
      const sealed = () => h.rows('SELECT gateway, from_seq, to_seq FROM sealed ORDER BY gateway, from_seq');
      const valid = (m: Record<string, Array<[number, number]>>) => new Map(Object.entries(m).map(([g, rs]) => [g, rs.map(([from, to]) => ({ from, to }))]));
      const rows = (g: string, rs: Array<[number, number]>) => rs.map(([from_seq, to_seq]) => ({ gateway: g, from_seq, to_seq }));
      await s.sealCommit('seg-a', [], valid({ 'gw-1': [[1, 10], [21, 30], [41, 50]], 'gw-2': [[1, 5], [8, 9], [12, 13], [20, 30]], 'gw-3': [[1, 100]] }), T);
      expect(await sealed()).toEqual([...rows('gw-1', [[1, 10], [21, 30], [41, 50]]), ...rows('gw-2', [[1, 5], [8, 9], [12, 13], [20, 30]]), ...rows('gw-3', [[1, 100]])]);
      await s.sealCommit('seg-b', [], valid({ 'gw-1': [[11, 20], [60, 70]], 'gw-2': [[4, 25]], 'gw-3': [[101, 200]], 'gw-4': [[7, 9]] }), T);
      expect(await sealed()).toEqual([
        ...rows('gw-1', [[1, 30], [41, 50], [60, 70]]), ...rows('gw-2', [[1, 30]]), ...rows('gw-3', [[1, 200]]), ...rows('gw-4', [[7, 9]]),
      ]);
      // received and staged the same way, in one group of three gateways (a hole filled, a set grown, a new one).
      const st = stager('seg-1');
      await s.commitGroup(request([batch('gw-1', 1, 10), batch('gw-2', 1, 5)], st.stage));
      await s.commitGroup(request([batch('gw-1', 21, 30, { gaps: [gap(1, 11, 20)] }), batch('gw-2', 6, 9)], st.stage));
      await s.commitGroup(request([batch('gw-1', 11, 20), batch('gw-2', 10, 12), batch('gw-3', 1, 4)], st.stage));
      const want = [...rows('gw-1', [[1, 30]]), ...rows('gw-2', [[1, 12]]), ...rows('gw-3', [[1, 4]])];
      expect(await received()).toEqual(want);
      expect(await staged()).toEqual(want.map((r) => ({ segment: 'seg-1', ...r })));
    });

    test('sealCommit: catalog, sealed merged across segments, staged rows out; committed twice, the same catalog', async () => {
      await s.commitGroup(request([batch('gw-1', 1, 10)], stager('seg-1').stage));
      await s.commitGroup(request([batch('gw-1', 11, 20)], stager('seg-2').stage));
      const b1 = await s.sealBegin('seg-1', new Map([['gw-1', [{ from: 1, to: 10 }]]]));
      const files = [entry('seg-1', 'gw-1', 1, 10)];
      await s.sealCommit('seg-1', files, b1.valid, T);
      const catalog = async () => ({
        files: await h.rows('SELECT path, day, rows, bytes, created_at FROM files ORDER BY path'),
        gateways: await h.rows('SELECT path, gateway, min_seq, max_seq, min_epoch, max_epoch, rows FROM file_gateways ORDER BY path, gateway'),
        sealed: await h.rows('SELECT gateway, from_seq, to_seq FROM sealed ORDER BY gateway, from_seq'),
        staged: await staged(),
      });
      const once = await catalog();
      expect(once).toEqual({
        files: [{ path: `master/day=${DAY}/part-seg-1.parquet`, day: DAY, rows: 10, bytes: 4096, created_at: T }],
        gateways: [{ path: `master/day=${DAY}/part-seg-1.parquet`, gateway: 'gw-1', min_seq: 1, max_seq: 10, min_epoch: 1, max_epoch: 1, rows: 10 }],
        sealed: [{ gateway: 'gw-1', from_seq: 1, to_seq: 10 }],
        staged: [{ segment: 'seg-2', gateway: 'gw-1', from_seq: 11, to_seq: 20 }],
      });
      // A sealer that crashed after step 4 and runs again (on this store or another): nothing changes.
      await s.sealCommit('seg-1', files, b1.valid, T + 5000);
      await (await h.another()).sealCommit('seg-1', files, b1.valid, T + 6000);
      expect(await catalog()).toEqual(once);
      // The next segment's seqs join the sealed range.
      const b2 = await s.sealBegin('seg-2', new Map([['gw-1', [{ from: 11, to: 20 }]]]));
      await s.sealCommit('seg-2', [entry('seg-2', 'gw-1', 11, 20)], b2.valid, T + 60_000);
      const twice = await catalog();
      expect(twice.sealed).toEqual([{ gateway: 'gw-1', from_seq: 1, to_seq: 20 }]);
      expect(twice.staged).toEqual([]);
      expect(twice.files.map((f) => f.path)).toEqual([`master/day=${DAY}/part-seg-1.parquet`, `master/day=${DAY}/part-seg-2.parquet`]);
    });
  });
}
