/**
 * A master dataset written directly, the way ingest's seal leaves it (docs/cloud-storage.md): zstd
 * Parquet files `master/day=D/part-<segment>.parquet` built with cloud/ingest/parquet.ts
 * (DayColumns, the same encoder the sealer runs in its worker), and the cloud.db rows the batch
 * reads, written with cloud/store/ingest-state.ts (the sealer's own insertFiles/addRangesAll and
 * ingest's insertEpochs): `files`, `file_gateways`, `sealed`, `epochs`. Minutes instead of hours of
 * ingest for ten million readings.
 *
 * The fleet: `devices` x `metrics.length` series, one reading per series every `intervalMs` of event
 * time, the series' phases spread evenly over the interval; device d belongs to gateway d % gateways;
 * a share `dupShare` of readings is delivered a second time by the next gateway (a device heard by
 * two gateways), with that gateway's seq. Readings arrive in event-time order: each gateway's seq is
 * contiguous from 1, its epochs are the minutes of arrival (numbered 1, 2, ... over the minutes that
 * hold readings, all closed), and every `segmentMs` of arrival is one sealed segment, one file per
 * UTC day it touches. `append` continues the same stream (seqs, epochs) from where it stopped.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DayColumns, ParquetEncoder, dayString } from '../../cloud/ingest/parquet.js';
import { openCloudDb } from '../../cloud/store/schema.js';
import { addRangesAll, insertEpochs, insertFiles, type CatalogEntry } from '../../cloud/store/ingest-state.js';
import { DAY_MS } from '../../shared/time.js';

export interface FleetShape {
  devices: number;
  metrics: string[];
  intervalMs: number;
  gateways: number;
  /** Share of readings delivered again by a second gateway. */
  dupShare: number;
  /** One sealed segment per this much arrival time. */
  segmentMs: number;
  /** Event time of the first reading (epoch ms). */
  startMs: number;
}

/** Where the stream stands: next step, per gateway its last seq and epoch (and the epoch's minute). */
export interface StreamState {
  step: number;
  seq: number[];
  epoch: number[];
  epochMinute: number[];
  epochFirst: number[];
  segments: number;
}

export interface WriteReport {
  readings: number;
  /** Master rows written (readings plus duplicates). */
  rows: number;
  files: number;
  bytes: number;
  days: string[];
  epochs: number;
  ms: number;
}

export function newStream(shape: FleetShape): StreamState {
  const g = shape.gateways;
  return { step: 0, seq: new Array(g).fill(0), epoch: new Array(g).fill(0), epochMinute: new Array(g).fill(-1), epochFirst: new Array(g).fill(1), segments: 0 };
}

/** A cheap deterministic hash in [0, 1) of three integers (which readings are duplicated, values). */
function hash01(a: number, b: number, c: number): number {
  let h = Math.imul(a ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(b + 0x7f4a7c15, 0xc2b2ae35) ^ Math.imul(c + 0x165667b1, 0x27d4eb2f);
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d);
  h ^= h >>> 12;
  return (h >>> 0) / 4294967296;
}

/**
 * Write `steps` more steps of the fleet (each step: one reading of every series) into `dataDir`,
 * continuing `state`. Every epoch that ends inside the written span is closed and recorded; the
 * last one of each gateway too (as a gateway closes its epoch when idle).
 */
