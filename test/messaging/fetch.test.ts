import { afterEach, describe, expect, test } from 'bun:test'
import { SELECTOR, TOKEN, APP_ID } from '../harness.ts'
import { directChatSetup, edit, member, reaction, redaction, state, text, uid } from './events.ts'
import { startMessaging, type Messaging } from './support.ts'

let h: Messaging
afterEach(async () => h?.close())

const alice = uid('alice')
const bob = uid('bob')
const carol = uid('carol')
const dm = '!dm:example.org'
const texts = (items: any[]) => items.map((i) => i.sms_text)

async function directChat(messages: number, from = alice) {
  const events: any[] = [...directChatSetup(dm, alice, bob)]
  for (let i = 1; i <= messages; i++) events.push(text({ room: dm, sender: from }, `m${i}`))
  expect((await h.txn(String(Date.now()), events)).status).toBe(200)
  return events.slice(3)
}

describe('Fetch Messages', () => {
  test('cursors: after last_id; at most 100 per list; the rest on the next fetch; a lost answer is repeated', async () => {
    h = await startMessaging()
    await h.fetch('bob')
    const sent = await directChat(150)
    const first = await h.fetch('bob', { last_id: '' })
    // No cursor and no device: the newest page of the last 7 days, oldest first.
    expect(texts(first.json.received_smss)).toEqual(sent.slice(50).map((e) => e.content.body))
    const fromStart = await h.fetch('bob', { last_id: sent[0].event_id })
    expect(fromStart.json.received_smss).toHaveLength(100)
    expect(fromStart.json.received_smss[0].sms_id).toBe(sent[1].event_id)
    const next = await h.fetch('bob', { last_known_sms_id: fromStart.json.received_smss[99].sms_id })
    expect(texts(next.json.received_smss)).toEqual(sent.slice(101).map((e) => e.content.body))
    // The app lost that answer and asks again with its old cursor: the same items.
    expect((await h.fetch('bob', { last_id: fromStart.json.received_smss[99].sms_id })).json).toEqual({ ...next.json, date: expect.any(String) })
  })

  test('an unknown or foreign last_id falls back to the device cursor, never an error, never a leak', async () => {
    h = await startMessaging()
    await h.fetch('bob')
    await h.fetch('carol')
    const sent = await directChat(3)
    const page = await h.fetch('bob', { device: 'install-1' })
    expect(texts(page.json.received_smss)).toEqual(['m1', 'm2', 'm3'])
    const more = await h.txn('99', [text({ room: dm, sender: alice }, 'm4')])
    expect(more.status).toBe(200)
    // Garbage, and another user's id, both mean "where this device last read".
    const garbage = await h.fetch('bob', { device: 'install-1', last_id: '$nope' })
    expect(garbage.status).toBe(200)
    expect(texts(garbage.json.received_smss)).toEqual(['m4'])
    // The device has now read m4.
    const unknown = await h.fetch('bob', { device: 'install-1', last_id: sent[0].event_id + 'x' })
    expect(unknown.json.received_smss).toEqual([])
    // Carol has no deliveries: bob's event ids tell her nothing.
    const carolView = await h.fetch('carol', { last_id: sent[0].event_id, device: 'c1' })
    expect(carolView.json).toEqual({ date: expect.any(String), received_smss: [], sent_smss: [] })
    // Another device of bob's sees the whole sequence with its own cursor.
    expect(texts((await h.fetch('bob', { device: 'install-2' })).json.received_smss)).toEqual(['m1', 'm2', 'm3', 'm4'])
  })

  test('received and sent lists have independent cursors', async () => {
    h = await startMessaging()
    await h.fetch('bob')
    const [a1] = await directChat(1)
    const b1 = text({ room: dm, sender: bob }, 'b1')
    await h.txn('50', [member({ room: dm, sender: bob, membership: 'join' }), b1, text({ room: dm, sender: alice }, 'a2')])
    const res = await h.fetch('bob', { last_id: a1!.event_id, last_sent_id: b1.event_id })
    expect(texts(res.json.received_smss)).toEqual(['a2'])
    expect(res.json.sent_smss).toEqual([])
  })

  test('form bodies, GET query strings and field aliases; the password is not trimmed', async () => {
    h = await startMessaging({ synapse: { users: { bob: ' bob pass ' } } })
    const form = await h.request('POST', '/api/client/fetch_messages', 'username=%20bob%20&password=%20bob%20pass%20&last_known_sms_id=', {
      'content-type': 'application/x-www-form-urlencoded',
    })
    expect(form.status).toBe(200)
    expect(form.json).toEqual({ date: expect.any(String), received_smss: [], sent_smss: [] })
    const get = await h.request('GET', '/api/client/fetch_messages?username=bob&password=%20bob%20pass%20&last_id=&device=x')
    expect(get.status).toBe(200)
    const wrong = await h.request('POST', '/api/client/fetch_messages', 'username=bob&password=bob%20pass', { 'content-type': 'application/x-www-form-urlencoded' })
    expect(wrong.status).toBe(401)
  })

  test('bad input is a clear 4xx; missing credentials 401', async () => {
    h = await startMessaging()
    const notJson = await h.request('POST', '/api/client/fetch_messages', '{"username":', { 'content-type': 'application/json' })
    expect(notJson.status).toBe(400)
    expect(notJson.json.error).toBeString()
    const wrongType = await h.request('POST', '/api/client/fetch_messages', { username: 'bob', password: 'bob-password', last_id: 5 })
    expect(wrongType.status).toBe(400)
    expect(wrongType.json.error).toContain('last_id')
    expect((await h.request('POST', '/api/client/fetch_messages', { username: 'bob' })).status).toBe(401)
    const big = await h.request('POST', '/api/client/fetch_messages', { username: 'bob', password: 'x'.repeat(10_000) })
    expect(big.status).toBe(413)
  })

  test('AUTH_MODE=none: fetch is refused with 403 saying why', async () => {
    h = await startMessaging({ env: { AUTH_MODE: 'none' } })
    const res = await h.fetch('bob')
    expect(res.status).toBe(403)
    expect(res.json.error).toContain('AUTH_MODE=matrix')
  })

  test('groups: the room name as address (spaces and commas replaced), the author name before each text, unique per user, old address kept', async () => {
    h = await startMessaging()
    await h.fetch('bob')
    const g1 = '!g1:example.org'
    const g2 = '!g2:example.org'
    const setup = (room: string) => [
      member({ room, sender: alice, membership: 'join', displayname: 'Alice A' }),
      member({ room, sender: bob, membership: 'join', displayname: 'Bob' }),
      member({ room, sender: carol, membership: 'join', displayname: 'Carol' }),
      state({ room, sender: alice }, 'm.room.name', { name: 'Team, Berlin' }),
    ]
    await h.txn('1', [...setup(g1), text({ room: g1, sender: alice }, 'hello team'), ...setup(g2), text({ room: g2, sender: carol }, 'other team')])
    const res = await h.fetch('bob')
    expect(res.json.received_smss.map((i: any) => [i.sender, i.stream_id, i.sms_text])).toEqual([
      ['Team\u201a\u00a0Berlin', 'Team\u201a\u00a0Berlin', 'Alice A: hello team'],
      ['Team\u201a\u00a0Berlin\u00a0(2)', 'Team\u201a\u00a0Berlin\u00a0(2)', 'Carol: other team'],
    ])
    await h.txn('2', [state({ room: g1, sender: alice }, 'm.room.name', { name: 'Renamed' }), text({ room: g1, sender: bob }, 'mine')])
    const after = await h.fetch('bob', { last_id: res.json.received_smss[1].sms_id })
    expect(after.json.sent_smss.map((i: any) => [i.recipient, i.sms_text])).toEqual([['Renamed', 'Bob: mine']])
    const rows = await h.index!.write(async (tx) => [await tx.addressTaken(bob, 'Team\u201a\u00a0Berlin'), await tx.addressTaken(bob, 'Renamed')])
    expect(rows).toEqual([g1, g1])
  })

  test('edits, redactions, reactions: what is shown and what is hidden', async () => {
    h = await startMessaging()
    await h.fetch('bob')
    const [m1, m2] = await directChat(2)
    const e1 = edit({ room: dm, sender: alice }, m1!.event_id, 'm1 fixed')
    const forged = edit({ room: dm, sender: carol }, m2!.event_id, 'forged')
    const e2 = edit({ room: dm, sender: alice }, m2!.event_id, 'm2 fixed')
    await h.txn('3', [e1, forged, e2, reaction({ room: dm, sender: alice }, m1!.event_id, '👍'), edit({ room: dm, sender: alice }, e1.event_id, 'edit of edit')])
    expect(texts((await h.fetch('bob')).json.received_smss)).toEqual(['m1', 'm2', '✎ m1 fixed', '✎ m2 fixed'])
    // Redacting an edit hides it; redacting an original hides it and all its edits (room v11: content.redacts).
    await h.txn('4', [redaction({ room: dm, sender: alice }, e2.event_id), redaction({ room: dm, sender: alice }, m1!.event_id)])
    expect(texts((await h.fetch('bob')).json.received_smss)).toEqual(['m2'])
    // A redacted message's id stays a valid cursor.
    const m3 = text({ room: dm, sender: alice }, 'm3')
    await h.txn('5', [m3])
    expect(texts((await h.fetch('bob', { last_id: m1!.event_id })).json.received_smss)).toEqual(['m2', 'm3'])
    // And it never comes back: an event arriving again after its redaction stays hidden.
    await h.txn('6', [{ ...m1 }])
    expect(texts((await h.fetch('bob')).json.received_smss)).toEqual(['m2', 'm3'])
  })

  test('a user who joins gets the room messages since their invite, once; a leave stops delivery', async () => {
    h = await startMessaging()
    await h.fetch('alice')
    const room = '!g:example.org'
    await h.txn('1', [
      member({ room, sender: alice, membership: 'join', displayname: 'Alice' }),
      text({ room, sender: alice }, 'before invite'),
      member({ room, sender: alice, target: bob, membership: 'invite' }),
      text({ room, sender: alice }, 'after invite'),
    ])
    // Bob enrols only now (his first fetch), then joins.
    expect((await h.fetch('bob')).json.received_smss).toEqual([])
    await h.txn('2', [member({ room, sender: bob, membership: 'join', displayname: 'Bob', prev: { membership: 'invite' } })])
    expect(texts((await h.fetch('bob')).json.received_smss)).toEqual(['Alice: after invite'])
    // A display-name change is not a join: nothing delivered again.
    await h.txn('3', [member({ room, sender: bob, membership: 'join', displayname: 'Bobby', prev: { membership: 'join', displayname: 'Bob' } }), text({ room, sender: alice }, 'x')])
    await h.txn('4', [member({ room, sender: bob, membership: 'leave', prev: { membership: 'join' } }), text({ room, sender: alice }, 'after leave')])
    const all = await h.fetch('bob', { device: 'd' })
    expect(texts(all.json.received_smss)).toEqual(['Alice: after invite', 'Alice: x'])
  })

  test('a token report enrols the user: their messages are indexed from then on', async () => {
    h = await startMessaging()
    expect((await h.report({ selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, username: 'bob', password: 'bob-password' })).status).toBe(200)
    expect(await h.index!.isEnrolled(bob)).toBe(true)
    await directChat(1)
    expect(await h.index!.countMessages()).toBe(1)
  })

  test('rooms without an enrolled member store no messages', async () => {
    h = await startMessaging()
    await directChat(2)
    expect(await h.index!.countMessages()).toBe(0)
  })
})
