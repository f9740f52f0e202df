/**
 * `GET /api/v1/vms/:name/logs[?follow=1]`: the serial console log (kernel + kestrel lines) then
 * the workload's lines from kestrel's `/v1/logs`, as text/plain, each line prefixed with its
 * source (`serial| `, `workload| `; the format is log-lines.ts). Without follow the answer ends after what exists now (the
 * last MAX_SERIAL_TAIL_BYTES of the serial log); with follow it stays open, polling the file and
 * streaming kestrel's follow stream, until the client goes away or the VM stops.
 */

import { open, stat } from 'node:fs/promises';
import { PassThrough } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { ApiContext } from '../context.js';
import { LinePrefixer, logPrefix } from '../log-lines.js';
import { LogsQuery, VmNameParams } from '../schemas.js';

export const MAX_SERIAL_TAIL_BYTES = 1024 * 1024;
export const SERIAL_POLL_INTERVAL_MS = 250;
export const WORKLOAD_LOG_TIMEOUT_MS = 5000;

async function readFrom(path: string, offset: number, max: number): Promise<{ text: string; next: number }> {
  let fh: Awaited<ReturnType<typeof open>> | undefined;
  try {
    fh = await open(path, 'r');
    const size = (await fh.stat()).size;
    if (size < offset) offset = 0;
    const start = Math.max(offset, size - max);
    const buf = Buffer.alloc(size - start);
    if (buf.length > 0) await fh.read(buf, 0, buf.length, start);
    return { text: buf.toString('utf8'), next: size };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { text: '', next: 0 };
    throw e;
  } finally {
    await fh?.close();
  }
}

export function logRoutes(base: FastifyInstance, ctx: ApiContext): void {
  const app = base.withTypeProvider<TypeBoxTypeProvider>();
  app.get(
    '/api/v1/vms/:name/logs',
    { schema: { tags: ['vms'], summary: 'serial console and workload logs, text/plain', params: VmNameParams, querystring: LogsQuery } },
    async (req, reply) => {
      const name = req.params.name;
      const o = ctx.orchestrator;
      o.get(name);
      const follow = req.query.follow === '1' || req.query.follow === 'true';
      const out = new PassThrough();
      const abort = new AbortController();
      let closed = false;
      const finish = (): void => {
        if (closed) return;
        closed = true;
        abort.abort();
        out.end();
      };
      req.raw.once('close', finish);
      const serialPath = o.serialLogPath(name);
      const serial = new LinePrefixer(logPrefix('serial'));
      const first = await readFrom(serialPath, 0, MAX_SERIAL_TAIL_BYTES);
      out.write(serial.push(first.text));
      let offset = first.next;

      const workload = new LinePrefixer(logPrefix('workload'));
      const agent = o.agentClient(name);
      const workloadDone = agent
        ? agent.request(follow ? '/v1/logs?follow=1' : '/v1/logs', { timeoutMs: WORKLOAD_LOG_TIMEOUT_MS, signal: abort.signal }).then(
            (res) =>
              new Promise<void>((resolve) => {
                res.body.setEncoding('utf8');
                res.body.on('data', (c: string) => !closed && out.write(workload.push(c)));
                res.body.on('end', resolve);
                res.body.on('error', () => resolve());
                res.body.on('close', resolve);
              }),
            () => undefined,
          )
        : Promise.resolve();

      if (!follow) {
        void workloadDone.then(() => {
          if (!closed) out.write(serial.flush() + workload.flush());
          finish();
        });
      } else {
        const timer = setInterval(async () => {
          try {
            const vm = o.get(name);
            if ((await stat(serialPath).catch(() => undefined)) !== undefined) {
              const r = await readFrom(serialPath, offset, MAX_SERIAL_TAIL_BYTES);
              offset = r.next;
              if (r.text && !closed) out.write(serial.push(r.text));
            }
            if (vm.state === 'stopped' || vm.state === 'failed') finish();
          } catch {
            finish();
          }
        }, SERIAL_POLL_INTERVAL_MS);
        out.once('close', () => clearInterval(timer));
        out.once('end', () => clearInterval(timer));
      }
      reply.type('text/plain; charset=utf-8');
      reply.header('cache-control', 'no-store');
      return reply.send(out);
    },
  );
}
