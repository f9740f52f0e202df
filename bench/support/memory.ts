/**
 * Memory figures the VM benchmarks report. A process's proportional set size (PSS, from
 * `/proc/PID/smaps_rollup`) is its fair host cost: a page shared by N processes counts 1/N in
 * each, so the runtime image's page cache shared by N VMs is paid once in all, while guest RAM
 * (a memfd each VM owns) is paid in full by its QEMU.
 */

import { readFileSync } from 'node:fs';

export interface Pss {
  /** Every field in kB, as the kernel prints them. */
  pss_kb: number;
  pss_anon_kb: number;
  pss_file_kb: number;
  pss_shmem_kb: number;
  rss_kb: number;
}

/** Parses `smaps_rollup` text (pure). Throws when the Pss line is missing (not a smaps_rollup). */
export function parseSmapsRollup(text: string): Pss {
  const field = (name: string): number => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB$`, 'm').exec(text);
    return m ? Number(m[1]) : Number.NaN;
  };
  const pss = field('Pss');
  if (Number.isNaN(pss)) throw new Error(`no Pss line in smaps_rollup: ${text.slice(0, 200)}`);
  return { pss_kb: pss, pss_anon_kb: field('Pss_Anon'), pss_file_kb: field('Pss_File'), pss_shmem_kb: field('Pss_Shmem'), rss_kb: field('Rss') };
}

export const processPss = (pid: number): Pss => parseSmapsRollup(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));

export const mib = (kb: number): string => (kb / 1024).toFixed(1);
