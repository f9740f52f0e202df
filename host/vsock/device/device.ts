/**
 * The virtio-vsock device proper (virtio 1.2; docs/vsock.md): two queues the vhost-user session hands over
 * once the guest's driver started them, and the muxer behind them.
 *
 *   queue 0 (RX)  device → guest: the driver posts empty buffers; the device fills each with one
 *                 packet from the muxer (`Muxer.fillRx`).
 *   queue 1 (TX)  guest → device: each chain is one packet for the muxer (`Muxer.onGuestPacket`).
 *   queue 2 (event) is kept by QEMU itself and never reaches a vhost-user back-end.
 *
 * A queue is used only while it is started (it has a kick eventfd) and enabled (SET_VRING_ENABLE).
 *
 * Batching (throughput): a TX kick drains the whole TX queue, with guest kicks suppressed while it
 * does (USED_F_NO_NOTIFY, re-checked after re-enabling so no packet is missed). The used rings
 * are published, and the guest interrupted, once per reactor batch (`flush`), not per packet.
 * The TX used length is 0 (the device writes nothing into TX buffers).
 */

import { EAGAIN, type DeviceIo } from '../../../native/device-io.js';
import type { DeviceMetrics } from './metrics.js';
import type { Muxer } from './muxer.js';
import { PacketHeader, readHeader } from './packet.js';
import { DescriptorChain, POP_BROKEN, POP_EMPTY, POP_OK, type SplitQueue } from './virtqueue.js';
import type { Logger } from '../../log/logger.js';

export const RX_QUEUE = 0;
export const TX_QUEUE = 1;
/** TX chains handled per flush before yielding to other events (the rest wait for the next turn). */
export const MAX_TX_PER_TURN = 1024;

interface ActiveQueue {
  ring: SplitQueue;
  callFd: number;
}

export class VsockDevice {
  readonly #queues: (ActiveQueue | undefined)[] = [undefined, undefined];
  readonly #chain = new DescriptorChain();
  readonly #header = new PacketHeader();
  readonly #one = new Uint8Array([1, 0, 0, 0, 0, 0, 0, 0]);
  readonly #drainBuf = new Uint8Array(8);
  #txPending = false;
  #reportedBroken = ['', ''];

  constructor(
    private readonly muxer: Muxer,
    private readonly io: DeviceIo,
    private readonly metrics: DeviceMetrics,
    private readonly log: Logger,
    private readonly requestFlush: () => void,
  ) {}

  /** The session started (and enabled) a queue. */
  attach(index: number, ring: SplitQueue, callFd: number): void {
    this.#queues[index] = { ring, callFd };
    this.#reportedBroken[index] = '';
    if (index === TX_QUEUE) this.#txPending = true;
    this.requestFlush();
  }

  /** The session stopped or disabled a queue; returns the next avail index (for GET_VRING_BASE). */
  detach(index: number): number | undefined {
    const q = this.#queues[index];
    this.#queues[index] = undefined;
    if (q && this.#queues[RX_QUEUE] === undefined && this.#queues[TX_QUEUE] === undefined) this.muxer.resetAll("the guest's driver stopped the device");
    return q?.ring.lastAvail;
  }

  /** SET_VRING_CALL arrived again for a running queue (QEMU swaps masked/unmasked notifiers). */
  setCallFd(index: number, fd: number): void {
    const q = this.#queues[index];
    if (q) q.callFd = fd;
  }

  /** A kick eventfd is readable: drain it and note the work. */
  onKick(index: number, kickFd: number): void {
    while (this.io.readInto(kickFd, this.#drainBuf, 0, 8) === 8) this.metrics.kicks++;
    if (index === TX_QUEUE) this.#txPending = true;
  }

  /** Runs after every reactor batch: TX first (it produces RX work), then RX, then interrupts. */
  flush(): void {
    if (this.#txPending) this.#processTx();
    this.#fillRx();
    for (let i = 0; i < this.#queues.length; i++) {
      const q = this.#queues[i];
      if (q && q.ring.publish()) this.#notify(q);
    }
  }

  #processTx(): void {
    const q = this.#queues[TX_QUEUE];
    this.#txPending = false;
    if (!q) return;
    const ring = q.ring;
    const chain = this.#chain;
    const header = this.#header;
    let handled = 0;
    ring.setNotifications(false);
    for (;;) {
      const r = ring.pop(chain);
      if (r === POP_EMPTY) {
        // Kicks back on, then look once more: a packet added in between would have no kick.
        ring.setNotifications(true);
        if (ring.pending() === 0) break;
        ring.setNotifications(false);
        continue;
      }
      if (r === POP_BROKEN) {
        this.#reportBroken(TX_QUEUE, ring);
        break;
      }
      if (r !== POP_OK) {
        this.metrics.txRefusedChains++;
        this.log.warn({ queue: 'TX' }, `TX chain refused: ${chain.refusal}`);
        continue;
      }
      if (readHeader(chain, header)) this.muxer.onGuestPacket(header, chain);
      else this.metrics.txDropped++;
      ring.pushUsed(chain.head, 0);
      if (++handled >= MAX_TX_PER_TURN) {
        ring.setNotifications(true);
        this.#txPending = true;
        this.requestFlush();
        break;
      }
    }
  }

  #fillRx(): void {
    const q = this.#queues[RX_QUEUE];
    if (!q || !this.muxer.hasRx()) return;
    const ring = q.ring;
    const chain = this.#chain;
    while (this.muxer.hasRx()) {
      const r = ring.pop(chain);
      if (r === POP_EMPTY) break;
      if (r === POP_BROKEN) {
        this.#reportBroken(RX_QUEUE, ring);
        break;
      }
      if (r !== POP_OK) {
        this.log.warn({ queue: 'RX' }, `RX chain refused: ${chain.refusal}`);
        continue;
      }
      const written = this.muxer.fillRx(chain);
      if (written === 0) {
        ring.unpop();
        break;
      }
      ring.pushUsed(chain.head, written);
    }
  }

  #notify(q: ActiveQueue): void {
    if (q.callFd < 0) return;
    const n = this.io.writeFrom(q.callFd, this.#one, 0, 8);
    if (n === 8 || n === -EAGAIN) this.metrics.notifications++;
  }

  #reportBroken(index: number, ring: SplitQueue): void {
    if (this.#reportedBroken[index] === ring.broken) return;
    this.#reportedBroken[index] = ring.broken;
    const queue = index === RX_QUEUE ? 'RX' : 'TX';
    this.log.error({ queue }, `${queue} queue stopped: ${ring.broken}`);
  }
}
