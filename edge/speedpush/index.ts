/** The speed pusher, the gateway side of the speed push (docs/serving.md). The only door into edge/speedpush/. */
export { PROBE_MAX_PARTIALS, SpeedPusher, SPEED_PATH, parseAnswer } from './pusher.js';
export { DEFAULT_SPEED_PUSH_OPTIONS, type SpeedPushOptions } from './options.js';
export { CURSOR_KEY, WATERMARK_KEY, type PartialTuple } from './page.js';
export type { SpeedPushAnswer, SpeedPushBody, SpeedPushError, SpeedPusherDeps, SpeedPushStatus } from './types.js';
export { SpeedPushResponseInvalidError, SpeedPushTimeoutError, SpeedPushUnreachableError } from './errors.js';
