/**
 * `volar`: the command-line client. Each command group lives in its own file under `commands/`
 * and registers itself here; errors print `code: message` and exit non-zero.
 */

import { Command } from 'commander';
import { isVolantError } from '../../shared/errors.js';
import { register as registerDebug } from './commands/debug.js';
import { register as registerKernel } from './commands/kernel.js';
import { register as registerPlugins } from './commands/plugins.js';
import { register as registerSetup } from './commands/setup.js';
import { register as registerVms } from './commands/vms.js';

export function buildProgram(): Command {
  const program = new Command('volar')
    .description('Volant: microVMs whose networking just works and is secure by default')
    .option('--api <url>', 'volantd API address, http://HOST:PORT or unix:/path (or VOLANT_API; default: its Unix socket when there, else http://127.0.0.1:8080 with the token)', process.env.VOLANT_API)
    .option('--token <token>', 'API bearer token (or VOLANT_TOKEN)', process.env.VOLANT_TOKEN)
    .showHelpAfterError();
  registerSetup(program);
  registerPlugins(program);
  registerVms(program);
  registerDebug(program);
  registerKernel(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    return 0;
  } catch (e) {
    if (isVolantError(e)) console.error(`volar: ${e.code}: ${e.message}`);
    else console.error(`volar: ${(e as Error).message ?? String(e)}`);
    return 1;
  }
}

process.exitCode = await main(process.argv);
