/**
 * Prometheus metrics, on a registry of their own (tests build as many apps as they like), every
 * name prefixed `matrix2acrobits_`. The label values an operator alerts on are created at zero, so
 * that `rate(...{outcome="failed"}[5m])` has a series before the first failure.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import pkg from '../package.json' with { type: 'json' }
import type { DeviceOutcome } from './gateway/notify.ts'

export const METRIC_PREFIX = 'matrix2acrobits_'

/** Every outcome of one device of a notification (gateway/notify.ts). */
export const NOTIFICATION_OUTCOMES = [
  'delivered',
  'rejected',
  'duplicate',
  'badge_only',
  'dropped',
  'failed',
  'overloaded',
  'store_error',
  'sending_elsewhere',
] as const satisfies readonly DeviceOutcome[]
// Fails to compile when notify.ts gains an outcome this list does not name.
const everyOutcomeListed: Exclude<DeviceOutcome, (typeof NOTIFICATION_OUTCOMES)[number]> extends never ? true : never = true
void everyOutcomeListed

export function createMetrics(options: { defaults?: boolean; pnmInflight?: () => number } = {}) {
  const registry = new Registry()
  const prefix = METRIC_PREFIX
  if (options.defaults) collectDefaultMetrics({ register: registry, prefix })
  const registers = [registry]
  const metrics = {
    registry,
    buildInfo: new Gauge({
      name: `${prefix}build_info`,
      help: 'Always 1; the version label tells which build runs',
      labelNames: ['version'] as const,
      registers,
    }),
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
    // Read from the PNM client at each scrape, not counted up and down on every request.
    pnmInflight: new Gauge({
      name: `${prefix}pnm_inflight_requests`,
      help: 'Requests to the Acrobits PNM in flight',
      registers,
      collect() {
        this.set(options.pnmInflight?.() ?? 0)
      },
    }),
    pusherRegistrations: new Counter({
      name: `${prefix}pusher_registrations_total`,
      help: 'Pusher calls to the homeserver (set and delete) by outcome',
      labelNames: ['action', 'outcome'] as const,
      registers,
    }),
    pusherJobsPending: new Gauge({
      name: `${prefix}pusher_jobs_pending`,
      help: 'Pusher calls still owed to the homeserver (queued or failing and retried)',
      registers,
    }),
    tokenReports: new Counter({
      name: `${prefix}token_reports_total`,
      help: 'Token and account removal reports from the apps, by kind and outcome (ok or the HTTP status answered)',
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
  metrics.buildInfo.set({ version: pkg.version }, 1)
  for (const outcome of NOTIFICATION_OUTCOMES) metrics.notifications.inc({ outcome }, 0)
  for (const action of ['set', 'delete'] as const) {
    for (const outcome of ['ok', 'failed'] as const) metrics.pusherRegistrations.inc({ action, outcome }, 0)
  }
  for (const kind of ['report', 'removal'] as const) metrics.tokenReports.inc({ kind, outcome: 'ok' }, 0)
  return metrics
}

export type Metrics = ReturnType<typeof createMetrics>
