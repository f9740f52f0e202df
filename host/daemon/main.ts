/**
 * `volantd [--config F] [--state-dir D] [--listen A] [--kernel K]`: runs the daemon until SIGTERM
 * or SIGINT, then shuts down gracefully (see daemon.ts: VMs keep running for re-adoption).
 */

import { parseArgs } from 'node:util';
import { isVolantError } from '../../shared/errors.js';
import type { VolantConfig } from '../config/schema.js';
import { createCloudHypervisorLauncher } from '../vmm/cloud-hypervisor.js';
import { createQemuLauncher } from '../vmm/qemu.js';
import type { Launcher } from '../vmm/launcher.js';
import { spawnSync } from 'node:child_process';
import { runDaemon } from './daemon.js';

const USAGE = 'usage: volantd [--config FILE] [--state-dir DIR] [--listen HOST:PORT|unix:/path] [--kernel VMLINUZ]';

function onPath(binary: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${binary}`], { stdio: 'ignore' }).status === 0;
}

/** Cloud Hypervisor where it is installed (unless config prefers QEMU), else QEMU. */
export function chooseLauncher(cfg: VolantConfig): Launcher {
  const prefer = cfg.vmm.prefer;
  if (prefer === 'cloud-hypervisor' || (prefer === 'auto' && onPath('cloud-hypervisor'))) return createCloudHypervisorLauncher();
  return createQemuLauncher({ accel: cfg.vmm.accel });
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
  try {
    const daemon = await runDaemon({ configFile: values.config, stateDir: values['state-dir'], listen: values.listen, kernelPath: values.kernel, launcher: chooseLauncher });
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
