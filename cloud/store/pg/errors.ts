/** Errors of the PostgreSQL store, declared once with stable codes (shared/errors.ts style). */
import { BraidError } from '../../../shared/errors.js';

/**
 * The database's schema is newer than this code knows: a node of an older version started during a
 * rolling upgrade (or a downgrade). It must not write rows in a shape it does not know; upgrade it.
 */
export class StoreSchemaNewerError extends BraidError {
  /** The highest migration applied to the database. */
  readonly databaseVersion: number;
  /** The highest migration this code has. */
  readonly codeVersion: number;
  constructor(databaseVersion: number, codeVersion: number) {
    super('BRAID_ERR_STORE_SCHEMA_NEWER',
      `the PostgreSQL store's schema is at version ${databaseVersion}, newer than this braid knows (version ${codeVersion}): `
      + 'a newer braid migrated it; run that version (or newer) on this node', 500);
    this.databaseVersion = databaseVersion;
    this.codeVersion = codeVersion;
  }

  override canRetry(): boolean {
    return false;
  }
}
