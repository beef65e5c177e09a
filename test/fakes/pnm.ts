/**
 * A fake Acrobits PNM (`POST /pnm2/send`) on 127.0.0.1, answering as FIELD-GUIDE §4 says: HTTP 200
 * with a JSON result; 404 for device tokens it does not know (`forget`); 400 for a request without
 * its required fields. It records every request; `behave` makes it misbehave per token.
 */
export type Behaviour =
  | { kind: 'ok' }
  | { kind: 'gone' } // 404: device token no longer registered
  | { kind: 'status'; status: number; body?: string }
  | { kind: 'hang' } // never answers
  | { kind: 'slow'; ms: number }
  | { kind: 'sequence'; steps: Behaviour[] } // one step per request, the last repeats

export interface PnmRecord {
  body: any
  receivedAt: number
}

export const PNM_PATH = '/pnm2/send'

export function startFakePnm() {
  const requests: PnmRecord[] = []
  const byToken = new Map<string, Behaviour>()
  let fallback: Behaviour = { kind: 'ok' }
  const counters = new Map<string, number>()
  const hanging = new Set<() => void>()

  const answer = (code: number, response: string, httpStatus = 200) =>
    Response.json({ code, response }, { status: httpStatus })

  async function act(b: Behaviour, key: string): Promise<Response> {
    switch (b.kind) {
      case 'ok':
        return answer(200, 'OK')
      case 'gone':
        return answer(404, 'Device token not registered', 404)
      case 'status':
        return new Response(b.body ?? JSON.stringify({ code: b.status, response: 'fake' }), {
          status: b.status,
          headers: { 'content-type': 'application/json' },
        })
      case 'hang':
        await new Promise<void>((resolve) => hanging.add(resolve))
        return answer(200, 'OK')
      case 'slow':
        await Bun.sleep(b.ms)
        return answer(200, 'OK')
      case 'sequence': {
        const n = counters.get(key) ?? 0
        counters.set(key, n + 1)
        return act(b.steps[Math.min(n, b.steps.length - 1)]!, `${key}#${n}`)
      }
    }
  }

  const server = Bun.serve({
    hostname: '127.0.0.1',
    port: 0,
    idleTimeout: 0,
    async fetch(request) {
      if (new URL(request.url).pathname !== PNM_PATH || request.method !== 'POST') return new Response('not found', { status: 404 })
      let body: any
      try {
        body = await request.json()
      } catch {
        return answer(400, 'Invalid JSON', 400)
      }
      requests.push({ body, receivedAt: Date.now() })
      if (!body?.verb || !body?.AppId || !body?.DeviceToken) return answer(400, 'Missing required field', 400)
      if (body.verb !== 'NotifyGenericTextMessage' && !body.Selector) return answer(400, 'Missing Selector', 400)
      return act(byToken.get(body.DeviceToken) ?? fallback, body.DeviceToken)
    },
  })

  return {
    url: `http://127.0.0.1:${server.port}${PNM_PATH}`,
    port: server.port,
    requests,
    bodies: () => requests.map((r) => r.body),
    /** How the fake answers requests for this device token. */
    behave: (token: string, behaviour: Behaviour) => byToken.set(token, behaviour),
    /** How it answers tokens without a behaviour of their own. */
    behaveByDefault: (behaviour: Behaviour) => {
      fallback = behaviour
    },
    forget: (token: string) => byToken.set(token, { kind: 'gone' }),
    /** Lets every hanging request finish. */
    release: () => {
      for (const resolve of hanging) resolve()
      hanging.clear()
    },
    stop: () => {
      for (const resolve of hanging) resolve()
      server.stop(true)
    },
  }
}

export type FakePnm = ReturnType<typeof startFakePnm>

/** A TCP server that accepts connections and closes them at once: a PNM that drops the line. */
export function startDroppingServer() {
  const listener = Bun.listen({
    hostname: '127.0.0.1',
    port: 0,
    socket: {
      data(socket) {
        socket.end()
      },
      open() {},
    },
  })
  return { url: `http://127.0.0.1:${listener.port}${PNM_PATH}`, stop: () => listener.stop(true) }
}
