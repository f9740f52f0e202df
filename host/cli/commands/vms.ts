/**
 * `volar vms create|list|get|delete|start|stop|logs`: VM life cycle through volantd's API.
 * Human tables by default; `--json` prints the API's JSON for scripts.
 */

import type { Command } from 'commander';
import { VolantError } from '../../../shared/errors.js';
import type { CreateVmRequest } from '../../../shared/schema/vm-config.js';
import type { VmView } from '../../api/schemas.js';
import { clientFor, formatTable, withApiOptions } from '../client.js';

const MODES = ['bridged', 'dhcp', 'vsock'] as const;

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** `K=V` pairs into an env object; `K` alone or `=V` is an error naming the argument. */
export function parseEnvPairs(pairs: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const p of pairs) {
    const i = p.indexOf('=');
    if (i <= 0) throw new VolantError('INVALID_ARGUMENT', `--env ${JSON.stringify(p)}: use NAME=VALUE`);
    env[p.slice(0, i)] = p.slice(i + 1);
  }
  return env;
}

/** A whole number stays a number; anything else is passed on so the API names the problem. */
function intOrRaw(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  return /^\d{1,9}$/.test(v) ? Number(v) : (v as unknown as number);
}

export function createRequest(name: string, o: { plugin: string; network?: string; ip?: string; cpus?: string; memory?: string; env?: string[] }): CreateVmRequest {
  if (o.network !== undefined && !MODES.includes(o.network as (typeof MODES)[number])) {
    throw new VolantError('INVALID_ARGUMENT', `--network ${JSON.stringify(o.network)}: use ${MODES.join(', ')}`);
  }
  const req: CreateVmRequest = { name, plugin: o.plugin };
  if (o.network) req.network = { mode: o.network as (typeof MODES)[number] };
  if (o.ip) req.ip = o.ip;
  if (o.cpus !== undefined) req.cpus = intOrRaw(o.cpus);
  if (o.memory !== undefined) req.memory_mb = intOrRaw(o.memory);
  if (o.env && o.env.length > 0) req.env = parseEnvPairs(o.env);
  return req;
}

export function formatVmTable(vms: VmView[]): string {
  if (vms.length === 0) return 'no VMs';
  return formatTable(
    ['NAME', 'PLUGIN', 'STATE', 'MODE', 'IP', 'CID', 'PID'],
    vms.map((v) => [v.name, v.plugin, v.state, v.network_mode, v.ip ?? '-', String(v.cid ?? '-'), String(v.pid ?? '-')]),
  );
}

export function formatVm(v: VmView): string {
  const rows: [string, string | number | undefined][] = [
    ['name', v.name],
    ['plugin', v.plugin],
    ['state', v.state],
    ['error', v.error],
    ['network', v.network_mode],
    ['ip', v.ip],
    ['mac', v.mac],
    ['tap', v.tap],
    ['vsock cid', v.cid],
    ['vmm', v.vmm],
    ['pid', v.pid],
    ['cpus', v.cpus],
    ['memory', v.memory_mb === undefined ? undefined : `${v.memory_mb} MiB`],
    ['created', v.created_at],
    ['updated', v.updated_at],
  ];
  return rows
    .filter(([, val]) => val !== undefined)
    .map(([k, val]) => `${k.padEnd(10)} ${val}`)
    .join('\n');
}

const out = (text: string): void => {
  process.stdout.write(`${text}\n`);
};

export function register(program: Command): void {
  const vms = program.command('vms').description('create, inspect and control VMs');

  withApiOptions(vms.command('create'))
    .description('create a VM and wait until its agent answers')
    .argument('<name>', 'VM name: 1-63 letters, digits, - or _')
    .requiredOption('--plugin <plugin>', 'installed plugin to run')
    .option('--network <mode>', `network mode: ${MODES.join(' | ')} (default: the plugin's, else bridged)`)
    .option('--ip <address>', 'explicit IPv4 address from the pool (bridged)')
    .option('--cpus <n>', 'vCPUs')
    .option('--memory <MiB>', 'memory in MiB')
    .option('--env <K=V>', 'environment for the workload (repeatable)', collect, [])
    .option('--json', 'print the VM as JSON')
    .action(async (name: string, o: { plugin: string; network?: string; ip?: string; cpus?: string; memory?: string; env: string[]; json?: boolean }, cmd: Command) => {
      const vm = await clientFor(cmd).createVm(createRequest(name, o));
      out(o.json ? JSON.stringify(vm, null, 2) : formatVm(vm));
    });

  withApiOptions(vms.command('list'))
    .description('list VMs')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const list = await clientFor(cmd).listVms();
      out(o.json ? JSON.stringify(list, null, 2) : formatVmTable(list));
    });

  withApiOptions(vms.command('get'))
    .description('show one VM')
    .argument('<name>')
    .option('--json', 'print JSON')
    .action(async (name: string, o: { json?: boolean }, cmd: Command) => {
      const vm = await clientFor(cmd).getVm(name);
      out(o.json ? JSON.stringify(vm, null, 2) : formatVm(vm));
    });

  withApiOptions(vms.command('delete'))
    .description('delete a stopped or failed VM (--force: stop it first)')
    .argument('<name>')
    .option('--force', 'stop a running VM first')
    .action(async (name: string, o: { force?: boolean }, cmd: Command) => {
      await clientFor(cmd).deleteVm(name, o.force === true);
      out(`deleted ${name}`);
    });

  for (const verb of ['start', 'stop'] as const) {
    withApiOptions(vms.command(verb))
      .description(verb === 'start' ? 'start a stopped or failed VM' : 'stop a running VM (graceful, then forced)')
      .argument('<name>')
      .option('--json', 'print the VM as JSON')
      .action(async (name: string, o: { json?: boolean }, cmd: Command) => {
        const c = clientFor(cmd);
        const vm = verb === 'start' ? await c.startVm(name) : await c.stopVm(name);
        out(o.json ? JSON.stringify(vm, null, 2) : `${vm.name} ${vm.state}`);
      });
  }

  withApiOptions(vms.command('logs'))
    .description('serial console and workload logs')
    .argument('<name>')
    .option('-f, --follow', 'keep streaming')
    .action(async (name: string, o: { follow?: boolean }, cmd: Command) => {
      const body = await clientFor(cmd).logs(name, o.follow === true);
      for await (const chunk of body) process.stdout.write(chunk as Buffer);
    });
}
