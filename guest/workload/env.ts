/**
 * The workload's environment, layered so the most specific source wins:
 *
 *   base (PATH, HOME) ← manifest workload.env ← per-VM volant.env ← egress proxy variables
 *
 * The proxy variables come last because they describe the only way out of the VM; a manifest
 * cannot point HTTP_PROXY elsewhere. Both spellings are set: curl reads only lower-case
 * `http_proxy`, many libraries only upper-case. NO_PROXY keeps local traffic off the proxy.
 */

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
export const NO_PROXY = 'localhost,127.0.0.1';

export function workloadEnv(layers: {
  base: Record<string, string>;
  manifest?: Record<string, string>;
  vm?: Record<string, string>;
  /** `http://127.0.0.1:3128` when outbound is allowed. */
  proxyUrl?: string;
}): Record<string, string> {
  const env: Record<string, string> = { ...layers.base, ...(layers.manifest ?? {}), ...(layers.vm ?? {}) };
  if (layers.proxyUrl) {
    for (const name of ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy']) env[name] = layers.proxyUrl;
    env.NO_PROXY = NO_PROXY;
    env.no_proxy = NO_PROXY;
  }
  return env;
}
