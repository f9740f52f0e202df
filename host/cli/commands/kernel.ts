/**
 * `volar kernel fetch`: downloads Debian's cloud kernel through apt (download, not install) and
 * prints where its `vmlinuz` and modules are, so `plugins build` and volantd can use it.
 */

import { join } from 'node:path';
import type { Command } from 'commander';
import { fetchKernel } from '../../../initramfs/kernel.js';

/** Where the kernel lives when no `--dest` is given: `<state_dir>/kernels`. */
export function defaultKernelDir(): string {
  return join(process.env.VOLANT_STATE_DIR ?? '/var/lib/volant', 'kernels');
}

export function register(program: Command): void {
  const kernel = program.command('kernel').description('the guest kernel VMs boot');
  kernel
    .command('fetch')
    .description("download Debian's cloud kernel (apt-get download + dpkg -x) and print its paths")
    .option('--dest <dir>', 'cache directory (default <state_dir>/kernels)')
    .option('--force', 'download again even when cached')
    .action(async (opts: { dest?: string; force?: boolean }) => {
      const info = await fetchKernel({
        dest: opts.dest ?? defaultKernelDir(),
        force: opts.force,
        log: (l) => process.stderr.write(`volar: ${l}\n`),
      });
      process.stdout.write(`version  ${info.version}\nvmlinuz  ${info.vmlinuz}\nmodules  ${info.modulesDir}\n`);
    });
}
