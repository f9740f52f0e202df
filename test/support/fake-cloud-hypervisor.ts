/**
 * A TEST DOUBLE for Cloud Hypervisor, which cannot run on the test machines (no usable KVM).
 * It speaks the documented REST API (shared/reference/cloud-hypervisor-openapi.yaml, v0.3.0) on
 * `--api-socket path=P` the way the real VMM does, so the real launcher code runs against it:
 *
 *   GET  vmm.ping     → 200 VmmPingResponse
 *   PUT  vm.create    → 204; 400 when the body does not validate against `VmConfig` (checked
 *                       with additionalProperties closed, i.e. stricter than the spec, so a
 *                       misspelled key fails) or a payload file is missing; 409-ish 500 if a VM exists
 *   PUT  vm.boot      → 204; 404 before vm.create. Writes a boot line to the serial file
 *                       (serial.mode File) and listens on vsock.socket (hybrid vsock: it answers
 *                       nothing, as a guest with no listener would)
 *   GET  vm.info      → 200 VmInfo { config, state }; 404 before vm.create
 *   PUT  vm.shutdown  → 204; state Shutdown, the VMM process stays up (as in the real one)
 *   PUT  vmm.shutdown → 204, then the process exits 0
 * `--event-monitor path=E` gets one JSON event per line. SIGTERM exits 0.
 * Guest actions a test cannot cause without a guest arrive as signals: SIGUSR1 = the guest
 * rebooted (like CH: event `vm/rebooting`, the VM restarts in place, the process stays up);
 * SIGUSR2 = the guest powered off (like CH: events `vm/shutdown`, then the process exits 0).
 * VOLANT_FAKE_CH_REFUSE_CREATE=<message> makes vm.create answer 500 with that message, as CH
 * does when, say, the tap cannot be opened.
 * With VOLANT_FAKE_CH_WEDGED=1 in its environment it plays a hung VMM: the shutdown calls never
 * answer and SIGTERM is ignored, so only SIGKILL ends it.
 *
 * Run as `node --import tsx test/support/fake-cloud-hypervisor.ts --api-socket path=...`;
 * `writeFakeCloudHypervisorBinary(dir)` writes an executable wrapper that does exactly that.
 */

import { appendFileSync, chmodSync, existsSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type Server } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Ajv, type ValidateFunction } from 'ajv';
import { parse as parseYaml } from 'yaml';

const HERE = dirname(fileURLToPath(import.meta.url));
/** The reference copy handed to the project (beside the repository), when present. */
export const CH_OPENAPI_PATH = resolve(HERE, '..', '..', '..', 'shared', 'reference', 'cloud-hypervisor-openapi.yaml');
/** The same spec (v0.3.0) kept in the repository, so a clone without the reference folder tests too. */
const CH_OPENAPI_FIXTURE = resolve(HERE, '..', 'fixtures', 'cloud-hypervisor-openapi.yaml');
const OPENAPI_CANDIDATES = [process.env.VOLANT_CH_OPENAPI, CH_OPENAPI_PATH, CH_OPENAPI_FIXTURE];

const INT_RANGES: Record<string, [number, number]> = {
  int8: [-128, 127],
  int16: [-32768, 32767],
  uint8: [0, 255],
  uint16: [0, 65535],
  int32: [-(2 ** 31), 2 ** 31 - 1],
  uint32: [0, 2 ** 32 - 1],
  int64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  uint64: [0, Number.MAX_SAFE_INTEGER],
};

/** Sets `additionalProperties: false` on every object schema that lists properties and says nothing else. */
function closeObjects(node: unknown): void {
  if (Array.isArray(node)) {
    for (const item of node) closeObjects(item);
    return;
  }
  if (typeof node !== 'object' || node === null) return;
  const o = node as Record<string, unknown>;
  if (o.properties && o.additionalProperties === undefined) o.additionalProperties = false;
  for (const v of Object.values(o)) closeObjects(v);
}

