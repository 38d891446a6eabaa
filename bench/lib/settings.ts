/**
 * A benchmark's settings: its knobs are BENCH_* environment variables, read once at start-up. Bad
 * input stops the run at once with the variable's name, before anything is started.
 */

const env = process.env;

/** `--help` or `-h`: print the bench's knobs and exit 0, before anything is read or started. */
export function exitOnHelp(usage: string): void {
  if (!process.argv.includes('--help') && !process.argv.includes('-h')) return;
  process.stdout.write(usage.endsWith('\n') ? usage : `${usage}\n`);
  process.exit(0);
}

/** The values of a command-line option given as `name value`, each time it is given (the scripts run by hand with `--flags`). */
export function argValues(name: string, args: readonly string[] = process.argv.slice(2)): string[] {
  return args.flatMap((a, i) => (a === name && args[i + 1] ? [args[i + 1]] : []));
}

/**
 * A number > 0 from the environment, `dflt` when unset or empty. `zeroOk` admits 0 for the
 * knobs where none is a meaningful choice (a duplicate share of 0, no devices beyond the minimum).
 */
export function envNumber(name: string, dflt: number, { zeroOk = false } = {}): number {
  const v = env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0 || (n === 0 && !zeroOk)) {
    throw new Error(`${name} must be ${zeroOk ? 'a number >= 0' : 'a positive number'}, got "${v}"`);
  }
  return n;
}

/** BENCH_SCALE: every bench scales its counts by it; 1 is the full run the docs report. */
export function envScale(): number {
  return envNumber('BENCH_SCALE', 1);
}

/** A comma-separated choice among `choices` (BENCH_PHASES, BENCH_PEERS, ...), in the order given. */
export function envChoices<T extends string>(name: string, choices: readonly T[], noun: string, dflt: readonly T[] = choices): T[] {
  return (env[name] ?? dflt.join(',')).split(',').map((s) => s.trim()).filter(Boolean).map((v) => {
    if (!(choices as readonly string[]).includes(v)) throw new Error(`${name}: unknown ${noun} "${v}" (one of ${choices.join(', ')})`);
    return v as T;
  });
}

/** A JSON object from the environment (a config fragment to merge), {} when unset. */
export function envJson(name: string): Record<string, unknown> {
  const v = env[name];
  if (!v) return {};
  try {
    const o = JSON.parse(v) as unknown;
    if (!o || typeof o !== 'object' || Array.isArray(o)) throw new Error('not an object');
    return o as Record<string, unknown>;
  } catch (err) {
    throw new Error(`${name} must be a JSON object: ${(err as Error).message}`);
  }
}

/**
 * BENCH_WRITE_DOCS=1|0: whether the run writes its section of docs/benchmarks.md. Unset, only a
 * full run does (`full`: full scale, the default knobs), so a quick run never replaces the figures.
 */
export function envWriteDocs(full: boolean): boolean {
  const v = env.BENCH_WRITE_DOCS;
  return v === undefined || v === '' ? full : v === '1';
}

/** BENCH_TIMEOUT_S in ms: the whole run stops by itself after this long. */
export function envTimeoutMs(dfltSeconds: number): number {
  return envNumber('BENCH_TIMEOUT_S', dfltSeconds) * 1000;
}

/** `b` merged into `a` object by object (arrays and values of `b` replace): a config plus a knob's fragment. */
export function mergeDeep(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && out[k] && typeof out[k] === 'object'
      ? mergeDeep(out[k] as Record<string, unknown>, v as Record<string, unknown>) : v;
  }
  return out;
}
