/**
 * V8 heap settings for `braid gateway`, an appliance with a memory budget (10,000 devices in 200 MB,
 * docs/benchmarks.md), set at run time: the process may have been started with no flag at all.
 */
import { PerformanceObserver } from 'node:perf_hooks';
import v8 from 'node:v8';
import { startedWith } from './heap.js';

/** V8's old generation may grow this many percent past the live size of the last full GC. */
export const HEAP_GROWING_PERCENT = 30;

/** The young generation's semi-space grows to at most this many MB (V8's default on 64 bits: 16). */
export const SEMI_SPACE_MAX_MB = 4;

/**
 * Let V8's old generation grow 30% past what the last full GC kept (V8's own factor for
 * memory-constrained devices), not its default of up to 4x on a machine with RAM to spare: after a
 * reconnect storm of 10,000 devices ~80 MB less RSS for the same live objects. V8 reads the flag
 * at every GC, so setting it now takes effect.
 *
 * And keep the young generation's semi-space at most SEMI_SPACE_MAX_MB: V8 grows it from 1 MB to
 * 16 MB when many young objects survive (a connect storm does), and after the storm 2 x 16 MB stay
 * committed, ~25 MB of RSS. `--max-semi-space-size=4` would do it but is read only when the process
 * starts, and cost a 10k connect storm 20-35% more CPU for no less RSS (docs/benchmarks.md,
 * 2026-12-06 session 9: deploy/braid-gateway.service no longer sets it); `--semi-space-growth-factor` is
 * read at each growth, so after every GC the factor is 1 (no growth) once the space has reached the
 * cap and 2 (V8's default) below it, as when V8 shrank it again at low allocation rates. GCs are
 * reported after the turn of the event loop they ran in, so two growths within one turn (several MB
 * of young objects surviving in one callback) may pass the cap once, until V8 shrinks the space.
 * At 4 MB a QoS 1 message costs no measurable CPU more than at 16 (2 cost ~10%, docs/benchmarks.md).
 */
export function configureGatewayHeap(): void {
  v8.setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
  if (startedWith('--max-semi-space-size')) return;
  // A semi-space's capacity is what the new space holds (used + available), a little under its
  // nominal size (page headers); V8 doubles it, so the line between the cap and half of it is at 3/4.
  // Not the new space's space_size: that is the memory committed, and V8 uncommits the idle
  // semi-space after a full GC, halving space_size while the capacity stands; read as room to grow,
  // it doubled the semi-space past the cap (gateway-heap.test.ts failed so in 1 of ~15 runs).
  const line = 0.75 * SEMI_SPACE_MAX_MB * 1024 * 1024;
  let growing = true;
  const check = () => {
    const space = v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');
    if (!space) return;
    const grow = space.space_used_size + space.space_available_size < line;
    if (grow === growing) return;
    growing = grow;
    v8.setFlagsFromString(`--semi-space-growth-factor=${grow ? 2 : 1}`);
  };
  new PerformanceObserver(check).observe({ entryTypes: ['gc'] });
  check();
}
