/**
 * The benchmark's second floor: the least the service's own framework does. One Elysia POST route
 * that parses the notify as JSON, makes the one PNM request with one `fetch` and answers
 * `{"rejected":[]}`, plus `/health`. No database, no logging, no validation, no metrics. Compiled
 * by scripts/bench.ts with the same flags as the service (scripts/build.ts), so the gap between
 * it and the bare forwarder (scripts/bench-baseline.ts) is what Elysia costs, and the gap between
 * it and the service is what the service's own work costs.
 *
 * Environment: PORT, PNM_URL.
 */
import { Elysia } from 'elysia'
import { forwardToPnm } from './bench-forward.ts'

const pnmUrl = process.env.PNM_URL!

const app = new Elysia()
  .post('/_matrix/push/v1/notify', async ({ body }) => {
    await forwardToPnm(pnmUrl, (body as { notification: Record<string, any> }).notification)
    return { rejected: [] }
  })
  .get('/health', () => ({ status: 'ok' }))
  .listen({ hostname: '127.0.0.1', port: Number(process.env.PORT ?? 0), idleTimeout: 60 })

process.on('SIGTERM', () => {
  void app.stop(true)
  process.exit(0)
})
