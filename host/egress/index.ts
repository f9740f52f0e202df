/** The egress proxy's public face: start one per VM (or one on the bridge address) and its pure parts. */
export { AddressPolicy, type AddressVerdict, type AddressClass, parseAnyCidr } from './address-policy.js';
export { type AuditRecord, AUDIT_WINDOW_MS } from './audit.js';
export { type DenyReason, type Denial, ruleNamesPort } from './decide.js';
export { EgressLimits } from './limits.js';
export { EgressMetrics } from './metrics.js';
export {
  CONNECT_TIMEOUT_MS as EGRESS_CONNECT_TIMEOUT_MS,
  type EgressPeer,
  type EgressPolicy,
  type EgressProxyOptions,
  IDLE_TIMEOUT_MS as EGRESS_IDLE_TIMEOUT_MS,
  MAX_HEADER_BYTES as EGRESS_MAX_HEADER_BYTES,
  MAX_REQUEST_BODY_BYTES as EGRESS_MAX_REQUEST_BODY_BYTES,
} from './options.js';
export { type EgressProxy, startEgressProxy } from './proxy.js';
export { createDnsResolver, DNS_TIMEOUT_MS as EGRESS_DNS_TIMEOUT_MS, type NameResolver } from './resolver.js';
