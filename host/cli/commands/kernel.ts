/**
 * `volar kernel fetch`: downloads Debian's cloud kernel through apt (download, not install) and
 * prints where its `vmlinuz` and modules are, so `plugins build` and volantd can use it.
 */

import type { Command } from 'commander';
import { fetchKernel } from '../../../initramfs/kernel.js';
import { kernelsDir } from '../../config/load.js';
import { DEFAULT_STATE_DIR } from '../client.js';
import { emit, globalOptions, note } from '../output.js';

/** Where the kernel lives when no `--dest` is given: `<state_dir>/kernels` (global --state-dir). */
export function defaultKernelDir(stateDir: string | undefined): string {
  return kernelsDir(stateDir ?? DEFAULT_STATE_DIR);
}

export function register(program: Command): void {
  const kernel = program.command('kernel').description('the guest kernel VMs boot');
  kernel
    .command('fetch')
    .description("download Debian's cloud kernel (apt-get download + dpkg -x) and print its paths")
    .option('--dest <dir>', 'cache directory (default <state_dir>/kernels)')
    .option('--force', 'download again even when cached')
    .action(async (opts: { dest?: string; force?: boolean }, cmd: Command) => {
      const info = await fetchKernel({
        dest: opts.dest ?? defaultKernelDir(globalOptions(cmd).stateDir),
        force: opts.force,
        log: (l) => note(cmd, l),
      });
      emit(cmd, info, () => `version  ${info.version}\nvmlinuz  ${info.vmlinuz}\nmodules  ${info.modulesDir}`);
    });
}
