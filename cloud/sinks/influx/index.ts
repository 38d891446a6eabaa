/** The InfluxDB view sink: the only door of cloud/sinks/influx/. */
export { InfluxSink, createInfluxSink } from './sink.js';
export { DEFAULT_INFLUX_SINK_TUNING, INFLUX_SINK_NAME, type InfluxConfig, type InfluxSinkTuning } from './options.js';
export { chooseApi, parseVersion, type Detected, type InfluxApi } from './detect.js';
export {
  POINT_FIELDS, INTEGER_FIELDS, STRING_FIELDS, escapeMeasurement, escapeTag, pointFields, quoteStringField, tagProblem, toLine,
  type LineOptions, type PointField, type SkipReason,
} from './line-protocol.js';
export { SinkFailedError } from '../errors.js';
