/**
 * The batch views as the InfluxDB sink wrote them (cloud/sinks/influx/): measurement = view, tags
 * device|gateway and metric, time = bucket, fields count, sum, min, max, m2, first, first_ts, last,
 * last_ts (and first_device, last_device in gateway and fleet views), read back with InfluxQL over
 * the 1.x `/query` endpoint (InfluxDB 1.x; 1.8+ and 2.x serve it too, 2.x with a DBRP mapping).
 * The summary is rebuilt from those fields; mean and stddev are derived ones and not read.
 *
 * InfluxDB holds one version of the views at a time, and only after the sink has written it: the
 * reader `holds(manifest)` only when the sink's state in cloud.db says it has taken that manifest's
 * version with no day left pending. The query reads Parquet otherwise.
 */
import type { Manifest } from '../../batch/index.js';
import { HttpError } from '../../../shared/errors.js';
import { keyOf, type SummaryRow, type ViewReader, type ViewReadRequest } from './types.js';

export interface InfluxViewReaderOptions {
  /** Base URL (influx.url); may carry a path prefix. */
  url: string;
  database: string;
  username: string | null;
  password: string | null;
  /** InfluxDB 1.8+/2.x token (`Authorization: Token ...`); wins over username/password. */
  token: string | null;
  /** Time one query may take, in ms. */
  timeoutMs: number;
  /** Rows per chunk of a chunked answer (InfluxDB's max-row-limit may cut an unchunked one). */
  chunkSize: number;
  /**
   * The InfluxDB sink's state (cloud.db meta `batch.sink.influx`): the version it has taken and the
   * days a failed write left.
   */
  sinkState: () => Promise<{ version: number; pending: string[] } | null>;
}

export const DEFAULT_INFLUX_VIEW_READER_TUNING = { timeoutMs: 30_000, chunkSize: 10_000 };

const NUMERIC_FIELDS = ['count', 'sum', 'min', 'max', 'm2', 'first', 'first_ts', 'last', 'last_ts'] as const;
const DEVICE_FIELDS = ['first_device', 'last_device'] as const;

/** An InfluxQL identifier. */
function ident(name: string): string {
  return `"${name.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

interface Series { name: string; columns: string[]; values: unknown[][] }
interface QueryAnswer { results?: Array<{ statement_id?: number; error?: string; series?: Series[]; partial?: boolean }>; error?: string }

export class InfluxViewReader implements ViewReader {
  readonly name = 'influx';
  private readonly headers: Record<string, string> = { accept: 'application/json' };
  private readonly abort = new AbortController();
  /** The last manifest version the sink was seen to hold: it holds it until the next one is live. */
  private heldVersion = -1;

  constructor(private readonly o: InfluxViewReaderOptions) {
    if (o.token) this.headers.authorization = `Token ${o.token}`;
    else if (o.username !== null) this.headers.authorization = `Basic ${Buffer.from(`${o.username}:${o.password ?? ''}`).toString('base64')}`;
  }

  async holds(manifest: Manifest): Promise<boolean> {
    if (manifest.version === this.heldVersion) return true;
    const s = await this.o.sinkState();
    const held = s !== null && s.version === manifest.version && s.pending.length === 0;
    if (held) this.heldVersion = manifest.version;
    return held;
  }

  async read(req: ViewReadRequest): Promise<SummaryRow[]> {
    const key = keyOf(req);
    const devices = key?.column !== 'device';
    const fields = [...NUMERIC_FIELDS, ...(devices ? DEVICE_FIELDS : [])].map(ident).join(', ');
    // Tag values go in as bound parameters ($metric, $key): no escaping of user input into InfluxQL.
    // The times are integers of ours.
    const where = [`"metric" = $metric`, ...(key ? [`${ident(key.column)} = $key`] : []),
      `time >= ${Math.trunc(req.fromMs)}ms`, `time < ${Math.trunc(req.toMs)}ms`].join(' AND ');
    const q = `SELECT ${fields} FROM ${ident(req.view)} WHERE ${where}`;
    const params: Record<string, string> = { metric: req.metric };
    if (key) params.key = key.value;
    const out: SummaryRow[] = [];
    for (const series of await this.query(q, params)) {
      const col = new Map(series.columns.map((c, i) => [c, i]));
      const at = (row: unknown[], c: string): unknown => row[col.get(c) ?? -1];
      for (const row of series.values) {
        const n = (c: string) => Number(at(row, c));
        const device = (c: string) => (key?.column === 'device' ? key.value : ((at(row, c) as string | null | undefined) ?? ''));
        out.push({
          bucket: n('time'), count: n('count'), sum: n('sum'), min: n('min'), max: n('max'), m2: n('m2'),
          first: n('first'), firstTs: n('first_ts'), firstDevice: device('first_device'),
          last: n('last'), lastTs: n('last_ts'), lastDevice: device('last_device'),
        });
      }
    }
    out.sort((a, b) => a.bucket - b.bucket);
    return out;
  }

  /** GET /query, chunked; the series of every chunk. */
  private async query(q: string, params: Record<string, string>): Promise<Series[]> {
    const url = new URL('query', this.o.url.endsWith('/') ? this.o.url : `${this.o.url}/`);
    url.search = new URLSearchParams({
      db: this.o.database, epoch: 'ms', q, params: JSON.stringify(params), chunked: 'true', chunk_size: String(this.o.chunkSize),
    }).toString();
    const res = await fetch(url, { headers: this.headers, signal: AbortSignal.any([this.abort.signal, AbortSignal.timeout(this.o.timeoutMs)]) });
    const text = await res.text();
    if (!res.ok) throw new HttpError(res.status, text);
    const series: Series[] = [];
    // A chunked answer is one JSON document per line; an unchunked one is a single document.
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      const doc = JSON.parse(line) as QueryAnswer;
      const err = doc.error ?? doc.results?.find((r) => r.error)?.error;
      if (err) throw new HttpError(400, `InfluxQL: ${err}`);
      for (const r of doc.results ?? []) series.push(...(r.series ?? []));
    }
    return series;
  }

  async close(): Promise<void> {
    this.abort.abort();
  }
}
