/**
 * Send Message with the rest of messaging: the id the sender gets is the id the recipient's fetch
 * and push carry; the sender's other devices see it; a reply from Element comes back into the same
 * conversation; the recipient's read report becomes a receipt.
 */
import { afterEach, describe, expect, test } from 'bun:test'
import { APP_ID, SELECTOR, TOKEN } from '../harness.ts'
import { uid } from './events.ts'
import { startMessaging, type Messaging } from './support.ts'

let h: Messaging
afterEach(async () => h?.close())

const alice = uid('alice')
const bob = uid('bob')
const PATH = '/api/client/send_message'
const send = (user: string, to: string, body: string, more: Record<string, string> = {}) =>
  h.request('POST', PATH, { username: user, password: `${user}-password`, to, body, ...more })
/** alice starts a direct chat with bob from Element and writes in it; the proxy has read it. */
async function elementChat(text: string) {
  const room = h.synapse.directChat(alice, bob)
  h.synapse.sendText(alice, room, text)
  await h.settle()
  return room
}
/** carol makes a group named "alice", bob joins, carol writes in it; the proxy has read it. */
async function groupCalledAlice(text: string) {
  const room = h.synapse.rooms.createRoom(uid('carol'), { preset: 'private_chat', invite: [bob], name: 'alice' })
  h.synapse.rooms.join(bob, room)
  h.synapse.sendText(uid('carol'), room, text)
  await h.settle()
  return room
}