/**
 * A validator for the spec's `VmConfig`, $refs resolved against the spec's own components.
 * `closed` rejects properties the spec does not name.
 */
export function loadVmConfigValidator(options: { closed?: boolean } = {}): ValidateFunction {
  const path = OPENAPI_CANDIDATES.find((p) => p !== undefined && existsSync(p));
  if (!path) throw new Error(`cloud-hypervisor OpenAPI spec not found (looked at ${OPENAPI_CANDIDATES.filter(Boolean).join(', ')})`);
  const spec = parseYaml(readFileSync(path, 'utf8')) as { components: { schemas: Record<string, unknown> } };
  if (options.closed) closeObjects(spec.components);
  const ajv = new Ajv({ strict: false, allErrors: true });
  for (const [name, [min, max]] of Object.entries(INT_RANGES)) {
    ajv.addFormat(name, { type: 'number', validate: (n: number) => Number.isInteger(n) && n >= min && n <= max });
  }
  return ajv.compile({ $ref: '#/components/schemas/VmConfig', components: spec.components });
}

/** Writes `<dir>/cloud-hypervisor`, an executable that runs this double with Node and tsx. */
export function writeFakeCloudHypervisorBinary(dir: string): string {
  const bin = join(dir, 'cloud-hypervisor');
  const tsx = import.meta.resolve('tsx');
  writeFileSync(bin, `#!/bin/sh\nexec '${process.execPath}' --import '${tsx}' '${fileURLToPath(import.meta.url)}' "$@"\n`);
  chmodSync(bin, 0o755);
  return bin;
}

type VmState = 'Created' | 'Running' | 'Shutdown';

/** The parts of a validated `VmConfig` the double acts on. */
interface BootedConfig {
  payload: { kernel?: string; initramfs?: string; cmdline?: string };
  serial?: { mode: string; file?: string };
  vsock?: { cid: number; socket: string };
  pmem?: { file: string; size?: number; discard_writes?: boolean }[];
  disks?: { path?: string; readonly?: boolean }[];
}

/** CH's own pmem checks (vmm/src/device_manager.rs): the file opens, and its size is 2 MiB aligned. */
function pmemProblem(cfg: BootedConfig): string | undefined {
  for (const p of cfg.pmem ?? []) {
    if (!existsSync(p.file)) return `Error creating VM: cannot open pmem file ${p.file}`;
    const size = p.size ?? statSync(p.file).size;
    if (size % (2 * 1024 * 1024) !== 0) return 'Error creating VM: PmemSizeNotAligned';
  }
  for (const d of cfg.disks ?? []) if (d.path && !existsSync(d.path)) return `Error creating VM: cannot open disk ${d.path}`;
  return undefined;
}

function optionPath(argv: string[], flag: string): string | undefined {
  const i = argv.indexOf(flag);
  const v = i >= 0 ? argv[i + 1] : undefined;
  if (v === undefined) return undefined;
  const kv = v.split(',').find((p) => p.startsWith('path='));
  return kv ? kv.slice('path='.length) : v;
}

