/**
 * `braid`: the command line (DESIGN.md, the contract). Each long-running command takes --config
 * FILE, BRAID_* environment overrides and flags, flags winning.
 */
import { Command, Option } from 'commander';
import { BraidError } from '../shared/errors.js';
import { registerGatewayCommands } from './commands/gateway.js';
import { registerDemoCommand } from './commands/demo.js';
import { registerSimulateCommand } from './commands/simulate.js';
import { registerCloudCommands } from './commands/cloud.js';
import { registerBatchCommand } from './commands/batch.js';

export function buildProgram(): Command {
  const program = new Command('braid')
    .description('Braid: a Lambda Architecture for IoT fleets (edge gateways, cloud batch views, one merged query)')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)');
  registerGatewayCommands(program);
  registerSimulateCommand(program);
  registerCloudCommands(program);
  registerDemoCommand(program);
  registerBatchCommand(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  // Subcommands copy the exit override only when created, so set it on every one: otherwise a usage
  // error in `braid gateway` makes commander exit 1 itself, not the 2 of a bad invocation.
  const override = (c: Command): void => { c.exitOverride(); c.commands.forEach(override); };
  override(program);
  try {
    await program.parseAsync(argv);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'commander.helpDisplayed' || code === 'commander.version') process.exit(0);
    // `braid help X` exits 0; help shown for a missing subcommand (`braid device`) is a usage error.
    if (code === 'commander.help') process.exit((err as { exitCode?: number }).exitCode === 0 ? 0 : 2);
    if (code?.startsWith('commander.')) process.exit(2);
    if (err instanceof BraidError) {
      process.stderr.write(`braid: ${err.message} [${err.code}]\n`);
      // 2: a bad invocation (config, a data dir another process owns) that a restart cannot fix.
      process.exit(err.code === 'BRAID_ERR_CONFIG_INVALID' || err.code === 'BRAID_ERR_DATA_DIR_IN_USE' || err.code === 'BRAID_ERR_STORE_SCHEMA_NEWER' || err.statusCode === 400 ? 2 : 1);
    }
    process.stderr.write(`braid: ${(err as Error).stack ?? err}\n`);
    process.exit(1);
  }
}

/** A flag whose value is a whole number; a bad one names the flag. */
export function intOption(flags: string, description: string): Option {
  return new Option(flags, description).argParser((v: string) => {
    if (!/^\d+$/.test(v)) {
      const err = new Error(`${flags.split(' ')[0]} must be a whole number, got "${v}"`);
      throw Object.assign(err, { code: 'commander.invalidArgument' });
    }
    return Number(v);
  });
}