export async function writeMaster(dataDir: string, shape: FleetShape, state: StreamState, steps: number, segmentPrefix = 'bench'): Promise<WriteReport> {
  const t0 = performance.now();
  const S = shape.devices * shape.metrics.length;
  const deviceNames = Array.from({ length: shape.devices }, (_, d) => `dev-${String(d).padStart(5, '0')}`);
  const gatewayNames = Array.from({ length: shape.gateways }, (_, g) => `gw-${String(g).padStart(2, '0')}`);
  const encoder = new ParquetEncoder();
  const db = await openCloudDb(join(dataDir, 'cloud.db'));
  await mkdir(join(dataDir, 'master'), { recursive: true });
  const epochs: Array<Array<{ epoch: number; firstSeq: number; lastSeq: number }>> = gatewayNames.map(() => []);
  const catalog: CatalogEntry[] = [];
  const days = new Set<string>();
  const inflight: Array<Promise<void>> = [];
  let rows = 0;
  let readings = 0;
  let bytes = 0;

  let segDays = new Map<number, DayColumns>();
  let segIndex = -1;
  const flushSegment = async () => {
    if (segDays.size === 0) return;
    const id = `${segmentPrefix}-${String(state.segments++).padStart(6, '0')}`;
    for (const c of segDays.values()) {
      const day = dayString(c.day);
      days.add(day);
      const rel = `master/day=${day}/part-${id}.parquet`;
      const entry: CatalogEntry = { path: rel, day, rows: c.length, bytes: 0, gateways: c.gatewayStats() };
      catalog.push(entry);
      inflight.push(encoder.encode(c.table()).then(async (buf) => {
        await mkdir(join(dataDir, 'master', `day=${day}`), { recursive: true });
        await writeFile(join(dataDir, rel), buf);
        entry.bytes = buf.length;
        bytes += buf.length;
      }));
    }
    segDays = new Map();
    // Bounded: at most a few segments encoding while the next is built.
    while (inflight.length > 4) await inflight.shift();
  };

  const emit = (g: number, device: string, metric: string, ts: number, value: number) => {
    const minute = Math.floor(ts / 60_000);
    if (state.epochMinute[g] !== minute) {
      if (state.epoch[g] > 0 && state.seq[g] >= state.epochFirst[g]) {
        epochs[g].push({ epoch: state.epoch[g], firstSeq: state.epochFirst[g], lastSeq: state.seq[g] });
      }
      state.epoch[g]++;
      state.epochMinute[g] = minute;
      state.epochFirst[g] = state.seq[g] + 1;
    }
    const seq = ++state.seq[g];
    const day = Math.floor(ts / DAY_MS);
    let c = segDays.get(day);
    if (!c) segDays.set(day, c = new DayColumns(day, 1 << 16));
    c.append(gatewayNames[g], seq, state.epoch[g], device, metric, ts, value);
    rows++;
  };

  const end = state.step + steps;
  for (let step = state.step; step < end; step++) {
    const base = shape.startMs + step * shape.intervalMs;
    for (let s = 0; s < S; s++) {
      const ts = base + Math.floor((s * shape.intervalMs) / S);
      const seg = Math.floor((ts - shape.startMs) / shape.segmentMs);
      if (seg !== segIndex) {
        await flushSegment();
        segIndex = seg;
      }
      const d = Math.floor(s / shape.metrics.length);
      const metric = shape.metrics[s % shape.metrics.length];
      const value = Math.round(hash01(d, s, step) * 10_000) / 100;
      const g = d % shape.gateways;
      emit(g, deviceNames[d], metric, ts, value);
      readings++;
      if (shape.dupShare > 0 && hash01(step, s, 7) < shape.dupShare) emit((g + 1) % shape.gateways, deviceNames[d], metric, ts, value);
    }
  }
  state.step = end;
  await flushSegment();
  await Promise.all(inflight);
  await encoder.close();
  // Close every gateway's open epoch: the stream stops here (a gateway closes an idle epoch).
  for (let g = 0; g < shape.gateways; g++) {
    if (state.epoch[g] > 0 && state.seq[g] >= state.epochFirst[g]) {
      epochs[g].push({ epoch: state.epoch[g], firstSeq: state.epochFirst[g], lastSeq: state.seq[g] });
      state.epochFirst[g] = state.seq[g] + 1;
      state.epochMinute[g] = -1; // the next reading opens a new epoch
    }
  }

  // One transaction, as the sealer's (files + file_gateways + sealed) and ingest's (epochs).
  let nEpochs = 0;
  await db.exec('BEGIN IMMEDIATE');
  try {
    const epochRows = async () => (await db.all<{ n: number }>('SELECT COUNT(*) AS n FROM epochs'))[0].n;
    nEpochs -= await epochRows();
    await insertFiles(db, catalog, Date.now());
    // Every gateway at once, as a seal (sealed) and a group commit (received, epochs) record them.
    const held = new Map(gatewayNames.map((name, g) => {
      const first = epochs[g][0]?.firstSeq;
      return [name, first !== undefined ? [{ from: first, to: state.seq[g] }] : []];
    }));
    await addRangesAll(db, 'sealed', held);
    await addRangesAll(db, 'received', held);
    await insertEpochs(db, new Map(gatewayNames.map((name, g) => [name, epochs[g]])));
    nEpochs += await epochRows();
    await db.exec('COMMIT');
  } catch (err) {
    await db.exec('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    await db.close();
  }
  return { readings, rows, files: catalog.length, bytes, days: [...days].sort(), epochs: nEpochs, ms: performance.now() - t0 };
}
