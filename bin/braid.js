#!/usr/bin/env node
// The `braid` command. Sources are TypeScript, loaded through tsx so `npx braid` works right after `npm ci`.
import { register } from 'tsx/esm/api';
register();
const { main } = await import('./cli.ts');
await main(process.argv);
