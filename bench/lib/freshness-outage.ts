/**
 * bench:freshness's outage scenario, its figures and its report: the cloud is killed (-9) for a
 * while under the steady fleet load, started again on its port and data dir, and a probe device
 * publishes at once and then every few hundred ms; what counts is the time from the cloud's
 * return (its "cloud ready" line) to the first new reading in the merged query, while the gateway
 * catches up on the outage's backlog (issue 9: within 5 s, for an outage of any length).
 */
import { int, ms, quantile } from './stats.js';

export const OUTAGE_TARGET_MS = 5000;

/** One outage and the return from it. */
export interface OutageRound {
  /** Seconds the cloud was down (killed to started again). */
  lengthS: number;
  repeat: number;
  /** Start of `braid cloud` to its ready line, ms (the cloud opening its data dir after a kill -9; not part of the outage's length). */
  restartMs: number;
  /** The forwarder's and the speed push's failures in a row at the return (the gateway's health). */
  ingestFailures: number;
  speedFailures: number;
  /** Readings in the outbox not acknowledged at the return. */
  backlog: number;
  /** The cloud's return to the first reading published after it visible in the merged query, ms (Infinity: never). */
  returnToVisibleMs: number;
  /** Publish to visible of every probe reading of the recovery window (the first one included), ms. */
  freshMs: number[];
  /** Probe readings of the window never seen. */
  unseen: number;
  /** Readings of the backlog not yet acknowledged by ingest when the first new reading showed (NaN: unknown). */
  pendingWhenVisible: number;
  /** The return to the first ingest acknowledgement seen (health sampled every 200 ms), ms. */
  ingestResumedMs: number;
  /** The return to every reading of the backlog acknowledged, ms (Infinity: not within the wait). */
  catchUpMs: number;
  /** 1-minute load average at the return. */
  load: number;
}

export interface OutageResult {
  rounds: OutageRound[];
  probeMs: number;
  recoveryS: number;
  devices: number;
  readingsPerSec: number;
  gatewayConfig: Record<string, unknown>;
  speedRetryMaxMs: number;
  ingestRetryMaxMs: number;
}

const never = (x: number) => (Number.isFinite(x) ? ms(x) : 'never');
const secs = (x: number) => (Number.isFinite(x) ? `${(x / 1000).toFixed(1)} s` : 'not within the wait');

function q(xs: number[]): { p50: number; p99: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  return { p50: quantile(s, 0.5), p99: quantile(s, 0.99), max: s.length ? s[s.length - 1] : NaN };
}

/** The markdown of the outage scenario: one row per outage length and one over all of them. */
export function outageReport(r: OutageResult): string {
  const L: string[] = [];
  const lengths = [...new Set(r.rounds.map((x) => x.lengthS))].sort((a, b) => a - b);
  // Config values as written in a config file: test/docs.test.ts checks a stated default against the schema's.
  L.push(`Outages, the same fleet load (${int(r.devices)} devices, ${int(r.readingsPerSec)} readings/s offered) throughout: the cloud killed with SIGKILL, ` +
    `started again after the outage on its port and data dir; from its \`cloud ready\` line a probe reading at once, then one every ${r.probeMs} ms on average for ${r.recoveryS} s, ` +
    `the merged query polled meanwhile. Gateway: shipped defaults (speed push retries capped at \`speed.retryMaxMs\` = ${r.speedRetryMaxMs} ms, ingest at \`cloud.retryMaxMs\` = ${r.ingestRetryMaxMs} ms). ` +
    `Outage lengths interleaved over ${Math.max(...r.rounds.map((x) => x.repeat))} repeats.`, '');
  L.push('| Outage | n | **return → first new reading visible, p50 / p99 / max** | publish → visible during the catch-up, p50 / p99 (readings) | ingest failures in a row at the return | backlog at the return (readings) | of it still unacknowledged when the reading showed | ingest resumed (return → first ack) | catch-up (return → backlog acknowledged) | cloud start → ready |');
  L.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  const row = (title: string, rs: OutageRound[]) => {
    const v = q(rs.map((x) => x.returnToVisibleMs));
    const f = q(rs.flatMap((x) => x.freshMs));
    const n = rs.reduce((s, x) => s + x.freshMs.length, 0);
    const unseen = rs.reduce((s, x) => s + x.unseen, 0);
    const met = v.max <= OUTAGE_TARGET_MS ? '(met)' : '(short)';
    const span = (xs: number[], fmt: (x: number) => string) => {
      const s = [...xs].sort((a, b) => a - b);
      return s.length === 1 || s[0] === s[s.length - 1] ? fmt(s[0]) : `${fmt(s[0])} – ${fmt(s[s.length - 1])}`;
    };
    L.push(`| ${title} | ${rs.length} | **${never(v.p50)} / ${never(v.p99)} / ${never(v.max)}** ${met} | ${never(f.p50)} / ${never(f.p99)} (${n}${unseen ? `, ${unseen} never seen` : ''}) | ` +
      `${span(rs.map((x) => x.ingestFailures), String)} | ${span(rs.map((x) => x.backlog), int)} | ${span(rs.map((x) => x.pendingWhenVisible), int)} | ` +
      `${span(rs.map((x) => x.ingestResumedMs), secs)} | ${span(rs.map((x) => x.catchUpMs), secs)} | ${span(rs.map((x) => x.restartMs), ms)} |`);
  };
  for (const l of lengths) row(`${l} s`, r.rounds.filter((x) => x.lengthS === l));
  if (lengths.length > 1) row('all', r.rounds);
  L.push('', `Target (issue 9): a new reading visible within ${int(OUTAGE_TARGET_MS)} ms of the cloud's return, from an outage of any length, while the backlog drains.`, '');
  L.push('<details><summary>Every outage</summary>', '');
  for (const x of r.rounds) {
    L.push(`- ${x.lengthS} s (repeat ${x.repeat}): return → visible ${never(x.returnToVisibleMs)}; readings of the window ${x.freshMs.length} seen, ${x.unseen} not; ` +
      `failures at the return: ingest ${x.ingestFailures}, speed push ${x.speedFailures}; backlog ${int(x.backlog)}, ${int(x.pendingWhenVisible)} unacknowledged when the reading showed; ` +
      `ingest resumed ${secs(x.ingestResumedMs)}, caught up ${secs(x.catchUpMs)}; cloud start → ready ${ms(x.restartMs)}; load ${x.load.toFixed(1)}`);
  }
  L.push('', '</details>', '');
  return L.join('\n');
}
