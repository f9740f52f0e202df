/**
 * What every part of one egress proxy shares, passed explicitly (built once in proxy.ts): the
 * settings, the admission context (policy, limits, resolver, address policy, allowlists), the
 * audit trail and metrics, and the set of sockets it holds (cut on close).
 */

import type { Socket } from 'node:net';
import type { AdmissionContext } from './admission.js';
import type { AuditTrail } from './audit.js';
import type { EgressMetrics } from './metrics.js';
import type { EgressSettings } from './options.js';

export interface ProxyEnv {
  settings: EgressSettings;
  admission: AdmissionContext;
  audit: AuditTrail;
  metrics: EgressMetrics;
  sockets: Set<Socket>;
}
