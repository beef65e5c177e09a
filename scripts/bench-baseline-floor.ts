/**
 * The benchmark's third floor: what issue #13's own constraints leave of the service with its
 * notification work taken out. The service's HTTP layer as it is (src/app.ts: every route, the
 * request id and its header, the body read with its size limit and strict UTF-8, the compiled
 * TypeBox check, the one access line at INFO with each device's entry and hashed pushkey, the
 * error mapper), listening as the executable does, with a notify handler that only makes the one
 * PNM request the other floors make. No token lookup, duplicate filter, delivery journal, metrics
 * or translation: the gap between this floor and the Elysia forwarder is what the kept request
 * handling costs; the gap between it and the service is the notification work.
 *
 * Environment: PORT, PNM_URL.
 */
import { createApp } from '../src/app.ts'
import { loadConfig } from '../src/config.ts'
import { DeviceLog, notifyAccessFields } from '../src/gateway/notify.ts'
import { createLogger } from '../src/log.ts'
import { createMetrics } from '../src/metrics.ts'
import type { TokenStore } from '../src/store/types.ts'
import { forwardToPnm } from './bench-forward.ts'

const pnmUrl = process.env.PNM_URL!
const loaded = loadConfig({ PNM_URL: pnmUrl, AUTH_MODE: 'none', LOGLEVEL: 'INFO' })
if (!loaded.ok) throw new Error(loaded.errors.join('\n'))
const { config } = loaded
const log = createLogger(config)
const unused = () => Promise.reject(new Error('not part of this floor'))

const app = createApp({
  config,
  // Read by /ready and /metrics only, which the benchmark does not call.
  store: { probeWritable: () => {} } as unknown as TokenStore,
  log,
  metrics: createMetrics(),
  async notify(n, request) {
    await forwardToPnm(pnmUrl, n as unknown as Record<string, any>)
    const eventId = n.event_id ?? undefined
    const devices = n.devices.map((d) => new DeviceLog(request.id, d, eventId))
    request.fields = notifyAccessFields(eventId, devices, devices.map(() => 'delivered' as const))
    return { rejected: [] }
  },
  reports: { report: unused, remove: unused },
  draining: () => false,
  serveMetrics: false,
  sendMessage: unused,
  messaging: { missing: 'MATRIX_HS_TOKEN', fetch: unused },
})
// As src/main.ts listens.
app.listen({ hostname: '127.0.0.1', port: Number(process.env.PORT ?? 0), idleTimeout: 60, maxRequestBodySize: 8 * 1024 * 1024 })

process.on('SIGTERM', () => {
  void app.stop(true)
  process.exit(0)
})
