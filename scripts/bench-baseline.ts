/**
 * The benchmark's floor: the least a push gateway on this runtime can do. A notify is parsed,
 * turned into one PNM request with one `fetch`, and answered `{"rejected":[]}`; a token report
 * becomes one pushers/set call. No framework, no database, no logging, no validation.
 * scripts/bench.ts compiles it with the same flags as the service and runs it beside it.
 *
 * Environment: PORT, PNM_URL, SYNAPSE_URL, AS_TOKEN.
 */
import { forwardToPnm } from './bench-forward.ts'

const pnmUrl = process.env.PNM_URL!
const synapseUrl = process.env.SYNAPSE_URL!
const asToken = process.env.AS_TOKEN ?? ''
const json = { 'content-type': 'application/json' }

const server = Bun.serve({
  hostname: '127.0.0.1',
  port: Number(process.env.PORT ?? 0),
  idleTimeout: 60,
  async fetch(request) {
    const path = new URL(request.url).pathname
    if (path === '/_matrix/push/v1/notify' && request.method === 'POST') {
      await forwardToPnm(pnmUrl, ((await request.json()) as { notification: Record<string, any> }).notification)
      return Response.json({ rejected: [] })
    }
    if (path === '/api/client/push_token_report' && request.method === 'POST') {
      const r = (await request.json()) as Record<string, string>
      const answer = await fetch(`${synapseUrl}/_matrix/client/v3/pushers/set?user_id=@${r.username}:example.org`, {
        method: 'POST',
        headers: { ...json, authorization: `Bearer ${asToken}` },
        body: JSON.stringify({
          kind: 'http',
          app_id: r.app_id_msgs,
          pushkey: r.token_msgs,
          app_display_name: r.app_id_msgs,
          device_display_name: 'Acrobits Softphone',
          lang: 'en',
          append: false,
          data: { url: 'http://127.0.0.1/_matrix/push/v1/notify', format: 'event_id_only' },
        }),
      })
      await answer.json()
      return Response.json({})
    }
    if (path === '/health') return Response.json({ status: 'ok' })
    return Response.json({ errcode: 'M_UNRECOGNIZED' }, { status: 404 })
  },
})

process.on('SIGTERM', () => {
  server.stop(true)
  process.exit(0)
})