describe('send, fetch and push agree', () => {
  test('alice sends to bob (a phone user): one room, joined for bob, the same id in his fetch and push and in alice’s sent list', async () => {
    h = await startMessaging()
    // bob is a phone user: his token report enrols him and registers his pusher.
    expect((await h.report({ selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, username: 'bob', password: 'bob-password' })).status).toBe(200)
    await h.settle()
    const sent = await send('alice', 'bob', 'hello bob')
    expect(sent.status).toBe(200)
    const id = sent.json.sms_id
    const room = h.synapse.rooms.findEvent(id)!.room_id
    // The phone user cannot accept an invite elsewhere: the proxy accepted it as bob.
    expect(h.synapse.rooms.membership(room, bob)).toBe('join')
    await h.settle()

    const bobFetch = (await h.fetch('bob', { device: 'bob-phone' })).json
    expect(bobFetch.received_smss).toEqual([expect.objectContaining({ sms_id: id, sender: 'alice', stream_id: 'alice', sms_text: 'hello bob' })])
    expect((await h.notify({ event_id: id, room_id: room, prio: 'high', counts: { unread: 1 }, devices: [{ app_id: APP_ID, pushkey: TOKEN, pushkey_ts: 1, data: { format: 'event_id_only' } }] })).status).toBe(200)
    const push = h.pnm.bodies().at(-1)
    expect([push.Id, push.UserName, push.ThreadId]).toEqual([id, 'alice', 'alice'])

    // Any device of alice: the message is in her sent list, addressed to bob.
    const other = (await h.fetch('alice', { device: 'alice-tablet' })).json
    expect(other.sent_smss).toEqual([expect.objectContaining({ sms_id: id, recipient: 'bob', stream_id: 'bob', sms_text: 'hello bob' })])

    // bob answers from the app: the same room, no second room; alice receives it from bob.
    const reply = await send('bob', 'alice', 'hi alice')
    expect(h.synapse.rooms.findEvent(reply.json.sms_id)!.room_id).toBe(room)
    expect(h.synapse.calls('/_matrix/client/v3/createRoom')).toHaveLength(1)
    await h.settle()
    const aliceFetch = (await h.fetch('alice', { device: 'alice-phone' })).json
    expect(aliceFetch.received_smss).toEqual([expect.objectContaining({ sms_id: reply.json.sms_id, sender: 'bob', sms_text: 'hi alice' })])

    // alice's app reports the reply as displayed: a read receipt, nothing posted.
    const before = h.synapse.rooms.timeline(room).length
    const report = await send('alice', 'bob', JSON.stringify({ 'message-id': reply.json.sms_id, 'display-notification': { status: 'displayed' } }), {
      content_type: 'application/x-acro-disposition-notification',
    })
    expect(report.status).toBe(200)
    expect(report.json.sms_id).not.toBe(reply.json.sms_id)
    expect(h.synapse.rooms.receipts.at(-1)).toMatchObject({ user: alice, room, eventId: reply.json.sms_id, type: 'm.read' })
    expect(h.synapse.rooms.timeline(room).length).toBe(before)
  })

  test('first messages sent at once from two phones of the pair: one room; a replayed request: one event', async () => {
    h = await startMessaging()
    const answers = await Promise.all([
      send('alice', 'bob', 'one'),
      send('bob', 'alice', 'two'),
      send('alice', '@bob:example.org', 'three'),
      send('alice', 'bob', 'one'),
    ])
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200])
    expect(h.synapse.calls('/_matrix/client/v3/createRoom')).toHaveLength(1)
    // The replay of "one" shared the first call.
    expect(answers[3]!.json.sms_id).toBe(answers[0]!.json.sms_id)
    const rooms = new Set(answers.map((a) => h.synapse.rooms.findEvent(a.json.sms_id)!.room_id))
    expect(rooms.size).toBe(1)
    const [room] = rooms
    expect(h.synapse.rooms.timeline(room!).filter((e) => e.type === 'm.room.message')).toHaveLength(3)
  })

  test('a chat Element started is answered in that room; m.direct written by nobody is no obstacle', async () => {
    h = await startMessaging()
    await h.fetch('bob')
    const room = await elementChat('from Element')
    const reply = await send('bob', 'alice', 'from the phone')
    expect(reply.status).toBe(200)
    expect(h.synapse.rooms.findEvent(reply.json.sms_id)!.room_id).toBe(room)
    expect(h.synapse.calls('/_matrix/client/v3/createRoom')).toHaveLength(0)
  })

  test('createRoom answered 5xx after Synapse made the room: 503, and the app’s retry uses that room (no second room)', async () => {
    h = await startMessaging({ compose: { sendRetryDelaysMs: [10], sendBudgetMs: 500 } })
    await h.fetch('bob')
    let made: string | undefined
    h.synapse.override((req) => {
      if (req.path !== '/_matrix/client/v3/createRoom' || made !== undefined) return undefined
      // The room exists on the homeserver; only the answer is lost.
      made = h.synapse.rooms.createRoom(req.query.user_id!, req.body)
      return new Response('upstream timed out', { status: 504 })
    })
    const first = await send('alice', 'bob', 'are you there?')
    expect(first.status).toBe(503)
    await h.settle()
    const retry = await send('alice', 'bob', 'are you there?')
    expect(retry.status).toBe(200)
    expect(h.synapse.rooms.findEvent(retry.json.sms_id)!.room_id).toBe(made!)
    expect(h.synapse.rooms.joinedRooms(alice)).toEqual([made!])
  })

  test('a group: the address the fetch showed sends into that room', async () => {
    h = await startMessaging()
    await h.fetch('bob')
    const room = h.synapse.rooms.createRoom(alice, { preset: 'private_chat', invite: [bob, uid('carol')], name: 'Book club' })
    h.synapse.rooms.join(bob, room)
    h.synapse.sendText(alice, room, 'chapter 3 tonight')
    await h.settle()
    const item = (await h.fetch('bob')).json.received_smss.at(-1)
    expect(item.stream_id).toBe('Book\u00a0club')
    const reply = await send('bob', item.stream_id, 'I will be there')
    expect(reply.status).toBe(200)
    expect(h.synapse.rooms.findEvent(reply.json.sms_id)!.room_id).toBe(room)
  })

  test('a group named after a user the member chats with gets another address; a reply to that user goes to the direct chat', async () => {
    h = await startMessaging()
    await h.fetch('bob')
    const direct = await elementChat('just us')
    const group = await groupCalledAlice('reply here, bob')
    const items = (await h.fetch('bob')).json.received_smss
    expect(items.map((i: { stream_id: string; sms_text: string }) => [i.stream_id, i.sms_text])).toEqual([
      ['alice', 'just us'],
      ['alice\u00a0(2)', 'carol: reply here, bob'],
    ])
    const toAlice = await send('bob', 'alice', 'for alice only')
    expect(toAlice.status).toBe(200)
    expect(h.synapse.rooms.findEvent(toAlice.json.sms_id)!.room_id).toBe(direct)
    const toGroup = await send('bob', 'alice\u00a0(2)', 'for the group')
    expect(h.synapse.rooms.findEvent(toGroup.json.sms_id)!.room_id).toBe(group)
  })

  test('a group that got a user\'s address before the direct chat existed: a reply to that user still goes to the direct chat', async () => {
    h = await startMessaging()
    await h.fetch('bob')
    await groupCalledAlice('a group called alice')
    expect((await h.fetch('bob')).json.received_smss.map((i: { stream_id: string }) => i.stream_id)).toEqual(['alice'])
    const direct = await elementChat('now a direct chat')
    const reply = await send('bob', 'alice', 'to alice')
    expect(reply.status).toBe(200)
    expect(h.synapse.rooms.findEvent(reply.json.sms_id)!.room_id).toBe(direct)
  })
})
