/**
 * The demo a newcomer runs: volantd in a private namespace, the example plugin built and booted
 * under QEMU, one proxied request, one allowed and one denied outbound call, then clean-up.
 * Everything happens inside namespaces it creates (see test/support/e2e-env.ts).
 */

import { join } from 'node:path';
import { ALLOWED_NAME, DENIED_NAME, startE2eEnv } from '../test/support/e2e-env.js';
import { REPO_ROOT } from '../test/support/kernel.js';
import { runCommand } from '../test/support/netns.js';

const CREATE_TIMEOUT_MS = 6 * 60_000;

function step(text: string): void {
  console.log(`\n▶ ${text}`);
}

async function main(): Promise<number> {
  step('Fetching the kernel (Debian cloud kernel, cached) and starting volantd in a private network namespace');
  const env = await startE2eEnv();
  try {
    const out = join(env.stateDir, 'hello-build');
    step('volar plugins build examples/hello');
    const build = await env.volar(['plugins', 'build', join(REPO_ROOT, 'examples', 'hello'), '-o', out, '--kernel', env.kernel.vmlinuz, '--modules', env.kernel.modulesDir], { timeoutMs: 300_000 });
    process.stdout.write(build.stdout);
    if (build.code !== 0) throw new Error(`plugins build failed: ${build.stderr}`);
    const install = await env.volar(['plugins', 'install', out]);
    if (install.code !== 0) throw new Error(`plugins install failed: ${install.stderr}`);

    step('volar vms create web --plugin hello   (boots under QEMU; TCG here, so this takes a little while)');
    const started = Date.now();
    const create = await env.volar(['vms', 'create', 'web', '--plugin', 'hello'], { timeoutMs: CREATE_TIMEOUT_MS });
    process.stdout.write(create.stdout);
    if (create.code !== 0) throw new Error(`vms create failed: ${create.stderr}`);
    console.log(`  running after ${((Date.now() - started) / 1000).toFixed(1)} s`);
    const list = await env.volar(['vms', 'list']);
    process.stdout.write(list.stdout);

    step('GET /api/v1/vms/web/proxy/hello?name=volant   (ingress: volantd → kestrel → workload), both ways');
    // volantd's Unix socket needs no token (mode 0660, group volant); its TCP listener needs the bearer token.
    const viaSocket = ['curl', '-s', '--unix-socket', env.apiSocket, 'http://localhost/api/v1/vms/web/proxy/hello?name=volant'];
    console.log(`  $ ${viaSocket.join(' ')}`);
    const s = await runCommand(viaSocket);
    console.log(`  ${s.stdout || s.stderr}`);
    const viaTcp = ['curl', '-s', '-H', `Authorization: Bearer ${env.tcp.token()}`, `http://${env.tcp.address}/api/v1/vms/web/proxy/hello?name=volant`];
    console.log(`  $ ip netns exec ${env.hostNs.name} curl -s -H "Authorization: Bearer $(cat ${env.stateDir}/api-token)" http://${env.tcp.address}/api/v1/vms/web/proxy/hello?name=volant`);
    const t = await env.inHost(viaTcp);
    console.log(`  ${t.stdout || t.stderr}`);
    const noToken = await env.inHost(['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', `http://${env.tcp.address}/api/v1/vms/web/proxy/hello`]);
    console.log(`  (the same over TCP without the token: ${noToken.stdout})`);

    for (const [what, url] of [
      ['allowed', `http://${ALLOWED_NAME}/`],
      ['denied', `http://${DENIED_NAME}/`],
    ] as const) {
      step(`The workload fetches ${url} (${what} by the plugin's allowlist)`);
      const r = await env.api('GET', `/api/v1/vms/web/proxy/fetch?url=${encodeURIComponent(url)}`);
      console.log(`  ${r.text}`);
    }

    step('What a user would type next');
    console.log(`  volar vms logs web --follow       # serial console and workload output
  volar vms get web --json          # state, address, tap, CID
  curl --unix-socket /run/volant/volantd.sock http://localhost/api/v1/vms/web/proxy/hello
  curl -H "Authorization: Bearer $(cat /var/lib/volant/api-token)" http://127.0.0.1:8080/api/v1/vms/web/proxy/hello
  volar debug ipam                  # the address pool and its leases
  volar vms delete web --force
  (docs/security.md: the token, the socket, and what each network mode lets a VM reach)`);
    const del = await env.volar(['vms', 'delete', 'web', '--force']);
    if (del.code !== 0) throw new Error(`vms delete failed: ${del.stderr}`);
    return 0;
  } finally {
    step('Cleaning up (VMs, namespaces, bridge, taps, files)');
    await env.dispose();
  }
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(`\nvolant demo: ${(e as Error).message}`);
    process.exit(1);
  },
);
