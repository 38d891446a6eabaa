/**
 * `cloud.url` as a list: the nodes of one cloud (DESIGN.md, Cluster mode), given as one URL, a
 * comma-separated string or (in the config file) a JSON array. Pure functions, shared by the
 * config schema, the senders' option checks and the node list.
 */

/** The elements of a `cloud.url` value, trimmed, in order (empty ones kept, for the check to name). */
export function splitCloudUrls(value: string | readonly string[]): string[] {
  const parts = typeof value === 'string' ? value.split(',') : value;
  return parts.map((s) => s.trim());
}

/**
 * What is wrong with a list of node URLs, each bad element named by position and value; null when
 * every element is an http(s) URL and none repeats (a repeat would make "the next node" the same one).
 */
export function cloudUrlsProblem(urls: readonly string[]): string | null {
  const problems: string[] = [];
  const seen = new Map<string, number>();
  const at = (i: number) => (urls.length > 1 ? `element ${i + 1} of ${urls.length} ` : '');
  urls.forEach((text, i) => {
    if (text === '') return problems.push(urls.length > 1 ? `${at(i)}is empty` : 'an empty string is not a URL');
    let u: URL;
    try {
      u = new URL(text);
    } catch {
      return problems.push(`${at(i)}"${text}" is not a URL`);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') return problems.push(`${at(i)}"${text}" is not an http:// or https:// URL`);
    const key = u.href.replace(/\/+$/, '');
    const first = seen.get(key);
    if (first !== undefined) return problems.push(`${at(i)}"${text}" repeats element ${first + 1}`);
    seen.set(key, i);
    return undefined;
  });
  return problems.length ? problems.join('; ') : null;
}

/** A node URL as status pages and metric labels show it: without a user or password. */
export function displayUrl(url: string): string {
  try {
    const u = new URL(url);
    if (!u.username && !u.password) return url;
    u.username = '';
    u.password = '';
    return u.toString();
  } catch {
    return url;
  }
}
