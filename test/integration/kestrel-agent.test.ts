/**
 * kestrel as a real process (from source) on a Unix socket in front of a real workload server
 * (test/support/workload-server.ts). No AF_VSOCK here: the agent listens on unix: only.
 */

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { WebSocket } from 'ws';
import { type KestrelRun, startKestrel, waitForWorkloadState } from '../support/workload-kestrel.js';
import { PATTERN_CHUNK_BYTES, patternChunk } from '../support/workload-server.js';

const STREAM_BYTES = 100 * 1024 * 1024;
/**
 * kestrel's RSS may grow by this much while carrying 100 MiB each way; buffering the body would
 * need more than 100 MiB. (The growth that remains is V8 freeing 64 KiB read buffers lazily, not
 * data held: the backpressure test below shows kestrel stops reading when nobody drains.)
 */
const MAX_RSS_GROWTH_BYTES = 64 * 1024 * 1024;
/**
 * With the reader stalled, this much at most may disappear into buffers, nearly all of it kernel
 * socket buffers (loopback TCP autotunes to several MiB per direction, between kestrel and the
 * workload, both ways); anything near 100 MiB would mean someone soaks the body up.
 */
const MAX_IN_FLIGHT_BYTES = 40 * 1024 * 1024;

function rssBytes(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'));
  return Number(m![1]) * 1024;
}

