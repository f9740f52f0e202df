/**
 * `volar vms create|list|get|delete|start|stop|logs`: VM life cycle through volantd's API.
 * Human tables by default; the global `--json` prints the API's JSON for scripts. `create` and
 * `start` show the VM's progress from the events feed on stderr while they wait.
 */

import { setTimeout as sleep } from 'node:timers/promises';
import type { Command } from 'commander';
import { VolantError } from '../../../shared/errors.js';
import type { CreateVmRequest } from '../../../shared/schema/vm-config.js';
import { LogLineReader } from '../../api/log-lines.js';
import type { VmView } from '../../api/schemas.js';
import { type ApiClient, clientFor, formatTable } from '../client.js';
import { emit, jsonMode, note } from '../output.js';
import { describeVmEvent, followVmEvents } from '../progress.js';

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

/**
 * The answer to create/start can overtake the VM's last event on the feed (both leave volantd
 * at once); the progress waits this long at most for the event matching the answer's state.
 */
export const FINAL_EVENT_GRACE_MS = 2000;

/** Prints progress for `vm` while `work` runs: state changes and boot phases from /api/v1/events. */
async function withProgress(cmd: Command, client: ApiClient, vm: string, work: () => Promise<VmView>): Promise<VmView> {
  // Best effort: without the feed (an older volantd) the command still works, silently.
  const feed = await client.events().catch(() => undefined);
  const seen = new Set<string>();
  let wake = (): void => undefined;
  // A broken feed only ends the progress display; the command's own answer decides the outcome.
  const done = feed
    ? followVmEvents(feed, vm, (e) => {
        note(cmd, `${vm}: ${describeVmEvent(e)}`, e);
        if (e.type === 'vm.state' && e.state) seen.add(e.state);
        wake();
      }).catch(() => undefined)
    : Promise.resolve();
  try {
    const result = await work();
    if (feed && !seen.has(result.state)) {
      const grace = new AbortController();
      const shown = new Promise<void>((resolve) => {
        wake = () => seen.has(result.state) && resolve();
      });
      await Promise.race([shown, done, sleep(FINAL_EVENT_GRACE_MS, undefined, { signal: grace.signal }).catch(() => undefined)]);
      grace.abort();
    }
    return result;
  } finally {
    feed?.destroy();
    await done;
  }
}

export function register(program: Command): void {
  const vms = program.command('vms').description('create, inspect and control VMs');

  vms
    .command('create')
    .description('create a VM and wait until its agent answers, showing its state changes and boot phases (on stderr)')
    .argument('<name>', 'VM name: 1-63 letters, digits, - or _')
    .requiredOption('--plugin <plugin>', 'installed plugin to run')
    .option('--network <mode>', `network mode: ${MODES.join(' | ')} (default: the plugin's, else bridged)`)
    .option('--ip <address>', 'explicit IPv4 address from the pool (bridged)')
    .option('--cpus <n>', 'vCPUs')
    .option('--memory <MiB>', 'memory in MiB')
    .option('--env <K=V>', 'environment for the workload (repeatable)', collect, [])
    .option('--no-wait', 'return as soon as volantd has recorded the VM (state creating); follow it with `vms get`')
    .action(async (name: string, o: { plugin: string; network?: string; ip?: string; cpus?: string; memory?: string; env: string[]; wait: boolean }, cmd: Command) => {
      const req = createRequest(name, o);
      const client = clientFor(cmd);
      const vm = o.wait ? await withProgress(cmd, client, name, () => client.createVm(req)) : await client.createVm(req, { wait: false });
      emit(cmd, vm, () => formatVm(vm));
    });

  vms
    .command('list')
    .description('list VMs')
    .action(async (_o: unknown, cmd: Command) => {
      const list = await clientFor(cmd).listVms();
      emit(cmd, list, () => formatVmTable(list));
    });

  vms
    .command('get')
    .description('show one VM')
    .argument('<name>')
    .action(async (name: string, _o: unknown, cmd: Command) => {
      const vm = await clientFor(cmd).getVm(name);
      emit(cmd, vm, () => formatVm(vm));
    });

  vms
    .command('delete')
    .description('delete a stopped or failed VM (--force: stop it first)')
    .argument('<name>')
    .option('--force', 'stop a running VM first')
    .action(async (name: string, o: { force?: boolean }, cmd: Command) => {
      await clientFor(cmd).deleteVm(name, o.force === true);
      emit(cmd, { deleted: name }, () => `deleted ${name}`);
    });

  for (const verb of ['start', 'stop'] as const) {
    vms
      .command(verb)
      .description(verb === 'start' ? 'start a stopped or failed VM, showing its boot phases (on stderr)' : 'stop a running VM (graceful, then forced)')
      .argument('<name>')
      .action(async (name: string, _o: unknown, cmd: Command) => {
        const c = clientFor(cmd);
        const vm = verb === 'start' ? await withProgress(cmd, c, name, () => c.startVm(name)) : await c.stopVm(name);
        emit(cmd, vm, () => `${vm.name} ${vm.state}`);
      });
  }

  vms
    .command('logs')
    .description('serial console and workload logs (--json: one {"source","line"} object per line)')
    .argument('<name>')
    .option('-f, --follow', 'keep streaming')
    .action(async (name: string, o: { follow?: boolean }, cmd: Command) => {
      const body = await clientFor(cmd).logs(name, o.follow === true);
      if (!jsonMode(cmd)) {
        for await (const chunk of body) process.stdout.write(chunk as Buffer);
        return;
      }
      const lines = new LogLineReader();
      body.setEncoding('utf8');
      for await (const chunk of body) for (const l of lines.push(chunk as string)) process.stdout.write(`${JSON.stringify(l)}\n`);
      for (const l of lines.flush()) process.stdout.write(`${JSON.stringify(l)}\n`);
    });
}
