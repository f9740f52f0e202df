/**
 * How network commands reach the system. Every command is an argv run with execFile (never a
 * shell) and is marked as a probe (read-only: `ip link show`, `iptables -C`) or a change. A
 * failed change becomes VolantError SYSTEM_COMMAND_FAILED carrying the command and its stderr.
 * The dry-run runner prints and records changes without running them; its probes either run
 * for real (read-only, so the plan printed is what would really run) or answer "absent".
 */

import { execFile } from 'node:child_process';
import { VolantError } from '../../shared/errors.js';

/** A stuck `ip`/`iptables` (e.g. waiting on the xtables lock) fails after this long. */
export const COMMAND_TIMEOUT_MS = 30_000;
export const COMMAND_MAX_OUTPUT_BYTES = 16 * 1024 * 1024;

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface Command {
  argv: readonly string[];
  /** true for read-only checks whose non-zero exit is an answer, not a failure. */
  probe?: boolean;
}

export interface CommandRunner {
  run(command: Command): Promise<CommandResult>;
}

/** Shell-quoted for display only (nothing is ever run through a shell). */
export function formatCommand(argv: readonly string[]): string {
  return argv.map((a) => (/^[A-Za-z0-9_./:=@%+,-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

export function commandFailed(argv: readonly string[], result: CommandResult): VolantError {
  const stderr = result.stderr.trim().slice(0, 2000);
  return new VolantError('SYSTEM_COMMAND_FAILED', `\`${formatCommand(argv)}\` failed (exit ${result.code})${stderr ? `: ${stderr}` : ''}`, {
    command: argv,
    exitCode: result.code,
    stderr,
  });
}

export interface ExecRunnerOptions {
  /** Prepended to every argv, e.g. `['ip', 'netns', 'exec', 'ns1']` to act inside a namespace. */
  prefix?: readonly string[];
}

export class ExecRunner implements CommandRunner {
  private readonly prefix: readonly string[];

  constructor(options: ExecRunnerOptions = {}) {
    this.prefix = options.prefix ?? [];
  }

  run(command: Command): Promise<CommandResult> {
    const argv = [...this.prefix, ...command.argv];
    return new Promise((resolve, reject) => {
      execFile(argv[0]!, argv.slice(1), { timeout: COMMAND_TIMEOUT_MS, maxBuffer: COMMAND_MAX_OUTPUT_BYTES, encoding: 'utf8' }, (err, stdout, stderr) => {
        if (err && typeof (err as { code?: unknown }).code !== 'number') {
          const e = err as NodeJS.ErrnoException & { killed?: boolean };
          const why = e.killed ? `timed out after ${COMMAND_TIMEOUT_MS} ms` : e.code === 'ENOENT' ? `${argv[0]} is not installed` : e.message;
          reject(new VolantError('SYSTEM_COMMAND_FAILED', `\`${formatCommand(argv)}\` could not run: ${why}`, { command: argv, stderr: String(stderr ?? '') }));
          return;
        }
        const result = { code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr };
        if (result.code !== 0 && !command.probe) reject(commandFailed(argv, result));
        else resolve(result);
      });
    });
  }
}

export interface DryRunRunnerOptions {
  /** Runs probes for real (they only read); without it every probe answers "absent". */
  probes?: CommandRunner;
  /** Where each change is printed (default: nowhere; read `commands`). */
  print?: (line: string) => void;
}

export class DryRunRunner implements CommandRunner {
  /** Every change that would have run, in order. */
  readonly commands: string[][] = [];

  constructor(private readonly options: DryRunRunnerOptions = {}) {}

  async run(command: Command): Promise<CommandResult> {
    if (command.probe) {
      if (!this.options.probes) return { code: 1, stdout: '', stderr: 'dry run' };
      try {
        return await this.options.probes.run(command);
      } catch {
        return { code: 1, stdout: '', stderr: 'dry run: probe could not run' };
      }
    }
    this.commands.push([...command.argv]);
    this.options.print?.(formatCommand(command.argv));
    return { code: 0, stdout: '', stderr: '' };
  }
}
