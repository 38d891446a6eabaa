/** The device-fleet simulator (`braid simulate`, the demo, the benchmarks): its only door. */
export { Simulator } from './simulator.js';
export {
  DEFAULT_SIMULATOR_OPTIONS, SHAPES, checkProfile, resolveOptions,
  type DeviceProfile, type OfflineSchedule, type PayloadFormat, type SentMessage, type Shape, type SimDevice, type SimulatorOptions,
} from './options.js';
export { buildPayload, malformedPayload, signal } from './payload.js';
export { LatencyWindow, type SimulatorStats } from './stats.js';
