import { afterEach, describe, expect, test } from 'bun:test'
import { directChatSetup, HS_TOKEN, member, text, uid } from './events.ts'
import { startMessaging, type Messaging } from './support.ts'

let h: Messaging
afterEach(async () => h?.close())

const alice = uid('alice')
const bob = uid('bob')

describe('appservice routes', () => {
  test('a transaction without credentials is 401 M_UNAUTHORIZED, a wrong token 403 M_FORBIDDEN; nothing stored', async () => {
    h = await startMessaging()
    await h.fetch('bob')
    const events = [...directChatSetup('!dm:example.org', alice, bob), text({ room: '!dm:example.org', sender: alice }, 'hi')]
    const none = await h.txn('1', events, null)
    expect(none.status).toBe(401)
    expect(none.json).toEqual({ errcode: 'M_UNAUTHORIZED', error: expect.any(String) })
    const wrong = await h.txn('1', events, 'not-the-token')
    expect(wrong.status).toBe(403)
    expect(wrong.json.errcode).toBe('M_FORBIDDEN')
    expect(await h.index!.countMessages()).toBe(0)
    expect((await h.fetch('bob')).json.received_smss).toEqual([])
  })

  test('ping answers {} with the hs_token; users and rooms queries are 404 M_NOT_FOUND', async () => {
    h = await startMessaging()
    const auth = { authorization: `Bearer ${HS_TOKEN}` }
    const ping = await h.request('POST', '/_matrix/app/v1/ping', { transaction_id: 'mautrix-go_1' }, auth)
    expect(ping.status).toBe(200)
    expect(ping.json).toEqual({})
    expect((await h.request('POST', '/_matrix/app/v1/ping', {}, {})).status).toBe(401)
    const user = await h.request('GET', `/_matrix/app/v1/users/${encodeURIComponent('@x:example.org')}`, undefined, auth)
    expect(user.status).toBe(404)
    expect(user.json.errcode).toBe('M_NOT_FOUND')
    const room = await h.request('GET', `/_matrix/app/v1/rooms/${encodeURIComponent('#x:example.org')}`, undefined, auth)
    expect(room.status).toBe(404)
    expect(room.json.errcode).toBe('M_NOT_FOUND')
    expect((await h.request('GET', '/_matrix/app/v1/users/x', undefined, { authorization: 'Bearer nope' })).status).toBe(403)
  })

  test('without MATRIX_HS_TOKEN the messaging routes answer 503 naming it', async () => {
    h = await startMessaging({ env: { MATRIX_HS_TOKEN: undefined } })
    const txn = await h.txn('1', [])
    expect(txn.status).toBe(503)
    expect(txn.json.error).toContain('MATRIX_HS_TOKEN')
    const fetch = await h.fetch('bob')
    expect(fetch.status).toBe(503)
    expect(fetch.json.error).toContain('MATRIX_HS_TOKEN')
  })

  test('a direct chat message reaches the invitee fetch; the reply is in the sender sent list', async () => {
    h = await startMessaging()
    await h.fetch('bob')
    const room = '!dm:example.org'
    const ts = Math.floor(Date.now() / 1000) * 1000 - 60_000
    const hello = text({ room, sender: alice, ts }, 'Hello Bob')
    expect((await h.txn('7', [...directChatSetup(room, alice, bob), hello])).status).toBe(200)
    const got = await h.fetch('bob')
    expect(got.status).toBe(200)
    expect(got.json.date).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/)
    expect(got.json.received_smss).toEqual([
      { sms_id: hello.event_id, sending_date: new Date(ts).toISOString().replace('.000Z', 'Z'), sender: 'alice', sms_text: 'Hello Bob', content_type: 'text/plain', stream_id: 'alice' },
    ])
    expect(got.json.sent_smss).toEqual([])
    const reply = text({ room, sender: bob }, 'Hi Alice')
    expect((await h.txn('9', [member({ room, sender: bob, membership: 'join', displayname: 'Bob' }), reply])).status).toBe(200)
    const again = await h.fetch('bob', { last_id: hello.event_id })
    expect(again.json.received_smss).toEqual([])
    expect(again.json.sent_smss).toEqual([expect.objectContaining({ sms_id: reply.event_id, recipient: 'alice', stream_id: 'alice', sms_text: 'Hi Alice' })])
    expect(again.json.sent_smss[0].sender).toBeUndefined()
  })

  test('a committed txnId is a no-op; a copy arriving while the first runs waits and answers the same', async () => {
    h = await startMessaging()
    await h.fetch('bob')
    const room = '!dm:example.org'
    const first = [...directChatSetup(room, alice, bob), text({ room, sender: alice }, 'one')]
    const [a, b] = await Promise.all([h.txn('11', first), h.txn('11', first)])
    expect([a.status, b.status]).toEqual([200, 200])
    expect(await h.index!.countMessages()).toBe(1)
    // Synapse never changes a transaction's events; if the id comes again, nothing is applied.
    expect((await h.txn('11', [text({ room, sender: alice }, 'two')])).status).toBe(200)
    expect((await h.fetch('bob')).json.received_smss.map((i: any) => i.sms_text)).toEqual(['one'])
    expect(h.logs.parsed().some((l) => l.msg === 'transaction already committed; nothing to do')).toBe(true)
  })

  test('a poison event is logged and skipped; the rest is stored in order and the answer is 200', async () => {
    h = await startMessaging()
    await h.fetch('bob')
    const room = '!dm:example.org'
    const events = [
      ...directChatSetup(room, alice, bob),
      text({ room, sender: alice }, 'before'),
      { type: 'm.room.message', content: 'not an object' },
      member({ room, sender: alice, target: bob, membership: 'sideways' }),
      text({ room, sender: alice }, 'after'),
    ]
    const res = await h.txn('12', events)
    expect(res.status).toBe(200)
    expect(res.json).toEqual({})
    expect((await h.fetch('bob')).json.received_smss.map((i: any) => i.sms_text)).toEqual(['before', 'after'])
    const skipped = h.logs.parsed().filter((l) => l.msg === 'malformed event skipped' || l.msg === 'unexpected event skipped')
    expect(skipped.map((l) => l.position)).toEqual([4, 5])
  })

  test('events apply in the order given: join, message, leave', async () => {
    h = await startMessaging()
    await h.fetch('bob')
    const room = '!group:example.org'
    const events = [
      member({ room, sender: alice, membership: 'join', displayname: 'Alice' }),
      member({ room, sender: bob, membership: 'join', displayname: 'Bob' }),
      text({ room, sender: alice }, 'while bob is here'),
      member({ room, sender: bob, membership: 'leave', prev: { membership: 'join', displayname: 'Bob' } }),
      text({ room, sender: alice }, 'after bob left'),
    ]
    expect((await h.txn('13', events)).status).toBe(200)
    expect((await h.fetch('bob')).json.received_smss.map((i: any) => i.sms_text)).toEqual(['Alice: while bob is here'])
  })

  test('a malformed body is 400 and an oversized one 413; nothing stored', async () => {
    h = await startMessaging()
    const auth = { authorization: `Bearer ${HS_TOKEN}`, 'content-type': 'application/json' }
    const bad = await h.request('PUT', '/_matrix/app/v1/transactions/1', '{"events": [', auth)
    expect(bad.status).toBe(400)
    expect(bad.json.errcode).toBe('M_NOT_JSON')
    const wrong = await h.request('PUT', '/_matrix/app/v1/transactions/1', '{"events": {}}', auth)
    expect(wrong.status).toBe(400)
    expect(wrong.json.errcode).toBe('M_BAD_JSON')
    const big = await h.request('PUT', '/_matrix/app/v1/transactions/1', JSON.stringify({ events: [], pad: 'x'.repeat(8 * 1024 * 1024) }), auth)
    expect(big.status).toBe(413)
    // The id was never committed: Synapse's retry with a proper body is applied.
    expect((await h.txn('1', [])).status).toBe(200)
  })
})
