/** Batch view readers (Parquet, InfluxDB) behind one interface: the door of cloud/query/views/. */
export { ParquetViewReader, DEFAULT_PARQUET_VIEW_READER_OPTIONS, type ParquetViewReaderOptions } from './parquet.js';
export { InfluxViewReader, DEFAULT_INFLUX_VIEW_READER_TUNING, type InfluxViewReaderOptions } from './influx.js';
export { VIEW_SPECS, keyOf, scopeViews, type SummaryRow, type ViewKey, type ViewReader, type ViewReadRequest, type ViewScope } from './types.js';
export { buildSeriesFile, SERIES_READ_INLINE_MS, SeriesFile, SeriesIds, SeriesLayoutError, type SeriesBuildResult } from './series.js';
