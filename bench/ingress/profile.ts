/**
 * Where the ingress's CPU goes per request: runs the upstream and the ingress role (under
 * `node --cpu-prof`), loads the host hop with wrk, stops the ingress (SIGTERM, so that the profile
 * is written) and prints the self time of the profile by category (who owns the code: Node's HTTP
 * server, undici, our ingress, the event loop, GC) and the top frames, both as µs per request.
 *
 * Usage: node --import tsx bench/ingress/profile.ts [--duration S] [--top N]
 */

import { readdirSync, readFileSync } from 'node:fs';
import { integerFlag } from '../support/args.js';
import { BENCH_AUTH_HEADER, benchDir, startRole, stopChild, wrk } from '../support/wrk.js';
import { join } from 'node:path';

const argv = process.argv.slice(2);
const DURATION_S = integerFlag(argv, '--duration', 10, 600);
const TOP = integerFlag(argv, '--top', 25, 200);

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Who owns a frame, by its script. */
function category(url: string, fn: string): string {
  if (fn === '(garbage collector)') return 'GC';
  if (fn === '(program)' || fn === '(idle)') return fn;
  if (url === '') return 'native (V8 builtins, syscalls)';
  if (url.includes('/undici/')) return 'undici';
  if (url.includes('/host/ingress/')) return 'ours: host/ingress';
  if (url.includes('/shared/') || url.includes('/host/')) return 'ours: shared/host';
  if (/node:_http_server|node:_http_common|node:_http_outgoing|node:_http_incoming|node:http/.test(url)) return 'node: http server';
  if (/node:net|node:stream|node:internal\/streams|stream_base|node:internal\/net/.test(url)) return 'node: net/streams';
  if (/node:internal\/timers|node:timers/.test(url)) return 'node: timers';
  if (/node:internal\/process\/task_queues|async_hooks|node:events|node:internal\/process/.test(url)) return 'node: event loop/events';
  if (url.startsWith('node:')) return 'node: other';
  return 'other JS';
}

async function main(): Promise<void> {
  const dir = benchDir('profile');
  const upstream = await startRole(dir, 'upstream');
  const profDir = join(dir, 'prof');
  const ingress = await startRole(dir, 'ingress', [`tcp:127.0.0.1:${upstream.port as number}`], ['--cpu-prof', '--cpu-prof-dir', profDir]);
  const url = `http://127.0.0.1:${ingress.port as number}/api/v1/vms/bench/proxy/`;
  wrk(url, { durationS: 1, connections: 32, headers: [BENCH_AUTH_HEADER] });
  const r = wrk(url, { durationS: DURATION_S, connections: 32, pids: [ingress.pid], headers: [BENCH_AUTH_HEADER] });
  const total = r.requests;
  await stopChild(ingress.child);
  const file = readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'));
  if (file === undefined) throw new Error('no profile written');
  const prof = JSON.parse(readFileSync(join(profDir, file), 'utf8')) as Profile;
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  for (let i = 0; i < prof.samples.length; i++) self.set(prof.samples[i]!, (self.get(prof.samples[i]!) ?? 0) + (prof.timeDeltas[i] ?? 0));
  const byCat = new Map<string, number>();
  const byFrame = new Map<string, number>();
  let busy = 0;
  for (const [id, us] of self) {
    const { functionName, url: script, lineNumber } = byId.get(id)!.callFrame;
    if (functionName === '(idle)') continue;
    busy += us;
    const cat = category(script, functionName);
    byCat.set(cat, (byCat.get(cat) ?? 0) + us);
    const key = `${functionName || '(anonymous)'} ${script.replace(/^.*\/(node_modules|host|shared)\//, '$1/')}:${lineNumber + 1}`;
    byFrame.set(key, (byFrame.get(key) ?? 0) + us);
  }
  // The profile covers warm-up and load; per request over all requests served while profiling.
  const served = total;
  console.log(`ingress profile: wrk -t1 -c32 -d${DURATION_S}s, ${served} requests, ${r.rps.toFixed(0)} req/s, /proc CPU ${r.cpuUsPerReq.toFixed(1)} µs/req, profiled JS+native ${(busy / served).toFixed(1)} µs/req (busy samples, includes warm-up)`);
  console.log('category                          | µs/req | share');
  for (const [cat, us] of [...byCat].sort((a, b) => b[1] - a[1])) console.log(`${cat.padEnd(34)}| ${(us / served).toFixed(2).padStart(6)} | ${((100 * us) / busy).toFixed(1)}%`);
  console.log(`top ${TOP} frames (self time)`);
  for (const [frame, us] of [...byFrame].sort((a, b) => b[1] - a[1]).slice(0, TOP)) console.log(`${(us / served).toFixed(2).padStart(6)} µs  ${((100 * us) / busy).toFixed(1).padStart(5)}%  ${frame}`);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
