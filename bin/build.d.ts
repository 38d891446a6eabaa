/** Build the CLI into `outDir` (default dist/ in the checkout); resolves with the number of sources. */
export function buildCli(outDir?: string): Promise<number>;