describe('kestrel agent in front of a real workload', () => {
  let k: KestrelRun;
  before(async () => {
    k = await startKestrel({ name: 'agent' });
    await waitForWorkloadState(k, 'running');
  });
  after(async () => {
    await k?.stop();
  });

  test('/healthz reports agent and workload state', async () => {
    const r = await k.get('/healthz');
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'application/json');
    const h = JSON.parse(r.body);
    assert.equal(h.status, 'ok');
    assert.equal(h.mode, 'vsock');
    assert.equal(h.workload.state, 'running');
    assert.equal(typeof h.workload.pid, 'number');
    assert.deepEqual(h.egress, { enabled: false, upstream: null });
    assert.deepEqual(h.vsock, { listening: false });
    assert.deepEqual(h.network, { eth0: null });
  });

  test('requests reach the workload with hop-by-hop headers dropped and X-Forwarded-* set', async () => {
    const res = await new Promise<{ headers: Record<string, unknown>; body: string }>((resolve, reject) => {
      const req = request(
        { socketPath: k.socket, path: '/headers', headers: { host: 'vm.test', connection: 'keep-alive, x-secret', 'x-secret': 's', 'keep-alive': '5', 'proxy-authorization': 'Basic eA==', 'x-end': 'e' } },
        (r) => {
          let body = '';
          r.on('data', (c) => {
            body += c;
          });
          r.on('end', () => resolve({ headers: r.headers, body }));
        },
      );
      req.on('error', reject);
      req.end();
    });
    const seen = JSON.parse(res.body);
    assert.equal(seen['x-end'], 'e');
    for (const h of ['x-secret', 'keep-alive', 'proxy-authorization']) assert.equal(seen[h], undefined, h);
    assert.equal(seen['x-forwarded-proto'], 'http');
    assert.equal(seen['x-forwarded-host'], 'vm.test');
    assert.equal(seen.host, `127.0.0.1:${k.workloadPort}`);
    assert.equal(res.headers['x-hop-response'], undefined, 'a header the workload named in Connection must not come back');
  });

  test('an upload with Expect: 100-continue (curl does this above 1 MiB) goes through', async () => {
    const body = Buffer.alloc(3 * 1024 * 1024, 7);
    const result = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = request({ socketPath: k.socket, method: 'POST', path: '/sink', headers: { host: 'vm.test', expect: '100-continue', 'content-length': body.length } }, (res) => {
        let text = '';
        res.on('data', (c) => {
          text += c;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      });
      req.on('continue', () => req.end(body));
      req.on('error', reject);
    });
    assert.equal(result.status, 200, result.text);
    assert.equal(JSON.parse(result.text).bytes, body.length);
  });

  const hostile: [string, string, RegExp][] = [
    ['Content-Length with Transfer-Encoding (smuggling)', 'POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /crash HTTP/1.1\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['two different Content-Length headers', 'POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd', /^HTTP\/1\.1 400 /],
    ['absolute-form request (kestrel is no open proxy)', 'GET http://169.254.169.254/latest/meta-data HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n', /^HTTP\/1\.1 400 [\s\S]*"code":"INVALID_ARGUMENT"[\s\S]*origin-form/],
  ];
  for (const [name, bytes, re] of hostile) {
    test(`refuses ${name} without reaching the workload`, async () => {
      const pidBefore = JSON.parse((await k.get('/healthz')).body).workload.pid;
      const answer = await new Promise<string>((resolve, reject) => {
        const s = connect(k.socket);
        let out = '';
        s.on('data', (c) => {
          out += c;
        });
        s.on('close', () => resolve(out));
        s.on('error', reject);
        s.write(bytes);
        setTimeout(() => s.end(), 500);
      });
      assert.match(answer, re);
      const h = JSON.parse((await k.get('/healthz')).body);
      assert.equal(h.workload.pid, pidBefore, 'a smuggled /crash must not have reached the workload');
    });
  }

  test('unknown paths come back from the workload, not from kestrel', async () => {
    const r = await k.get('/nope');
    assert.equal(r.status, 404);
    assert.equal(r.body, 'not found');
  });

  test('100 MB streams both ways through /echo without kestrel buffering it', async (t) => {
    const pid = k.child.pid!;
    const rssBefore = rssBytes(pid, 'VmRSS');
    const chunk = patternChunk();
    const chunks = STREAM_BYTES / PATTERN_CHUNK_BYTES;
    const sent = createHash('sha256');
    for (let i = 0; i < chunks; i++) sent.update(chunk);
    const expected = sent.digest('hex');
    let peakRss = rssBefore;
    const sampler = setInterval(() => {
      peakRss = Math.max(peakRss, rssBytes(pid, 'VmRSS'));
    }, 50);
    try {
      const result = await new Promise<{ bytes: number; sha256: string }>((resolve, reject) => {
        const req = request({ socketPath: k.socket, method: 'POST', path: '/echo', headers: { host: 'vm.test', 'content-length': STREAM_BYTES } }, (res) => {
          const got = createHash('sha256');
          let bytes = 0;
          res.on('data', (c: Buffer) => {
            bytes += c.length;
            got.update(c);
          });
          res.on('end', () => resolve({ bytes, sha256: got.digest('hex') }));
          res.on('error', reject);
        });
        req.on('error', reject);
        let i = 0;
        const pump = (): void => {
          while (i < chunks) {
            i++;
            if (!req.write(chunk)) {
              req.once('drain', pump);
              return;
            }
          }
          req.end();
        };
        pump();
      });
      assert.equal(result.bytes, STREAM_BYTES);
      assert.equal(result.sha256, expected);
    } finally {
      clearInterval(sampler);
    }
    const growth = peakRss - rssBefore;
    t.diagnostic(`kestrel RSS ${(rssBefore / 1048576).toFixed(1)} MiB before, peak ${(peakRss / 1048576).toFixed(1)} MiB while carrying 100 MiB each way`);
    assert.ok(growth < MAX_RSS_GROWTH_BYTES, `kestrel RSS grew by ${(growth / 1048576).toFixed(1)} MiB while carrying 100 MiB`);
  });

  test('a client that stops reading stalls the upload: kestrel does not soak it up', async (t) => {
    const chunk = patternChunk();
    const accepted = await new Promise<number>((resolve, reject) => {
      const req = request({ socketPath: k.socket, method: 'POST', path: '/echo', headers: { host: 'vm.test', 'content-length': STREAM_BYTES } });
      req.on('response', () => {
        // Deliberately never read the echoed body.
      });
      req.on('error', () => undefined);
      let written = 0;
      let stall: NodeJS.Timeout | undefined;
      const pump = (): void => {
        clearTimeout(stall);
        while (written < STREAM_BYTES) {
          written += chunk.length;
          if (!req.write(chunk)) {
            stall = setTimeout(() => {
              req.destroy();
              resolve(written);
            }, 1500);
            req.once('drain', pump);
            return;
          }
        }
        reject(new Error('all 100 MiB were accepted although nobody read the echo'));
      };
      pump();
    });
    t.diagnostic(`upload stalled after ${(accepted / 1048576).toFixed(1)} MiB with the reader stopped`);
    assert.ok(accepted < MAX_IN_FLIGHT_BYTES, `${accepted} bytes accepted with the reader stopped`);
    assert.equal((await k.get('/healthz')).status, 200, 'kestrel still answers after the aborted stream');
  });

  test('WebSocket upgrade echoes text and binary frames', async () => {
    const ws = new WebSocket(`ws+unix://${k.socket}:/ws`);
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    const replies: { data: string; binary: boolean }[] = [];
    const done = new Promise<void>((resolve) => {
      ws.on('message', (data, binary) => {
        replies.push({ data: Buffer.from(data as Buffer).toString('hex'), binary });
        if (replies.length === 2) resolve();
      });
    });
    ws.send('hello kestrel');
    ws.send(Buffer.from([0, 1, 2, 255]));
    await done;
    ws.close();
    assert.deepEqual(replies, [
      { data: Buffer.from('hello kestrel').toString('hex'), binary: false },
      { data: '000102ff', binary: true },
    ]);
  });

  test('/v1/logs?follow=1 streams new stdout and stderr lines', async () => {
    const marker = `marker-${process.pid}-${Date.now()}`;
    const seen = await new Promise<string>((resolve, reject) => {
      const req = request({ socketPath: k.socket, path: '/v1/logs?follow=1' }, (res) => {
        assert.equal(res.statusCode, 200);
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          text += c;
          if (text.includes(`err:${marker}`) && text.includes(`\n${marker}\n`)) {
            req.destroy();
            resolve(text);
          }
        });
        setTimeout(() => void k.get(`/log?msg=${marker}`), 100);
      });
      req.on('error', reject);
      req.end();
      setTimeout(() => reject(new Error('no log lines within 10 s')), 10_000).unref();
    });
    assert.match(seen, new RegExp(marker));
    const plain = await k.get('/v1/logs');
    assert.match(plain.body, new RegExp(`err:${marker}`));
  });

  test('a crashed workload gives 502 JSON saying why, then recovers after the restart', async () => {
    const before = JSON.parse((await k.get('/healthz')).body).workload;
    assert.equal((await k.get('/crash')).body, 'bye');
    const down = await k.get('/anything');
    assert.ok(down.status === 502 || down.status === 503, `status ${down.status}: ${down.body}`);
    assert.match(String(down.headers['content-type']), /^application\/json/);
    const err = JSON.parse(down.body).error;
    assert.equal(err.code, 'UPSTREAM_UNREACHABLE');
    assert.match(err.message, /workload/);
    const h = (await waitForWorkloadState(k, 'running', before.restarts + 1)) as { workload: { restarts: number; last_exit: { code: number }; pid: number } };
    assert.equal(h.workload.restarts, before.restarts + 1);
    assert.equal(h.workload.last_exit.code, 3);
    assert.notEqual(h.workload.pid, before.pid);
    const ok = await k.get('/env?name=PORT');
    assert.equal(ok.status, 200);
    assert.equal(ok.body, String(k.workloadPort));
  });
});
