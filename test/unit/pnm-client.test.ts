/**
 * The PNM client reads at most 64 KiB of an answer, whether its length is declared or it streams
 * without one; within that, the answer is read whole.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { createPnmClient } from '../../src/pnm/client.ts'
import { classifyPnmAnswer } from '../../src/pnm/outcome.ts'

const OK = JSON.stringify({ code: 200, response: 'OK' })
const big = 'x'.repeat(200 * 1024)
const server = Bun.serve({
  hostname: '127.0.0.1',
  port: 0,
  fetch(request) {
    const path = new URL(request.url).pathname
    if (path === '/ok') return new Response(OK, { headers: { 'content-type': 'application/json' } })
    if (path === '/declared-big') return new Response(big)
    // No Content-Length: chunks until the client stops reading.
    return new Response(
      new ReadableStream({
        pull(controller) {
          controller.enqueue(new TextEncoder().encode(big))
        },
      }),
    )
  },
})
afterAll(() => server.stop(true))

const request = { verb: 'NotifyTextMessage' as const, AppId: 'app', DeviceToken: 'token', Selector: 'S' }
const send = (path: string) => createPnmClient({ url: `http://127.0.0.1:${server.port}${path}`, maxInflight: 4 }).send(request, 5000)!

describe('PNM answers', () => {
  test('a usual answer is read whole', async () => {
    const answer = await send('/ok')
    expect(answer).toEqual({ kind: 'answer', status: 200, body: OK })
    expect(classifyPnmAnswer(answer)).toEqual({ kind: 'delivered' })
  })

  test('a declared answer over 64 KiB is cut at 64 KiB, and cannot count as delivered', async () => {
    const answer = await send('/declared-big')
    expect(answer.kind === 'answer' && answer.body.length).toBe(64 * 1024)
    expect(classifyPnmAnswer(answer).kind).toBe('transient')
  })

  test('an endless answer without a length is cut at 64 KiB', async () => {
    const answer = await send('/endless')
    expect(answer.kind === 'answer' && answer.body.length).toBe(64 * 1024)
  })
})
