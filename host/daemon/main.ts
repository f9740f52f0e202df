/**
 * `volantd [--config F] [--state-dir D] [--listen A] [--kernel K]`: runs the daemon until SIGTERM
 * or SIGINT, then shuts down gracefully (see daemon.ts: VMs keep running for re-adoption).
 * A usage error is plain text with the usage (exit 2); everything after that is volantd's log,
 * JSON lines on stderr (docs/logging.md), a failure to start included (level fatal, exit 1).
 */

import { parseArgs } from 'node:util';
import { isVolantError } from '../../shared/errors.js';
import { createLogger, type Logger } from '../log/logger.js';
import { selectLauncher } from '../vmm/select.js';
import { runDaemon } from './daemon.js';

const USAGE = 'usage: volantd [--config FILE] [--state-dir DIR] [--listen HOST:PORT|unix:/path] [--kernel VMLINUZ]';

/** For what happens before volantd's own logger exists (a config that does not load) or after it is gone. */
function fallbackLogger(): Logger {
  return createLogger({ name: 'volantd', level: 'info' });
}

function errorText(e: unknown): string {
  return isVolantError(e) ? `${e.code}: ${e.message}` : e instanceof Error ? e.message : String(e);
}

export async function main(argv: string[]): Promise<number> {
  let values: { config?: string; 'state-dir'?: string; listen?: string; kernel?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { config: { type: 'string' }, 'state-dir': { type: 'string' }, listen: { type: 'string' }, kernel: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
    }));
  } catch (e) {
    console.error(`volantd: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  let log: Logger | undefined;
  try {
    const daemon = await runDaemon({
      configFile: values.config,
      stateDir: values['state-dir'],
      listen: values.listen,
      kernelPath: values.kernel,
      launcher: (cfg, vmmLog) => selectLauncher({ prefer: cfg.vmm.prefer, accel: cfg.vmm.accel, qemuVsock: cfg.vmm.qemu.vsock, log: vmmLog }),
    });
    const daemonLog = daemon.log.child({ module: 'daemon' });
    log = daemonLog;
    const crash = (err: unknown): void => {
      daemonLog.fatal({ err }, `crashed: ${errorText(err)}`);
      process.exit(1);
    };
    process.on('uncaughtException', crash);
    process.on('unhandledRejection', crash);
    await new Promise<void>((resolve) => {
      const stop = (signal: string) => {
        daemonLog.info({ signal }, `${signal}: shutting down (VMs keep running and are re-adopted on next start)`);
        resolve();
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
    });
    await daemon.close();
    return 0;
  } catch (e) {
    (log ?? fallbackLogger()).fatal({ err: e }, `${log ? 'failed' : 'cannot start'}: ${errorText(e)}`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
