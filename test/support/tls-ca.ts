/**
 * A throwaway certificate authority for tests, made with the openssl CLI: one CA and leaf
 * certificates for the names (and IPs) a test serves, so upstream TLS is verified for real
 * (chain and name) against a trust anchor the test passes explicitly. Keys are EC P-256 to keep
 * generation fast. Files live in a private temp dir that `cleanup()` removes.
 */

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isIP } from 'node:net';

export interface LeafCert {
  cert: string;
  key: string;
}

export interface TestCa {
  /** PEM of the CA certificate: the trust anchor to hand to clients. */
  ca: string;
  issue(names: string[]): LeafCert;
  cleanup(): void;
}

const DAYS = '2';

export function createTestCa(label = 'volant-test'): TestCa {
  const dir = mkdtempSync(join(tmpdir(), `volant-egress-ca-${process.pid}-`));
  const run = (args: string[]): void => {
    execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  };
  run(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', DAYS, '-subj', `/CN=${label} CA`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  let serial = 1;
  return {
    ca: readFileSync(join(dir, 'ca.pem'), 'utf8'),
    issue(names: string[]): LeafCert {
      const n = serial++;
      const san = names.map((x) => (isIP(x) ? `IP:${x}` : `DNS:${x}`)).join(',');
      writeFileSync(join(dir, `leaf${n}.ext`), `subjectAltName=${san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
      run(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `leaf${n}.key`, '-out', `leaf${n}.csr`, '-subj', `/CN=${names[0]}`]);
      run(['x509', '-req', '-in', `leaf${n}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', String(1000 + n), '-days', DAYS, '-out', `leaf${n}.pem`, '-extfile', `leaf${n}.ext`]);
      return { cert: readFileSync(join(dir, `leaf${n}.pem`), 'utf8'), key: readFileSync(join(dir, `leaf${n}.key`), 'utf8') };
    },
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}
