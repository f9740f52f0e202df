/**
 * What the vsock device counts. Plain numbers bumped in the hot path (no labels, no maps); the
 * back-end process logs them on SIGUSR1 and when it exits, and keeps them in the JSON file named
 * by `--metrics` (args.ts) so a supervisor or a test can read them.
 */

export interface DeviceMetrics {
  /** Packets the guest sent (TX queue) and payload bytes of its RW packets. */
  txPackets: number;
  txBytes: number;
  /** TX chains refused as malformed (outside memory, loops, INDIRECT, ...). */
  txRefusedChains: number;
  /** Guest packets dropped for a wrong CID, a bad length or an unknown type. */
  txDropped: number;
  /** Packets written to the guest (RX queue) and payload bytes of the RW ones. */
  rxPackets: number;
  rxBytes: number;
  /** Used-ring interrupts sent to the guest, and kicks received from it. */
  notifications: number;
  kicks: number;
  /** Connections opened from the host (`CONNECT`) and from the guest (REQUEST to CID 2). */
  hostConnections: number;
  guestConnections: number;
  /** Host connections closed without OK (bad command, nothing listening, timeout). */
  handshakeFailures: number;
  /** Guest connections refused (no `<uds>_<port>` listener, limit reached). */
  guestRefused: number;
  /** Connections turned away because MAX_CONNECTIONS were open. */
  overLimit: number;
  /** RST packets sent to and received from the guest. */
  resetsSent: number;
  resetsReceived: number;
  /** Guests that sent more than their credit allowed (reset). */
  creditViolations: number;
  /** Connection timers that fired (handshake, request, shutdown, drain). */
  timeouts: number;
  /** Bytes that had to wait in a backlog because the host socket was full. */
  backlogBytes: number;
  /** Open connections now. */
  connections: number;
}

export function newDeviceMetrics(): DeviceMetrics {
  return {
    txPackets: 0,
    txBytes: 0,
    txRefusedChains: 0,
    txDropped: 0,
    rxPackets: 0,
    rxBytes: 0,
    notifications: 0,
    kicks: 0,
    hostConnections: 0,
    guestConnections: 0,
    handshakeFailures: 0,
    guestRefused: 0,
    overLimit: 0,
    resetsSent: 0,
    resetsReceived: 0,
    creditViolations: 0,
    timeouts: 0,
    backlogBytes: 0,
    connections: 0,
  };
}