function main(argv: string[]): void {
  const apiSocket = optionPath(argv, '--api-socket');
  if (!apiSocket) {
    process.stderr.write('fake-cloud-hypervisor: --api-socket path=... is required\n');
    process.exit(1);
  }
  const eventsPath = optionPath(argv, '--event-monitor');
  const validate = loadVmConfigValidator({ closed: true });
  let config: BootedConfig | undefined;
  let state: VmState | undefined;
  let vsockServer: Server | undefined;

  const event = (source: string, name: string): void => {
    if (eventsPath) appendFileSync(eventsPath, `${JSON.stringify({ timestamp: { secs: Math.floor(Date.now() / 1000), nanos: 0 }, source, event: name, properties: null })}\n\n`);
  };
  const send = (res: ServerResponse, status: number, body?: unknown): void => {
    const text = body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body);
    res.writeHead(status, text && typeof body !== 'string' ? { 'Content-Type': 'application/json' } : {});
    res.end(text);
  };
  const exit = (): void => {
    vsockServer?.close();
    try {
      unlinkSync(apiSocket);
    } catch {}
    event('vmm', 'shutdown');
    process.exit(0);
  };

  const wedged = process.env.VOLANT_FAKE_CH_WEDGED === '1';
  const hang = (): void => {};
  const routes: Record<string, (body: unknown, res: ServerResponse) => void> = {
    'GET vmm.ping': (_b, res) => send(res, 200, { version: 'v48.0-volant-test-double', build_version: 'fake', pid: process.pid, features: [] }),
    'PUT vm.create': (body, res) => {
      if (config) return send(res, 500, 'Error creating VM: VM already created');
      if (process.env.VOLANT_FAKE_CH_REFUSE_CREATE) return send(res, 500, process.env.VOLANT_FAKE_CH_REFUSE_CREATE);
      if (!validate(body)) return send(res, 400, `Invalid VmConfig: ${JSON.stringify(validate.errors)}`);
      const cfg = body as BootedConfig;
      for (const f of ['kernel', 'initramfs'] as const) {
        const file = cfg.payload[f];
        if (file !== undefined && !existsSync(file)) return send(res, 500, `Error creating VM: cannot open ${f} ${file}`);
      }
      const pmem = pmemProblem(cfg);
      if (pmem) return send(res, 500, pmem);
      config = cfg;
      state = 'Created';
      event('vm', 'created');
      send(res, 204);
    },
    'PUT vm.boot': (_b, res) => {
      if (!config) return send(res, 404, 'VM is not created');
      if (state === 'Running') return send(res, 500, 'VM is already running');
      // Like CH (console_devices.rs: File::create), the serial file is created afresh: truncated.
      if (config.serial?.mode === 'File' && config.serial.file) writeFileSync(config.serial.file, `fake-cloud-hypervisor: booting ${config.payload.kernel} cmdline: ${config.payload.cmdline ?? ''}\n`);
      const booted = (): void => {
        state = 'Running';
        event('vm', 'booted');
        send(res, 204);
      };
      if (!config.vsock) return booted();
      vsockServer = createNetServer((s) => s.destroy());
      vsockServer.listen(config.vsock.socket, booted);
    },
    'GET vm.info': (_b, res) => (config ? send(res, 200, { config, state }) : send(res, 404, 'VM is not created')),
    'PUT vm.shutdown': (_b, res) => {
      if (wedged) return hang();
      if (state !== 'Running') return send(res, 500, `VM is not running (state ${state ?? 'none'})`);
      vsockServer?.close();
      state = 'Shutdown';
      event('vm', 'shutdown');
      send(res, 204);
    },
    'PUT vmm.shutdown': (_b, res) => {
      if (wedged) return hang();
      res.on('finish', exit);
      send(res, 204);
    },
  };

  const server = createHttpServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = req.url ?? '';
      const route = routes[`${req.method} ${url.replace(/^\/api\/v1\//, '')}`];
      if (!url.startsWith('/api/v1/') || !route) return send(res, 404, 'Not found');
      let body: unknown;
      if (chunks.length > 0) {
        try {
          body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch (e) {
          return send(res, 400, `Invalid JSON: ${(e as Error).message}`);
        }
      }
      route(body, res);
    });
  });
  server.listen(apiSocket, () => event('vmm', 'starting'));
  process.on('SIGTERM', wedged ? hang : exit);
  process.on('SIGUSR1', () => {
    if (state !== 'Running') return;
    event('vm', 'rebooting');
    if (config?.serial?.mode === 'File' && config.serial.file) appendFileSync(config.serial.file, 'fake-cloud-hypervisor: guest reset, rebooting the VM\n');
    event('vm', 'rebooted');
  });
  process.on('SIGUSR2', () => {
    if (state !== 'Running') return;
    event('vm', 'shutdown');
    exit();
  });
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) main(process.argv.slice(2));
