/**
 * A minimal QMP client (QEMU Machine Protocol, docs/interop/qmp-spec.rst): JSON objects, one per
 * line, over the Unix socket QEMU opened with `-qmp unix:PATH,server=on,wait=off`.
 *
 *   server → {"QMP": {...}}                 greeting
 *   client → {"execute": "qmp_capabilities"} leave capabilities-negotiation mode
 *   client → {"execute": CMD}               each answered by {"return": ...} or {"error": {class, desc}}
 *
 * Asynchronous `{"event": ...}` lines may arrive at any time and are skipped. After `quit`
 * QEMU may close the socket before answering; that counts as done.
 */

import { connect } from 'node:net';
import { VolantError } from '../../shared/errors.js';

/** Greeting plus all commands of one session. */
export const QMP_TIMEOUT_MS = 5000;
/** A QMP line longer than this is not a reply we asked for. */
const MAX_QMP_LINE_BYTES = 1 << 20;

export function qmpExecute(socketPath: string, commands: readonly string[], timeoutMs = QMP_TIMEOUT_MS): Promise<void> {
  const queue = ['qmp_capabilities', ...commands];
  return new Promise((resolve, reject) => {
    const sock = connect({ path: socketPath });
    let buffered = '';
    let greeted = false;
    let pending: string | undefined;
    let settled = false;
    const finish = (err?: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve();
    };
    const timer = setTimeout(() => finish(new VolantError('TIMEOUT', `QMP ${socketPath}: no answer within ${timeoutMs} ms (waiting for ${pending ?? 'greeting'})`)), timeoutMs);
    const sendNext = () => {
      pending = queue.shift();
      if (pending === undefined) return finish();
      sock.write(`${JSON.stringify({ execute: pending })}\n`);
    };
    const onMessage = (msg: Record<string, unknown>) => {
      if (!greeted) {
        if (!('QMP' in msg)) return finish(new VolantError('PROTOCOL_ERROR', `QMP ${socketPath}: expected a greeting, got ${JSON.stringify(msg).slice(0, 200)}`));
        greeted = true;
        return sendNext();
      }
      if ('event' in msg) return;
      if ('error' in msg) {
        const e = msg.error as { class?: string; desc?: string };
        return finish(new VolantError('VMM_FAILED', `QMP ${pending}: ${e.class ?? 'Error'}: ${e.desc ?? 'failed'}`));
      }
      if ('return' in msg) sendNext();
    };
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buffered += chunk;
      if (buffered.length > MAX_QMP_LINE_BYTES) return finish(new VolantError('PROTOCOL_ERROR', `QMP ${socketPath}: line longer than ${MAX_QMP_LINE_BYTES} bytes`));
      for (let nl = buffered.indexOf('\n'); nl >= 0 && !settled; nl = buffered.indexOf('\n')) {
        const line = buffered.slice(0, nl).trim();
        buffered = buffered.slice(nl + 1);
        if (line === '') continue;
        let msg: unknown;
        try {
          msg = JSON.parse(line);
        } catch {
          return finish(new VolantError('PROTOCOL_ERROR', `QMP ${socketPath}: not JSON: ${line.slice(0, 200)}`));
        }
        if (typeof msg === 'object' && msg !== null) onMessage(msg as Record<string, unknown>);
      }
    });
    sock.on('error', (e) => finish(new VolantError('VMM_FAILED', `QMP ${socketPath}: ${e.message}`, undefined, { cause: e })));
    sock.on('close', () => {
      if (pending === 'quit' && queue.length === 0) finish();
      else finish(new VolantError('VMM_FAILED', `QMP ${socketPath}: connection closed while waiting for ${pending ?? 'greeting'}`));
    });
  });
}
