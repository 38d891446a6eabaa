/**
 * Busy stretches of a V8 .cpuprofile: runs of consecutive samples with no `(idle)` one, i.e. spans
 * in which the thread never waited for I/O. Under a paced load a healthy server is idle between
 * requests; a long stretch is a span where arriving requests queue behind whatever ran, and the
 * functions in it say what that was. Also runnable: `node --import tsx bench/lib/cloud-stretch.ts FILE [minMs]`.
 */
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';

interface CallFrame { functionName: string; url: string; lineNumber: number }
interface Node { id: number; callFrame: CallFrame; children?: number[] }
interface Profile { nodes: Node[]; samples: number[]; timeDeltas: number[]; startTime: number }

export interface Stretch {
  /** Since the profile's start, ms. */
  startMs: number;
  ms: number;
  /** Functions by self time in the stretch, ms. */
  self: Array<[string, number]>;
  /** Project functions (cloud/, shared/) by inclusive time in the stretch, ms. */
  project: Array<[string, number]>;
}

const root = fileURLToPath(new URL('../..', import.meta.url));

function label(cf: CallFrame): string {
  let u = cf.url.startsWith('file://') ? fileURLToPath(cf.url) : cf.url;
  if (u.startsWith(root)) u = relative(root, u);
  return `${cf.functionName || '(anonymous)'}${u ? ` (${u.replace(/^node_modules\//, '')})` : ''}`;
}

export function busyStretches(file: string, minMs = 50): { stretches: Stretch[]; totalMs: number; busyMs: number } {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map<number, Node>();
  const parent = new Map<number, number>();
  for (const n of p.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const out: Stretch[] = [];
  let t = 0;
  let busy = 0;
  let cur: { start: number; end: number; self: Map<string, number>; project: Map<string, number> } | null = null;
  const close = () => {
    if (cur && cur.end - cur.start >= minMs * 1000) {
      const top = (m: Map<string, number>) => [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, 4).map(([k, v]) => [k, v / 1000] as [string, number]);
      out.push({ startMs: cur.start / 1000, ms: (cur.end - cur.start) / 1000, self: top(cur.self), project: top(cur.project) });
    }
    cur = null;
  };
  for (let i = 0; i < p.samples.length; i++) {
    const dt = p.timeDeltas[i] ?? 0;
    t += dt;
    const node = byId.get(p.samples[i]);
    if (!node) continue;
    if (node.callFrame.functionName === '(idle)') { close(); continue; }
    busy += dt;
    cur ??= { start: t - dt, end: t, self: new Map(), project: new Map() };
    cur.end = t;
    const k = label(node.callFrame);
    cur.self.set(k, (cur.self.get(k) ?? 0) + dt);
    const seen = new Set<string>();
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const n = byId.get(id)!;
      if (!/\/(cloud|shared)\//.test(n.callFrame.url)) continue;
      const key = label(n.callFrame);
      if (seen.has(key)) continue;
      seen.add(key);
      cur.project.set(key, (cur.project.get(key) ?? 0) + dt);
    }
  }
  close();
  return { stretches: out, totalMs: t / 1000, busyMs: busy / 1000 };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const r = busyStretches(process.argv[2], Number(process.argv[3] ?? 50));
  process.stdout.write(`${r.stretches.length} busy stretches of ${process.argv[3] ?? 50} ms or more; busy ${r.busyMs.toFixed(0)} of ${r.totalMs.toFixed(0)} ms\n`);
  for (const s of r.stretches) {
    process.stdout.write(`at ${s.startMs.toFixed(0)} ms, ${s.ms.toFixed(0)} ms: ${s.self.map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', ')}\n   project: ${s.project.map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', ')}\n`);
  }
}
