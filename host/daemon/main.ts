/**
 * `volantd [--config F] [--state-dir D] [--listen A] [--kernel K]`: runs the daemon until SIGTERM
 * or SIGINT, then shuts down gracefully (see daemon.ts: VMs keep running for re-adoption).
 */

import { parseArgs } from 'node:util';
import { isVolantError } from '../../shared/errors.js';
import { selectLauncher } from '../vmm/select.js';
import { runDaemon } from './daemon.js';

const USAGE = 'usage: volantd [--config FILE] [--state-dir DIR] [--listen HOST:PORT|unix:/path] [--kernel VMLINUZ]';

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
  try {
    const daemon = await runDaemon({ configFile: values.config, stateDir: values['state-dir'], listen: values.listen, kernelPath: values.kernel, launcher: (cfg) => selectLauncher({ prefer: cfg.vmm.prefer, accel: cfg.vmm.accel, qemuVsock: cfg.vmm.qemu.vsock }) });
    await new Promise<void>((resolve) => {
      const stop = (sig: string) => {
        console.error(`volantd: ${sig}: shutting down (VMs keep running and are re-adopted on next start)`);
        resolve();
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
    });
    await daemon.close();
    return 0;
  } catch (e) {
    console.error(isVolantError(e) ? `volantd: ${e.code}: ${e.message}` : `volantd: ${(e as Error).stack ?? String(e)}`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
