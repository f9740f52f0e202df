/**
 * The API's own metric families (docs/metrics.md), bumped once per finished request:
 *
 *   volant_api_requests_total{method,route,status}         counter
 *   volant_api_request_duration_seconds{method,route}      histogram
 *
 * `route` is the route's pattern (`/api/v1/vms/:name`), never the URL, so the label sets are
 * bounded by the routes; a request no route matched is `unknown`. Streaming answers (logs with
 * follow, the events feed) count when they end.
 */

import { Counter, Histogram, type Registry } from 'prom-client';

/** Upper bounds of the duration buckets, in seconds: reads take milliseconds, a create waits for the guest to boot. */
export const API_DURATION_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

export class ApiMetrics {
  readonly #requests: Counter<'method' | 'route' | 'status'>;
  readonly #duration: Histogram<'method' | 'route'>;

  constructor(registry: Registry) {
    this.#requests = new Counter({ name: 'volant_api_requests_total', help: 'API requests by method, route and status.', labelNames: ['method', 'route', 'status'], registers: [registry] });
    this.#duration = new Histogram({
      name: 'volant_api_request_duration_seconds',
      help: 'How long API requests took, from arrival to the end of the answer.',
      labelNames: ['method', 'route'],
      buckets: API_DURATION_BUCKETS_S,
      registers: [registry],
    });
  }

  requestDone(method: string, route: string, status: number, seconds: number): void {
    this.#requests.inc({ method, route, status: String(status) });
    this.#duration.observe({ method, route }, seconds);
  }
}
