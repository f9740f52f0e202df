/** kestrel's version, reported by /healthz; kept in step with package.json by hand. */
export const KESTREL_VERSION = '0.1.0';
