/** The speed store's own refusals (the shared ones, 400/401/403/413/429, come from shared/errors.ts). */
import { BraidError } from '../../shared/errors.js';

/** The push could not be committed (cloud.db busy or failing): nothing was stored, the gateway sends it again. */
export class SpeedUnavailableError extends BraidError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('BRAID_ERR_SPEED_UNAVAILABLE', message, 503, options);
  }
  override canRetry(): boolean { return true; }
}
