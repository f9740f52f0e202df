/**
 * A volantd process for crash tests: `runDaemon` with the FakeVmmLauncher TEST DOUBLE (no VMM can
 * run here), so a test can SIGKILL the daemon itself mid-operation and restart it on the same
 * state dir. Prints one JSON line `{"address": ..., "token": ...}` on stdout once it listens; its
 * log is volantd's own (JSON lines on stderr at `log.level`, which VOLANT_LOG_LEVEL sets).
 *   node --import tsx volantd-double-main.ts <state-dir> <kernel> [behaviour for every VM]
 */

import { runDaemon } from '../../host/daemon/daemon.js';
import { type FakeBehaviour, FakeVmmLauncher } from './orchestrator-vmm-double.js';

const [stateDir, kernelPath, behaviour] = process.argv.slice(2);
const launcher = new FakeVmmLauncher();
if (behaviour) launcher.launch = ((orig) => (spec) => {
  launcher.behaviour.set(spec.vmName, behaviour as FakeBehaviour);
  return orig(spec);
})(launcher.launch.bind(launcher));
const daemon = await runDaemon({ configFile: null, env: { VOLANT_LOG_LEVEL: process.env.VOLANT_LOG_LEVEL }, stateDir, listen: '127.0.0.1:0', kernelPath, launcher, network: null, healthTimeoutMs: 60_000 });
process.stdout.write(`${JSON.stringify({ address: daemon.address, token: daemon.token })}\n`);
process.once('SIGTERM', () => void daemon.close().then(() => process.exit(0)));
