/**
 * POST/GET /api/client/send_message through the whole app (harness: fake Synapse feeding the app
 * its transactions, the message index, app.handle).
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { startHarness, type Harness } from '../harness.ts'
import { startMessaging, type Messaging } from './support.ts'

const bob = '@bob:example.org'

let h: Messaging
let none: Messaging
let off: Harness
beforeAll(async () => {
  h = await startMessaging({ compose: { sendRetryDelaysMs: [10, 20], sendBudgetMs: 500 } })
  none = await startMessaging({ env: { AUTH_MODE: 'none' } })
  off = await startHarness()
})
afterAll(async () => {
  await h.close()
  await none.close()
  await off.close()
})

const PATH = '/api/client/send_message'
const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString()
const FORM = { 'content-type': 'application/x-www-form-urlencoded' }

describe('Send Message route', () => {
  test('JSON: 200 {"sms_id": <event id>}, the event in the room, indexed at once', async () => {
    // Nothing comes back from Synapse meanwhile: what the fetch shows was written by the send.
    h.synapse.appservice.pause()
    const a = await h.request('POST', PATH, { username: 'alice', password: 'alice-password', to: 'bob', body: 'hello bob' })
    expect(a.status).toBe(200)
    expect(Object.keys(a.json)).toEqual(['sms_id'])
    const event = h.synapse.rooms.findEvent(a.json.sms_id)!
    expect(event).toMatchObject({ sender: '@alice:example.org', type: 'm.room.message', content: { msgtype: 'm.text', body: 'hello bob' } })
    expect(h.synapse.rooms.membership(event.room_id, bob)).toBe('invite')
    const fetched = await h.fetch('alice')
    expect(fetched.json.sent_smss).toEqual([expect.objectContaining({ sms_id: a.json.sms_id, recipient: 'bob', stream_id: 'bob', sms_text: 'hello bob' })])
    h.synapse.appservice.resume()
    await h.settle()
    // The echo from Synapse is the same event: still one item.
    expect((await h.fetch('alice')).json.sent_smss.map((m: any) => m.sms_id)).toEqual([a.json.sms_id])
  })

  test('form with the other spellings (from, sms_to, sms_body), and GET with a query string', async () => {
    const a = await h.request('POST', PATH, form({ from: 'alice', password: 'alice-password', sms_to: '@bob:example.org', sms_body: 'by form' }), FORM)
    expect(a.status).toBe(200)
    expect(h.synapse.rooms.findEvent(a.json.sms_id)!.content.body).toBe('by form')
    const g = await h.request('GET', `${PATH}?${form({ username: 'alice', password: 'alice-password', to: 'bob', body: 'by query' })}`)
    expect(g.status).toBe(200)
    expect(h.synapse.rooms.findEvent(g.json.sms_id)!.content.body).toBe('by query')
  })

  test('bad input: clear 4xx, nothing sent', async () => {
    const sends = h.synapse.requests.filter((r) => r.path.includes('/send/')).length
    const cases: Array<[unknown, Record<string, string> | undefined, number, string]> = [
      ['{"username": ', { 'content-type': 'application/json' }, 400, 'JSON'],
      [{ username: 'alice', password: 'alice-password', to: 5, body: 'x' }, undefined, 400, 'to'],
      [{ username: 'alice', password: 'alice-password', body: 'x' }, undefined, 400, 'to'],
      [{ username: 'alice', password: 'alice-password', to: 'john smith', body: 'x' }, undefined, 400, 'to'],
      [{ username: 'alice', password: 'alice-password', to: 'alice', body: 'x' }, undefined, 400, 'yourself'],
      [{ username: 'alice', password: 'alice-password', to: 'bob', body: 'x'.repeat(33 * 1024) }, undefined, 400, 'body'],
      [{ username: 'alice', password: 'alice-password', to: 'bob', body: '{}', content_type: 'application/x-acro-filetransfer+json' }, undefined, 400, 'not supported yet'],
      [{ username: 'alice', password: 'wrong', to: 'bob', body: 'x' }, undefined, 401, 'Invalid'],
      [{ username: 'alice', to: 'bob', body: 'x' }, undefined, 401, 'password'],
      // Two recipients in one request: the app sends one request per recipient.
      ['username=alice&password=alice-password&to=bob&to=carol&body=x', FORM, 400, 'to is given more than once'],
      ['username=alice&password=alice-password&sms_to=bob&sms_to=bob&body=x', FORM, 400, 'sms_to is given more than once'],
      [{ username: 'alice', password: 'alice-password', to: 'bo\u0000b', body: 'x' }, undefined, 400, 'to contains a control character'],
    ]
    for (const [body, headers, status, fragment] of cases) {
      const a = await h.request('POST', PATH, body, headers)
      expect([a.status, a.json.error.includes(fragment)]).toEqual([status, true])
    }
    const twice = await h.request('GET', `${PATH}?username=alice&password=alice-password&to=bob&to=carol&body=x`)
    expect([twice.status, twice.json.error]).toEqual([400, 'to is given more than once'])
    const big = await h.request('POST', PATH, JSON.stringify({ body: 'x'.repeat(300 * 1024) }), { 'content-type': 'application/json' })
    expect(big.status).toBe(413)
    expect((await h.request('PUT', PATH, {})).status).toBe(405)
    expect(h.synapse.requests.filter((r) => r.path.includes('/send/')).length).toBe(sends)
  })

  test('AUTH_MODE=none: 403 saying why; messaging off: 503 naming the variable', async () => {
    const a = await none.request('POST', PATH, { username: 'alice', password: 'x', to: 'bob', body: 'x' })
    expect(a.status).toBe(403)
    expect(a.json.error).toContain('AUTH_MODE')
    const b = await off.request('POST', PATH, { username: 'alice', password: 'alice-password', to: 'bob', body: 'x' })
    expect(b.status).toBe(503)
    expect(b.json.error).toContain('MATRIX_HS_TOKEN')
  })

  test('Synapse failing: 503 with Retry-After', async () => {
    h.synapse.override((r) => (r.path.includes('/send/') ? new Response('no', { status: 503 }) : undefined))
    try {
      const a = await h.request('POST', PATH, { username: 'alice', password: 'alice-password', to: 'bob', body: 'fails' })
      expect(a.status).toBe(503)
      expect(a.headers.get('retry-after')).toBe('5')
    } finally {
      h.synapse.override(undefined)
    }
  })

  test('message bodies never in logs at INFO or above; passwords never at all', async () => {
    await h.request('POST', PATH, { username: 'alice', password: 'alice-password', to: 'bob', body: 'very secret words' })
    const lines = h.logs.parsed()
    expect(lines.filter((l) => l.level >= 30).some((l) => JSON.stringify(l).includes('very secret words'))).toBe(false)
    expect(h.logs.lines.some((l) => l.includes('alice-password'))).toBe(false)
  })
})
