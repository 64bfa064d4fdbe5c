/**
 * Counters shared by a server's connections: plain numbers bumped on the hot path, read with
 * `NbdServer.metrics()`. Connection-level events go out as NbdServer events instead.
 */
export interface NbdMetrics {
  connectionsOpen: number;
  connectionsTotal: number;
  /** Requests handed to the backend (refused ones not included). */
  requests: number;
  /** Error replies sent: refusals, unknown commands and backend failures. */
  requestErrors: number;
  /** Client protocol violations: bad magic, garbage, oversized payloads, unknown commands. */
  protocolErrors: number;
  bytesRead: number;
  bytesWritten: number;
}

export function newMetrics(): NbdMetrics {
  return {
    connectionsOpen: 0,
    connectionsTotal: 0,
    requests: 0,
    requestErrors: 0,
    protocolErrors: 0,
    bytesRead: 0,
    bytesWritten: 0,
  };
}
