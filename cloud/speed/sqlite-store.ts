/**
 * The SpeedStore and RegistryStore (cloud/store/speed.ts) on cloud.db: today's SQL (store.ts,
 * registry-store.ts, the clock row of cloud/ingest/clock.ts). Writes go through the cloud's one
 * WriteQueue (a push group is one BEGIN IMMEDIATE transaction among ingest's), reads use `reader`.
 */
import type { Db, WriteQueue } from '../../shared/sqlite.js';
import { type GatewayClockRow, gatewayClockRows, recordClockOffset } from '../ingest/clock.js';
import type {
  DevicePage, MetricName, DeviceRow, DeviceSearch, GapRecords, GatewayStatusRow, RegistryStore, SeqGapEntry, SpeedPartialRow, SpeedPartialsQuery, SpeedPushEntry, SpeedPushResult, SpeedStore,
} from '../store/speed.js';
import {
  gapRecords, gatewayIds, gatewayStatuses, listDevices, metricNames, receivedSeqs, searchDevices, recordContact, registeredLastContact, seqGaps,
} from './registry-store.js';
import { gatewayLastContact, prunePartials, prunedEpoch, readSpeedPartials, upsertPartials } from './store.js';

export class SqliteSpeedStore implements SpeedStore, RegistryStore {
  readonly kind = 'sqlite' as const;
  private readonly writes: WriteQueue;
  private readonly reader: Db;

  constructor(writes: WriteQueue, reader: Db) {
    this.writes = writes;
    this.reader = reader;
  }

  storePushes(entries: SpeedPushEntry[], now: number): Promise<SpeedPushResult[]> {
    return this.writes.tx(async (db) => {
      const out: SpeedPushResult[] = [];
      for (const { push, clockOffsetMs } of entries) {
        out.push(await upsertPartials(db, push.gateway, push.partials, now));
        await recordContact(db, push, now);
        if (clockOffsetMs !== null) await recordClockOffset(db, push.gateway, clockOffsetMs, now);
      }
      return out;
    });
  }

  prune(watermark: Record<string, number>, chunkRows: number): Promise<number> {
    return prunePartials(this.writes, watermark, chunkRows);
  }

  prunedEpoch(gateway: string): Promise<number> {
    return prunedEpoch(this.reader, gateway);
  }

  readPartials(q: SpeedPartialsQuery): Promise<SpeedPartialRow[]> {
    return readSpeedPartials(this.reader, q);
  }

  lastContact(): Promise<Record<string, number>> {
    return gatewayLastContact(this.reader);
  }

  gatewayIds(): Promise<string[]> { return gatewayIds(this.reader); }
  gatewayStatuses(): Promise<Map<string, GatewayStatusRow>> { return gatewayStatuses(this.reader); }
  registeredLastContact(): Promise<Map<string, number>> { return registeredLastContact(this.reader); }
  receivedSeqs(): Promise<Map<string, number>> { return receivedSeqs(this.reader); }
  gapRecords(): Promise<GapRecords> { return gapRecords(this.reader); }
  seqGaps(): Promise<Map<string, SeqGapEntry[]>> { return seqGaps(this.reader); }
  clockRows(): Promise<Map<string, GatewayClockRow>> { return gatewayClockRows(this.reader); }
  listDevices(gateway?: string): Promise<DeviceRow[]> { return listDevices(this.reader, gateway); }
  searchDevices(q: DeviceSearch): Promise<DevicePage> { return searchDevices(this.reader, q); }
  metricNames(): Promise<MetricName[]> { return metricNames(this.reader); }
}
