/**
 * Summarise a V8 .cpuprofile (node --cpu-prof): self and inclusive time per function, and self
 * time per module group (edge/, shared/, aedes, sqlite3, node internals, GC, idle).
 * Also runnable: `node --import tsx bench/lib/profile.ts FILE.cpuprofile [top]`.
 */
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';

interface CallFrame { functionName: string; url: string; lineNumber: number }
interface Node { id: number; callFrame: CallFrame; children?: number[] }
interface Profile { nodes: Node[]; samples: number[]; timeDeltas: number[]; startTime: number; endTime: number }

export interface FunctionTime { name: string; where: string; selfMs: number; totalMs: number }
export interface ProfileSummary { totalMs: number; busyMs: number; functions: FunctionTime[]; groups: Array<{ group: string; selfMs: number }> }

const root = fileURLToPath(new URL('../..', import.meta.url));

function where(cf: CallFrame): string {
  if (!cf.url) return '';
  let u = cf.url.startsWith('file://') ? fileURLToPath(cf.url) : cf.url;
  if (u.startsWith(root)) u = relative(root, u);
  // tsx hands V8 its output on one line: a line number there says nothing.
  return cf.lineNumber > 0 ? `${u}:${cf.lineNumber + 1}` : u;
}

function groupOf(cf: CallFrame): string {
  const n = cf.functionName;
  if (n === '(idle)' || n === '(program)' || n === '(garbage collector)') return n;
  const u = cf.url;
  if (!u) return '(native / V8 builtins)';
  if (u.startsWith('node:')) return 'node internals';
  const m = u.match(/node_modules\/((?:@[^/]+\/)?[^/]+)/);
  if (m) return m[1];
  const local = u.match(/\/(edge|shared|bin|cloud|bench)\//);
  return local ? `${local[1]}/` : 'other';
}

export function summarizeProfile(file: string): ProfileSummary {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map<number, Node>();
  const parent = new Map<number, number>();
  for (const n of p.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const keyOf = (n: Node) => `${n.callFrame.functionName || '(anonymous)'}\u0000${where(n.callFrame)}`;
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  const groups = new Map<string, number>();
  let totalUs = 0;
  let idleUs = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const dt = p.timeDeltas[i] ?? 0;
    const node = byId.get(p.samples[i]);
    if (!node) continue;
    totalUs += dt;
    const k = keyOf(node);
    self.set(k, (self.get(k) ?? 0) + dt);
    const g = groupOf(node.callFrame);
    groups.set(g, (groups.get(g) ?? 0) + dt);
    if (node.callFrame.functionName === '(idle)') { idleUs += dt; continue; }
    const seen = new Set<string>();
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const n = byId.get(id)!;
      const key = keyOf(n);
      if (seen.has(key)) continue;
      seen.add(key);
      total.set(key, (total.get(key) ?? 0) + dt);
    }
  }
  const functions: FunctionTime[] = [...self.entries()].map(([k, us]) => {
    const [name, w] = k.split('\u0000');
    return { name, where: w, selfMs: us / 1000, totalMs: (total.get(k) ?? us) / 1000 };
  });
  // Inclusive-only entries (callers) too, so "who spends it" can be read off.
  for (const [k, us] of total) {
    if (self.has(k)) continue;
    const [name, w] = k.split('\u0000');
    functions.push({ name, where: w, selfMs: 0, totalMs: us / 1000 });
  }
  return {
    totalMs: totalUs / 1000,
    busyMs: (totalUs - idleUs) / 1000,
    functions,
    groups: [...groups.entries()].map(([group, us]) => ({ group, selfMs: us / 1000 })).sort((a, b) => b.selfMs - a.selfMs),
  };
}

/** Markdown: self time top N, inclusive time top N (project code and named functions), groups. */
export function profileMarkdown(title: string, s: ProfileSummary, top = 15): string {
  const pct = (x: number) => `${((100 * x) / s.busyMs).toFixed(1)}%`;
  const lines = [`#### ${title}`, '', `CPU busy ${(s.busyMs / 1000).toFixed(1)} s of ${(s.totalMs / 1000).toFixed(1)} s profiled.`, '',
    '| self time | % of busy | function | where |', '|---:|---:|---|---|'];
  for (const f of [...s.functions].filter((f) => f.name !== '(idle)').sort((a, b) => b.selfMs - a.selfMs).slice(0, top)) {
    lines.push(`| ${f.selfMs.toFixed(0)} ms | ${pct(f.selfMs)} | \`${f.name}\` | ${f.where} |`);
  }
  lines.push('', '| inclusive time | % of busy | function (project code) | where |', '|---:|---:|---|---|');
  const project = s.functions.filter((f) => /^(edge|shared|bin)\//.test(f.where)).sort((a, b) => b.totalMs - a.totalMs).slice(0, top);
  for (const f of project) lines.push(`| ${f.totalMs.toFixed(0)} ms | ${pct(f.totalMs)} | \`${f.name}\` | ${f.where} |`);
  lines.push('', '| self time by module | % of busy |', '|---|---:|');
  for (const g of s.groups.filter((g) => g.group !== '(idle)').slice(0, 12)) lines.push(`| ${g.group} | ${pct(g.selfMs)} |`);
  return lines.join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: node --import tsx bench/lib/profile.ts FILE.cpuprofile [top]\n');
    process.exit(2);
  }
  process.stdout.write(`${profileMarkdown(file, summarizeProfile(file), Number(process.argv[3] ?? 25))}\n`);
}
