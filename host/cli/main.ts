/** `volar`'s entry point (bin/volar.js loads the compiled copy): see program.ts. */

import { runVolar } from './program.js';

process.exitCode = await runVolar(process.argv);
