/** Prometheus metrics, on a registry of their own (tests build as many apps as they like). */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

export function createMetrics(options: { defaults?: boolean } = {}) {
  const registry = new Registry()
  const prefix = 'matrix2acrobits_'
  if (options.defaults) collectDefaultMetrics({ register: registry, prefix })
  const registers = [registry]
  return {
    registry,
    notifications: new Counter({
      name: `${prefix}notifications_total`,
      help: 'Devices in notifications received from the homeserver, by outcome',
      labelNames: ['outcome'] as const,
      registers,
    }),
    pnmDuration: new Histogram({
      name: `${prefix}pnm_request_duration_seconds`,
      help: 'Duration of requests to the Acrobits PNM',
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    }),
    pnmAnswers: new Counter({
      name: `${prefix}pnm_responses_total`,
      help: 'Answers of the Acrobits PNM by HTTP status (or timeout / network)',
      labelNames: ['status'] as const,
      registers,
    }),
    pnmInflight: new Gauge({
      name: `${prefix}pnm_inflight_requests`,
      help: 'Requests to the Acrobits PNM in flight',
      registers,
    }),
    pusherRegistrations: new Counter({
      name: `${prefix}pusher_registrations_total`,
      help: 'Pusher calls to the homeserver (set and delete) by outcome',
      labelNames: ['action', 'outcome'] as const,
      registers,
    }),
    tokenReports: new Counter({
      name: `${prefix}token_reports_total`,
      help: 'Token and account removal reports from the apps, by kind and outcome',
      labelNames: ['kind', 'outcome'] as const,
      registers,
    }),
    authFailures: new Counter({
      name: `${prefix}auth_failures_total`,
      help: 'Failed password checks, by reason',
      labelNames: ['reason'] as const,
      registers,
    }),
    storedTokens: new Gauge({
      name: `${prefix}stored_tokens`,
      help: 'Accounts stored in the token database',
      registers,
    }),
  }
}

export type Metrics = ReturnType<typeof createMetrics>
