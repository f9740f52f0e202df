/**
 * CONNECT tunnels: `CONNECT host:port`, admitted (admission.ts), then one of two shapes, chosen
 * by the rule that admitted it (decide.ts has the policy):
 *
 *   TLS only (a rule without a port):
 *     200 ─▶ read the ClientHello (≤ CLIENT_HELLO_TIMEOUT_MS) ─▶ SNI checked ─▶ dial ─▶ relay
 *   any protocol (a rule that names the port):
 *     dial ─▶ 200 ─▶ relay the server at once ─▶ first client bytes checked (a ClientHello must
 *     carry the right SNI; anything else passes) ─▶ relay
 *
 * What must hold:
 *  - under a TLS-only rule, the target is never dialled before the ClientHello was read and
 *    allowed: a refused tunnel (no SNI, wrong SNI, not TLS, no hello in time) gives the target no
 *    TCP handshake, and the answer to CONNECT (200) is the same whether or not the target would
 *    have accepted, so a VM cannot scan allow-listed hosts. A dial that fails after the hello
 *    closes the tunnel;
 *  - under a port rule the target is dialled at once (server-speaks-first protocols need it), and
 *    a dial failure is a 502/504 on the CONNECT;
 *  - nothing of the client's reaches the target before its first bytes were checked;
 *  - one side closing ends the other gracefully (bytes still queued are delivered); an error or a
 *    refusal cuts both; the tunnel's slot is released and its audit line written once, when both
 *    sockets have closed.
 */

import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { VolantError } from '../../shared/errors.js';
import { requestLineRefusal } from '../../shared/http-request-line.js';
import { type Admitted, admit, charge } from './admission.js';
import { type Exchange, newExchange } from './audit.js';
import { type Denial, type DenyReason, decideTunnelPayload, deny } from './decide.js';
import { dialFirst } from './dial.js';
import type { ProxyEnv } from './env.js';
import { refuseOnSocket } from './refusal.js';
import { UpstreamReader } from './relay.js';
import { readClientHello } from './sni.js';
import { parseConnectTarget } from './target.js';

export const CONNECTION_ESTABLISHED = 'HTTP/1.1 200 Connection Established\r\n\r\n';

export async function handleConnect(env: ProxyEnv, req: IncomingMessage, client: Socket, head: Buffer): Promise<void> {
  const x = newExchange('CONNECT');
  env.sockets.add(client);
  client.on('close', () => env.sockets.delete(client));
  client.on('error', () => client.destroy());
  client.pause();
  const peer = { remoteAddress: client.remoteAddress };
  const line = requestLineRefusal(req, { requireHost: false });
  if (line !== undefined) {
    refuseOnSocket(env, x, client, charge(env.admission, x, peer).denial ?? deny('INVALID_ARGUMENT', 'http-version', line.message));
    return;
  }
  const r = await admit(env.admission, x, peer, () => parseConnectTarget(req.url ?? ''), { tunnel: true });
  if ('status' in r) {
    if (client.writable) refuseOnSocket(env, x, client, r);
    else env.audit.record(x, 'deny', r.reason, r.status);
    return;
  }
  if (client.destroyed) {
    r.release();
    env.audit.record(x, 'deny', 'connect-failed', 499);
    return;
  }
  const tunnel = new Tunnel(env, x, client, r, head);
  if (r.allowed.ruleNamesPort) tunnel.dialFirst();
  else tunnel.helloFirst();
}

type Phase = 'hello' | 'dialling' | 'relaying' | 'closing';

class Tunnel {
  private phase: Phase = 'hello';
  private upstream: Socket | null = null;
  private readonly reader = new UpstreamReader();
  private helloTimer: NodeJS.Timeout | undefined;
  /** Client bytes received before the tunnel was allowed to relay (the ClientHello, at least). */
  private pending: Buffer;
  private verdict: { decision: 'allow' | 'deny'; reason: DenyReason | 'allowed' } = { decision: 'allow', reason: 'allowed' };
  private open = 1;
  /** The refusal was already answered (and audited) on the socket. */
  private answered = false;
  private readonly onData = (chunk: Buffer): void => {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    this.inspect();
  };

  constructor(
    private readonly env: ProxyEnv,
    private readonly x: Exchange,
    private readonly client: Socket,
    private readonly admitted: Admitted,
    head: Buffer,
  ) {
    this.pending = head;
    client.on('close', (hadError) => {
      const up = this.upstream;
      // Gone before its target was connected: nothing was relayed, whatever the phase.
      if (up === null && this.verdict.decision === 'allow') this.verdict = { decision: 'deny', reason: 'connect-failed' };
      if (up !== null) {
        if (hadError || this.verdict.decision === 'deny') up.destroy();
        else up.end();
      }
      this.closed();
    });
    // http.Server sockets allow half-open: a client that ends before the tunnel relays is done.
    client.once('end', () => {
      if (this.phase === 'relaying') return;
      const up = this.upstream;
      if (this.phase === 'hello' && up !== null) {
        // A port rule admits any payload, an empty one too: the client is done sending.
        this.phase = 'relaying';
        this.client.off('data', this.onData);
        up.end(this.pending);
      } else if (this.phase === 'hello') {
        this.cut(deny('EGRESS_DENIED', 'client-hello-invalid', 'the client closed the tunnel before sending a complete TLS ClientHello', { rule: admitted.allowed.rule }));
      } else this.destroyBoth();
    });
    client.setTimeout(env.settings.idleTimeoutMs, () => this.destroyBoth());
  }

