/**
 * The recording HTTP server under the fake Synapse and the fake CTI: a real Bun.serve on
 * 127.0.0.1 port 0 that keeps every request (a JSON body parsed, any other body as text) so tests
 * assert on exact bodies, then lets the fake answer it.
 */
export interface Recorded {
  method: string
  path: string
  query: Record<string, string>
  authorization?: string
  body: any
}

/** Set by a test to make a fake misbehave on purpose; undefined falls through to the fake's route. */
export type Override = (req: Recorded) => Response | undefined | Promise<Response | undefined>

export function serveRecording(requests: Recorded[], answer: (req: Recorded) => Response | Promise<Response>) {
  return Bun.serve({
    hostname: '127.0.0.1',
    port: 0,
    async fetch(request) {
      const url = new URL(request.url)
      const text = await request.text()
      let body: unknown
      try {
        body = text ? JSON.parse(text) : undefined
      } catch {
        body = text
      }
      const rec: Recorded = {
        method: request.method,
        path: url.pathname,
        query: Object.fromEntries(url.searchParams),
        authorization: request.headers.get('authorization') ?? undefined,
        body,
      }
      requests.push(rec)
      return answer(rec)
    },
  })
}
