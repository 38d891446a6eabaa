/** The forwarder, the gateway side of docs/ingest-protocol.md. The only door into edge/forwarder/. */
export { Forwarder } from './forwarder.js';
export { DEFAULT_FORWARDER_OPTIONS, type ForwarderOptions } from './options.js';
export type { AckInfo, CloseReport, ForwarderDeps, ForwarderError, ForwarderStatus } from './types.js';
export { IngestResponseInvalidError, IngestTimeoutError, IngestUnreachableError } from './errors.js';
