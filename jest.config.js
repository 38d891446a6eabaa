/** Jest runs the TypeScript sources as ESM through SWC (no type check: `npm run typecheck` does that). */
import { availableParallelism } from 'node:os';

// Every worker inherits it: an SQLite error then names the test code's call (shared/sqlite.ts), where
// node-sqlite3 alone gives the message only ("SQLITE_BUSY: database is locked", nothing to find it by).
process.env.SQLITE3_VERBOSE ??= '1';

export default {
  testEnvironment: 'node',
  // Two test files at a time at least (jest's default is cores - 1: one at a time on a 2-core CI
  // machine, where most files wait on servers, child processes and timers rather than the CPU).
  maxWorkers: Math.max(2, availableParallelism() - 1),
  extensionsToTreatAsEsm: ['.ts'],
  transform: {
    '^.+\\.ts$': ['@swc/jest', {
      jsc: { parser: { syntax: 'typescript' }, target: 'es2022' },
      module: { type: 'es6' },
    }],
  },
  // Sources import './x.js' (NodeNext style); jest resolves that to x.ts.
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  testMatch: ['<rootDir>/test/**/*.test.ts'],
  testTimeout: 30000,
  reporters: ['default', '<rootDir>/test/support/summary-reporter.js'],
};
