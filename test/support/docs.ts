/**
 * Test support for the documentation checks: what a Markdown page links to, its headings' anchors,
 * the SQL examples it tags for a test, and the metric names it mentions or a /metrics page serves.
 *
 * Hand-written rather than a Markdown parser: our pages use inline links, fenced blocks and ATX
 * headings only, and these few rules (skip fenced blocks and code spans) are all the checks need.
 */

/**
 * Lines of `md` outside fenced code blocks (``` or ~~~). Code spans are blanked (a code span may
 * hold brackets and parentheses that are no link: its length stays, its text goes) unless
 * `keepCode` (heading text includes them).
 */
export function proseLines(md: string, o: { keepCode?: boolean } = {}): string[] {
  const out: string[] = [];
  let fence: string | null = null;
  for (const line of md.split('\n')) {
    const m = /^\s{0,3}(`{3,}|~{3,})/.exec(line);
    if (fence) {
      if (m && m[1][0] === fence[0] && m[1].length >= fence.length) fence = null;
      continue;
    }
    if (m) {
      fence = m[1];
      continue;
    }
    out.push(o.keepCode ? line : line.replace(/(`+)(?:(?!\1).)+?\1/g, (s) => ' '.repeat(s.length)));
  }
  return out;
}

/** Link targets of inline links, images and reference definitions, in order (code excluded). */
export function linkTargets(md: string): string[] {
  const targets: string[] = [];
  // Code spans in a link's text are blanked by proseLines; the target after it is untouched.
  const inline = /!?\[(?:[^[\]]|\[[^\]]*\])*\]\(\s*(?:<([^>]*)>|([^)\s]+))(?:\s+(?:"[^"]*"|'[^']*'))?\s*\)/g;
  for (const line of proseLines(md)) {
    for (const l of line.matchAll(inline)) targets.push(l[1] ?? l[2]);
    const def = /^\s{0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?/.exec(line);
    if (def) targets.push(def[1]);
  }
  return targets;
}

/** Whether a link target is relative to the page (not a URL with a scheme, not a page anchor). */
export function isRelativeTarget(target: string): boolean {
  return !/^[a-z][a-z0-9+.-]*:/i.test(target) && !target.startsWith('#') && !target.startsWith('//');
}

/** The anchors GitHub gives a page's headings (github-slugger's rule), duplicates numbered. */
export function headingAnchors(md: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const line of proseLines(md, { keepCode: true })) {
    const m = /^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!m) continue;
    const text = m[1].replace(/`/g, '').replace(/\[([^\]]*)\]\([^)]*\)/g, '$1');
    const base = text.toLowerCase().replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '').replace(/ /g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}


export interface TaggedBlock {
  name: string;
  code: string;
}

/**
 * Fenced blocks announced by an HTML comment `<!-- <tag>: <name> -->` on the line before the
 * fence (invisible on GitHub), e.g. `<!-- duckdb-example: days -->` then a ```sql block.
 */
export function taggedBlocks(md: string, tag: string): TaggedBlock[] {
  const lines = md.split('\n');
  const re = new RegExp(`^<!--\\s*${tag.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\s*([\\w.-]+)\\s*-->\\s*$`);
  const out: TaggedBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    const m = re.exec(lines[i].trim());
    if (!m) continue;
    const open = /^\s{0,3}(`{3,}|~{3,})/.exec(lines[i + 1] ?? '');
    if (!open) throw new Error(`line ${i + 1}: "${lines[i].trim()}" is not followed by a fenced block`);
    const body: string[] = [];
    let j = i + 2;
    for (; j < lines.length; j++) {
      const close = /^\s{0,3}(`{3,}|~{3,})\s*$/.exec(lines[j]);
      if (close && close[1][0] === open[1][0] && close[1].length >= open[1].length) break;
      body.push(lines[j]);
    }
    if (j === lines.length) throw new Error(`line ${i + 2}: the block of "${m[1]}" is not closed`);
    out.push({ name: m[1], code: body.join('\n') });
    i = j;
  }
  return out;
}

/**
 * Every metric-like name mentioned in a page (prose, tables and code blocks alike): ours,
 * `braid_...`, and the standard process metrics, `process_...` and `nodejs_...`.
 */
export function mentionedMetricNames(md: string): Set<string> {
  return new Set(md.match(/\b(?:braid|process|nodejs)_[a-z0-9_]+/g) ?? []);
}

/** Metric families of a Prometheus text exposition: name -> type (from the `# TYPE` lines). */
export function exposedMetrics(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (m) out.set(m[1], m[2]);
  }
  return out;
}

/** The sample names a family serves: a histogram's _bucket, _sum and _count; a summary's _sum and _count. */
export function sampleNames(name: string, type: string): string[] {
  if (type === 'histogram') return [name, `${name}_bucket`, `${name}_sum`, `${name}_count`];
  if (type === 'summary') return [name, `${name}_sum`, `${name}_count`];
  return [name];
}
