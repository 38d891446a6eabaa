/** Durable file steps: fsync a file or a directory, rename into place, version directory names. */
import { open, rename, mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';

/** fsync a file or a directory (a directory's fsync makes a rename or a new entry in it durable). */
export async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Move a finished file into place: fsync it, rename (atomic on one filesystem), fsync the target dir. */
export async function publishFile(tmp: string, target: string): Promise<void> {
  await fsyncPath(tmp);
  await mkdir(dirname(target), { recursive: true });
  await rename(tmp, target);
  await fsyncPath(dirname(target));
}

/** `v000012`: the directory of a view version under views/. */
export function versionDir(version: number): string {
  return `v${String(version).padStart(6, '0')}`;
}

/** The version of a `v000012` directory name, or null for any other name. */
export function parseVersionDir(name: string): number | null {
  const m = /^v(\d{6,})$/.exec(name);
  return m ? Number(m[1]) : null;
}

/** The day of a view file path (`.../day=2024-11-23.parquet`), or null. */
export function dayOfPath(path: string): string | null {
  const m = /day=(\d{4}-\d{2}-\d{2})\.parquet$/.exec(path);
  return m ? m[1] : null;
}
