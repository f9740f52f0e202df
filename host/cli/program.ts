/**
 * `volar`: the command tree and how a run ends. Global options (`--api`, `--token`,
 * `--state-dir`, `--json`, `--version`) are declared once here and read by every command through
 * `optsWithGlobals`; each command group lives in its own file under `commands/`. A run ends in
 * one place (`runVolar`): success is 0, a failure prints `volar: CODE: message` (or, under
 * `--json`, `{"error":{...}}` on stdout) and exits with the status `exitCodeFor` gives its code;
 * commander's own usage errors exit 2 like any other bad input.
 */

import { Command, CommanderError } from 'commander';
import { isVolantError, type VolantError } from '../../shared/errors.js';
import { packageVersion } from '../package-info.js';
import { DEFAULT_API, DEFAULT_STATE_DIR } from './client.js';
import { register as registerCompletion } from './commands/completion.js';
import { register as registerDebug } from './commands/debug.js';
import { register as registerKernel } from './commands/kernel.js';
import { register as registerPlugins } from './commands/plugins.js';
import { register as registerSetup } from './commands/setup.js';
import { register as registerVms } from './commands/vms.js';
import { EXIT, type ExitCode, exitCodeFor, exitCodesHelp } from './exit-codes.js';

export interface ProgramOptions {
  /** Under --json commander's own error text is held back; `runVolar` prints the JSON error. */
  json?: boolean;
}

export function buildProgram(o: ProgramOptions = {}): Command {
  const program = new Command('volar')
    .description('Volant: microVMs whose networking just works and is secure by default')
    .version(packageVersion(), '-V, --version', 'print the version and exit')
    .option('--api <url>', `volantd API address, http://HOST:PORT or unix:/path (or VOLANT_API; default: its Unix socket when there, else ${DEFAULT_API} with the token)`, process.env.VOLANT_API)
    .option('--token <token>', 'API bearer token over TCP (or VOLANT_TOKEN; default: <state-dir>/api-token when readable)', process.env.VOLANT_TOKEN)
    .option('--state-dir <dir>', `volantd state directory: database, token file, kernels (or VOLANT_STATE_DIR; default ${DEFAULT_STATE_DIR})`, process.env.VOLANT_STATE_DIR)
    .option('--json', 'print one JSON document on stdout, errors included ({"error":{"code","message"}})')
    .addHelpText('after', `\n${exitCodesHelp()}`)
    .configureHelp({ showGlobalOptions: true })
    .exitOverride()
    .showHelpAfterError(o.json !== true);
  if (o.json) program.configureOutput({ outputError: () => undefined });
  // Subcommands inherit the settings above (exit override, output) when they are created.
  registerSetup(program);
  registerPlugins(program);
  registerVms(program);
  registerDebug(program);
  registerKernel(program);
  registerCompletion(program);
  return program;
}

export interface Failure {
  exit: ExitCode;
  /** The error code printed; FAILED for an error that is not a VolantError (a bug or the platform). */
  code: VolantError['code'] | 'FAILED';
  message: string;
  details?: unknown;
}

/** What a thrown error means for the exit status and the printed error (pure). */
export function failureOf(e: unknown): Failure | undefined {
  if (e instanceof CommanderError) {
    // --help and --version "fail" with status 0; a missing subcommand shows help and is a usage error.
    if (e.exitCode === 0 && e.code !== 'commander.help') return undefined;
    return { exit: EXIT.USAGE, code: 'INVALID_ARGUMENT', message: e.message.replace(/^error: /, '') };
  }
  if (isVolantError(e)) return { exit: exitCodeFor(e.code), code: e.code, message: e.message, details: e.details };
  return { exit: EXIT.FAILED, code: 'FAILED', message: (e as Error)?.message ?? String(e) };
}

/** Runs volar with `argv` (as process.argv: node, script, args...) and returns the exit status. */
export async function runVolar(argv: string[]): Promise<number> {
  const json = argv.slice(2).includes('--json');
  try {
    await buildProgram({ json }).parseAsync(argv);
    return EXIT.OK;
  } catch (e) {
    const f = failureOf(e);
    if (f === undefined) return EXIT.OK;
    if (json) {
      const error = f.details === undefined ? { code: f.code, message: f.message } : { code: f.code, message: f.message, details: f.details };
      process.stdout.write(`${JSON.stringify({ error }, null, 2)}\n`);
    } else if (!(e instanceof CommanderError)) {
      // commander has printed its own usage errors already.
      process.stderr.write(`volar: ${f.code === 'FAILED' ? '' : `${f.code}: `}${f.message}\n`);
    }
    return f.exit;
  }
}
