/** Sets of seq as sorted, merged, inclusive ranges: pure helpers for the ingest state. */

export interface Range {
  from: number;
  to: number;
}

/** Merge ranges into sorted, non-overlapping, non-adjacent ones. */
export function normalize(ranges: Iterable<Range>): Range[] {
  const sorted = [...ranges].filter((r) => r.from <= r.to).sort((a, b) => a.from - b.from);
  const out: Range[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.from <= last.to + 1) last.to = Math.max(last.to, r.to);
    else out.push({ from: r.from, to: r.to });
  }
  return out;
}

/** Whether every seq of [from, to] is in the normalized `ranges`. */
export function covers(ranges: Range[], from: number, to: number): boolean {
  if (from > to) return true;
  // Binary search for the last range starting at or before `from`.
  let lo = 0;
  let hi = ranges.length - 1;
  let idx = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (ranges[mid].from <= from) { idx = mid; lo = mid + 1; } else hi = mid - 1;
  }
  return idx >= 0 && ranges[idx].to >= to;
}

/** The parts of [from, to] not in the normalized `ranges`. */
export function missing(ranges: Range[], from: number, to: number): Range[] {
  const out: Range[] = [];
  let cur = from;
  for (const r of ranges) {
    if (r.to < cur) continue;
    if (r.from > to) break;
    if (r.from > cur) out.push({ from: cur, to: Math.min(to, r.from - 1) });
    cur = Math.max(cur, r.to + 1);
    if (cur > to) break;
  }
  if (cur <= to) out.push({ from: cur, to });
  return out;
}

/** A gateway's range row in a range set table (received, sealed, staged): its key and extent. */
export interface GatewayRange { gateway: string; from: number; to: number }

/**
 * The rows to delete, update (the same from_seq, a new to_seq) and insert so that a merged range set
 * also holds `add` (by gateway), given `near`: every row of the set that overlaps or touches a range
 * of `add` (rangesNear's rows for each, repeats allowed). Rows not near any added range touch no
 * merged range either (the set was merged), so they stay as they are, as does a near row that
 * merged into nothing larger. The common case, a set growing at its end, is one update.
 */
export function rangeChanges(near: GatewayRange[], add: Map<string, Range[]>): { del: GatewayRange[]; upd: GatewayRange[]; ins: GatewayRange[] } {
  const byGateway = new Map<string, Map<number, Range>>();
  for (const r of near) {
    let m = byGateway.get(r.gateway);
    if (!m) byGateway.set(r.gateway, m = new Map());
    m.set(r.from, { from: r.from, to: r.to });
  }
  const del: GatewayRange[] = [];
  const upd: GatewayRange[] = [];
  const ins: GatewayRange[] = [];
  for (const [gateway, ranges] of add) {
    if (ranges.length === 0) continue;
    const have = byGateway.get(gateway) ?? new Map<number, Range>();
    const merged = normalize([...have.values(), ...ranges]);
    const starts = new Set(merged.map((m) => m.from));
    for (const h of have.values()) if (!starts.has(h.from)) del.push({ gateway, ...h });
    for (const m of merged) {
      const h = have.get(m.from);
      if (!h) ins.push({ gateway, ...m });
      else if (h.to !== m.to) upd.push({ gateway, ...m });
    }
  }
  return { del, upd, ins };
}

/**
 * What addRangesAll (the SQLite and PostgreSQL stores) adds to a range set table: every gateway's
 * ranges normalized, in one list, and the parameter that picks the segment's set in `staged`.
 */
export function rangesToAdd(table: 'received' | 'sealed' | 'staged', byGateway: Map<string, Range[]>, segment?: string): { items: GatewayRange[]; seg: string[] } {
  if ((table === 'staged') !== (segment !== undefined)) throw new Error('addRangesAll: a segment for staged, and only for staged');
  const items: GatewayRange[] = [];
  for (const [gateway, ranges] of byGateway) for (const r of normalize(ranges)) items.push({ gateway, ...r });
  return { items, seg: segment === undefined ? [] : [segment] };
}
