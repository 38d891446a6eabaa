export const BUILD_MANIFEST: string;
/** Whether `distDir` holds a build of the sources as they are now. */
export function buildState(distDir: string): 'fresh' | 'stale' | 'none';
