/**
 * The benchmark's upstreams: a PNM and a Synapse that answer at once, so the figures measure the
 * gateway and not them. Unlike test/fakes they keep no record of the requests (a benchmark sends
 * hundreds of thousands), only counters. 127.0.0.1 only.
 */
const JSON_HEADERS = { 'content-type': 'application/json' }
const PNM_OK = JSON.stringify({ code: 200, response: 'OK' })

/** `POST /pnm2/send` -> HTTP 200 `{"code":200,"response":"OK"}` (FIELD-GUIDE §4). */
export function startInstantPnm() {
  let received = 0
  const server = Bun.serve({
    hostname: '127.0.0.1',
    port: 0,
    idleTimeout: 0,
    async fetch(request) {
      if (request.method !== 'POST' || new URL(request.url).pathname !== '/pnm2/send') return new Response('not found', { status: 404 })
      await request.arrayBuffer()
      received++
      return new Response(PNM_OK, { headers: JSON_HEADERS })
    },
  })
  return { url: `http://127.0.0.1:${server.port}/pnm2/send`, received: () => received, stop: () => server.stop(true) }
}

/** `POST /_matrix/client/v3/pushers/set` with the appservice token -> 200 `{}`; anything else 4xx. */
export function startInstantSynapse(asToken: string) {
  let pushersSet = 0
  const server = Bun.serve({
    hostname: '127.0.0.1',
    port: 0,
    idleTimeout: 0,
    async fetch(request) {
      const url = new URL(request.url)
      if (request.method !== 'POST' || url.pathname !== '/_matrix/client/v3/pushers/set') {
        return Response.json({ errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' }, { status: 404 })
      }
      if (request.headers.get('authorization') !== `Bearer ${asToken}`) {
        return Response.json({ errcode: 'M_UNKNOWN_TOKEN', error: 'Invalid access token passed.' }, { status: 401 })
      }
      const body = (await request.json()) as { data?: { url?: string } }
      if (!body.data?.url?.endsWith('/_matrix/push/v1/notify')) {
        return Response.json({ errcode: 'M_INVALID_PARAM', error: "'url' must have a path of '/_matrix/push/v1/notify'" }, { status: 400 })
      }
      pushersSet++
      return new Response('{}', { headers: JSON_HEADERS })
    },
  })
  return { url: `http://127.0.0.1:${server.port}`, pushersSet: () => pushersSet, stop: () => server.stop(true) }
}
