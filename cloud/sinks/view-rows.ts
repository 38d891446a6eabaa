/**
 * Reads view files (docs/cloud-storage.md, Views) as plain rows, streamed in DuckDB chunks so a
 * large view never sits in memory whole. Timestamps come out as epoch ms, numbers as JS numbers.
 */
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';

/** One bucket of one view: the summary of shared/summary.ts, keyed by its tags. */
export interface ViewRow {
  /** `device` or `gateway` (absent for fleet views) and `metric`. */
  tags: Record<string, string>;
  /** Bucket start, epoch ms UTC. */
  bucket: number;
  count: number;
  sum: number;
  min: number;
  max: number;
  m2: number;
  first: number | null;
  firstTs: number | null;
  last: number | null;
  lastTs: number | null;
  /** The devices of first and last, in views whose rows mix devices (gateway_*, fleet_*); absent elsewhere. */
  firstDevice?: string | null;
  lastDevice?: string | null;
}

/** The key column of a view file: device, gateway, or none (fleet). */
const KEY_COLUMNS = ['device', 'gateway'] as const;

function sqlString(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

const num = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
const str = (v: unknown): string => (v === null || v === undefined ? '' : String(v));
const nullableStr = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));

/** A DuckDB connection for one sink write; `close()` frees the instance. */
export async function openViewReader(): Promise<{ rows: (file: string) => AsyncGenerator<ViewRow[]>; close: () => void }> {
  const instance = await DuckDBInstance.create(':memory:');
  const conn = await instance.connect();
  return {
    rows: (file) => readViewRows(conn, file),
    close: () => {
      conn.closeSync();
      instance.closeSync();
    },
  };
}

async function* readViewRows(conn: DuckDBConnection, file: string): AsyncGenerator<ViewRow[]> {
  const source = `read_parquet(${sqlString(file)})`;
  const described = await conn.runAndReadAll(`DESCRIBE SELECT * FROM ${source}`);
  const columns = new Set(described.getRowObjects().map((r) => String(r.column_name)));
  const key = KEY_COLUMNS.find((c) => columns.has(c));
  const ms = (c: string) => `CAST(epoch_ms(${c}) AS DOUBLE) AS ${c}`;
  const devices = columns.has('first_device') && columns.has('last_device');
  const sql = `SELECT ${key ? `CAST(${key} AS VARCHAR) AS key, ` : ''}CAST(metric AS VARCHAR) AS metric, ${ms('bucket')},
    CAST(count AS DOUBLE) AS count, CAST(sum AS DOUBLE) AS sum, CAST(min AS DOUBLE) AS min, CAST(max AS DOUBLE) AS max,
    CAST(m2 AS DOUBLE) AS m2, CAST(first AS DOUBLE) AS first, ${ms('first_ts')}, CAST(last AS DOUBLE) AS last, ${ms('last_ts')}${devices ? ', first_device, last_device' : ''}
    FROM ${source}`;
  const result = await conn.stream(sql);
  for await (const chunk of result.yieldRowObjects()) {
    yield chunk.map((r) => ({
      tags: key ? { [key]: str(r.key), metric: str(r.metric) } : { metric: str(r.metric) },
      bucket: Number(r.bucket),
      count: Number(r.count),
      sum: Number(r.sum),
      min: Number(r.min),
      max: Number(r.max),
      m2: Number(r.m2),
      first: num(r.first),
      firstTs: num(r.first_ts),
      last: num(r.last),
      lastTs: num(r.last_ts),
      ...(devices ? { firstDevice: nullableStr(r.first_device), lastDevice: nullableStr(r.last_device) } : {}),
    }));
  }
}
