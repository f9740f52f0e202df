/**
 * vsock flow control (virtio 1.2; docs/vsock.md), as pure u32 arithmetic. Each side of a connection
 * tells the other, in every packet, how big its receive buffer is (`buf_alloc`) and how many
 * bytes it has consumed from it so far (`fwd_cnt`, free-running, wraps at 2^32). A sender may
 * have at most `buf_alloc - (sent - fwd_cnt)` bytes in flight.
 *
 * Both directions are bounded by it, which is what keeps a slow reader from making the device
 * buffer without limit:
 *  - device → guest: the device reads a host socket only as far as the guest's credit allows
 *    (`peerCredit`); with no credit it stops reading, so a slow guest reader backs up into the
 *    host socket's own kernel buffer.
 *  - guest → device: the device advertises CONN_BUFFER_BYTES and holds at most that many bytes a
 *    slow host reader has not taken yet; a guest that sends past it breaks the protocol and the
 *    connection is reset (`withinOurBuffer`).
 *
 * Counters wrap: every difference is taken modulo 2^32 (`>>> 0`).
 */

/** The receive buffer the device advertises per connection (guest → host bytes it may hold). */
export const CONN_BUFFER_BYTES = 256 * 1024;
/** Tell the guest about freed space once the space it knows of drops below this. */
export const CREDIT_UPDATE_THRESHOLD_BYTES = CONN_BUFFER_BYTES / 2;

/** Bytes the peer can still take: its buffer minus what is in flight (0 when its counters say more is in flight than fits). */
export function peerCredit(peerBufAlloc: number, sentToPeer: number, peerFwdCnt: number): number {
  const inFlight = (sentToPeer - peerFwdCnt) >>> 0;
  return inFlight >= peerBufAlloc ? 0 : peerBufAlloc - inFlight;
}

/** True when `len` more bytes from the peer fit in our buffer, given what we have received and forwarded. */
export function withinOurBuffer(bufAlloc: number, received: number, fwdCnt: number, len: number): boolean {
  const held = (received - fwdCnt) >>> 0;
  return held <= bufAlloc && len <= bufAlloc - held;
}

/**
 * True when the peer should hear about space we freed: the space it believes we have
 * (`bufAlloc` minus what it sent since the fwd_cnt we last told it) is below `threshold`, and we
 * have forwarded bytes since we last told it.
 */
export function creditUpdateDue(bufAlloc: number, received: number, fwdCnt: number, lastFwdCntSent: number, threshold = CREDIT_UPDATE_THRESHOLD_BYTES): boolean {
  if (fwdCnt === lastFwdCntSent) return false;
  const peerSees = ((received - lastFwdCntSent) >>> 0) >= bufAlloc ? 0 : bufAlloc - ((received - lastFwdCntSent) >>> 0);
  return peerSees < threshold;
}