  /** Under a TLS-only rule: 200, then the ClientHello decides whether the target is dialled at all. */
  helloFirst(): void {
    this.client.write(CONNECTION_ESTABLISHED);
    const ms = this.env.settings.helloTimeoutMs;
    this.helloTimer = setTimeout(
      () => this.cut(deny('EGRESS_DENIED', 'client-hello-invalid', `no complete TLS ClientHello within ${ms} ms`, { rule: this.admitted.allowed.rule })),
      ms,
    );
    this.readFirstBytes();
  }

  /** Under a port rule: dial, 200, relay the server at once; the client's first bytes are still checked. */
  dialFirst(): void {
    this.phase = 'dialling';
    this.dial(
      (up) => {
        this.client.write(CONNECTION_ESTABLISHED);
        this.reader.relay(up, this.client);
        this.phase = 'hello';
        this.readFirstBytes();
      },
      (d) => {
        this.phase = 'closing';
        this.answered = true;
        refuseOnSocket(this.env, this.x, this.client, d);
      },
    );
  }

  private readFirstBytes(): void {
    if (this.pending.length > 0 && this.inspect()) return;
    this.client.on('data', this.onData);
    this.client.resume();
  }

  /** Decides on the bytes so far; true once decided (allowed or cut). */
  private inspect(): boolean {
    if (this.phase !== 'hello') return true;
    const v = decideTunnelPayload(this.admitted.allowed, readClientHello(this.pending));
    if (v.state === 'need-more') return false;
    this.client.off('data', this.onData);
    this.client.pause();
    clearTimeout(this.helloTimer);
    if (v.state === 'deny') {
      this.cut(v.denial);
      return true;
    }
    if (this.upstream !== null) this.relay(this.upstream);
    else {
      this.phase = 'dialling';
      this.dial(
        (up) => {
          this.reader.relay(up, this.client);
          this.relay(up);
        },
        (d) => this.cut(d),
      );
    }
    return true;
  }

  /** The checked bytes go first, then the client's stream. */
  private relay(up: Socket): void {
    this.phase = 'relaying';
    up.write(this.pending);
    this.pending = Buffer.alloc(0);
    this.client.pipe(up);
    this.client.resume();
  }

  private dial(onOpen: (up: Socket) => void, onFail: (d: Denial) => void): void {
    const { allowed, dial } = this.admitted;
    const onTry = (a: string): void => {
      this.x.address = a;
    };
    dialFirst(dial, allowed.port, this.env.settings.connectTimeoutMs, this.reader, onTry).then(
      (up) => {
        if (this.client.destroyed || this.phase === 'closing') {
          up.destroy();
          return;
        }
        this.upstream = up;
        this.open++;
        this.env.sockets.add(up);
        this.env.metrics.tunnelOpened(this.x.vm!);
        up.on('error', () => up.destroy());
        up.setTimeout(this.env.settings.idleTimeoutMs, () => this.destroyBoth());
        up.on('close', (hadError) => {
          this.env.sockets.delete(up);
          if (hadError || this.verdict.decision === 'deny') this.client.destroy();
          else this.client.end();
          this.closed();
        });
        onOpen(up);
      },
      (e: VolantError) => {
        const timeout = e.code === 'TIMEOUT';
        onFail(deny(timeout ? 'TIMEOUT' : 'UPSTREAM_UNREACHABLE', timeout ? 'connect-timeout' : 'connect-failed', e.message, { rule: allowed.rule, address: this.x.address }));
      },
    );
  }

  /** A refusal after the 200: all HTTP leaves is closing the tunnel; the audit line names why. */
  private cut(d: Denial): void {
    if (this.phase === 'closing') return;
    this.verdict = { decision: 'deny', reason: d.reason };
    this.destroyBoth();
  }

  private destroyBoth(): void {
    this.phase = 'closing';
    clearTimeout(this.helloTimer);
    this.client.destroy();
    this.upstream?.destroy();
  }

  private closed(): void {
    if (--this.open > 0) return;
    clearTimeout(this.helloTimer);
    this.admitted.release();
    const up = this.upstream;
    if (up !== null) this.env.metrics.tunnelClosed(this.x.vm!);
    if (this.answered) return;
    this.env.audit.record(this.x, this.verdict.decision, this.verdict.reason, 200, up?.bytesRead ?? 0, up?.bytesWritten ?? 0);
  }
}
