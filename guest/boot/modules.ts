/**
 * Step 2 of boot (PID 1 only): load the kernel modules the image carries, in the order the
 * image builder wrote them to /etc/volant/modules.load (dependencies first; Debian's cloud
 * kernel ships virtio, vsock and virtio-net as modules and no modules.dep). A module that is
 * already loaded or built in is fine (the addon treats EEXIST as success). A module that fails
 * is reported and the boot goes on: a missing NIC driver still leaves vsock, and /healthz and
 * the console say what failed.
 */

import { readFileSync } from 'node:fs';
import { finitModule } from '../../native/index.js';
import { say } from '../console.js';

export const MODULES_LOAD_PATH = '/etc/volant/modules.load';

/** The list file → absolute .ko paths; blank lines and `#` comments are skipped. Pure. */
export function parseModulesLoad(text: string): string[] {
  const out: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (!line.startsWith('/')) throw new Error(`${MODULES_LOAD_PATH}: ${JSON.stringify(line.slice(0, 80))} is not an absolute path`);
    out.push(line);
  }
  return out;
}

export interface ModuleLoadResult {
  loaded: string[];
  failed: { path: string; error: string }[];
}

export function loadImageModules(listPath = MODULES_LOAD_PATH): ModuleLoadResult {
  const result: ModuleLoadResult = { loaded: [], failed: [] };
  let text: string;
  try {
    text = readFileSync(listPath, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return result;
    throw e;
  }
  for (const path of parseModulesLoad(text)) {
    try {
      finitModule(path);
      result.loaded.push(path);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      result.failed.push({ path, error: err.code ?? err.message });
      say(`module ${path}: ${err.code ?? ''} ${err.message}`.trim());
    }
  }
  return result;
}
