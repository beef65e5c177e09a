/** With messaging on, a push names the message as the fetch it triggers will: Id, UserName, ThreadId. */
import { afterEach, describe, expect, test } from 'bun:test'
import { APP_ID, SELECTOR, TOKEN } from '../harness.ts'
import { uid } from './events.ts'
import { startMessaging, type Messaging } from './support.ts'

let h: Messaging
afterEach(async () => h?.close())

const alice = uid('alice')
const bob = uid('bob')
const carol = uid('carol')

const eventIdOnly = (eventId: string, roomId: string) => ({
  event_id: eventId,
  room_id: roomId,
  prio: 'high',
  counts: { unread: 1 },
  devices: [{ app_id: APP_ID, pushkey: TOKEN, pushkey_ts: 1_700_000_000, data: { format: 'event_id_only' } }],
})

async function bobReports() {
  expect((await h.report({ selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, username: 'bob', password: 'bob-password' })).status).toBe(200)
}

describe('push and fetch agree', () => {
  test('a group message: Id = sms_id, UserName = sender, ThreadId = stream_id', async () => {
    h = await startMessaging()
    await bobReports()
    const room = h.synapse.rooms.createRoom(alice, { preset: 'private_chat', invite: [bob, carol], name: 'Book club' })
    h.synapse.rooms.join(bob, room)
    h.synapse.rooms.join(carol, room)
    const id = h.synapse.sendText(carol, room, 'chapter 3 tonight')
    await h.settle()
    expect((await h.notify(eventIdOnly(id, room))).status).toBe(200)
    const fetched = (await h.fetch('bob')).json.received_smss.find((i: any) => i.sms_id === id)
    const push = h.pnm.bodies().at(-1)
    expect(push.Id).toBe(fetched.sms_id)
    expect(push.UserName).toBe(fetched.sender)
    expect(push.ThreadId).toBe(fetched.stream_id)
    expect(push.ThreadId).toBe('Book\u00a0club')
    expect(push.Message).toBe(fetched.sms_text)
  })

  test('a push before its transaction: the event is fetched as the user and indexed, so the fetch finds it', async () => {
    h = await startMessaging()
    await bobReports()
    const room = h.synapse.rooms.createRoom(alice, { preset: 'trusted_private_chat', invite: [bob], is_direct: true })
    await h.settle()
    h.synapse.appservice.pause()
    const id = h.synapse.sendText(alice, room, 'racing the transaction')
    expect((await h.notify(eventIdOnly(id, room))).status).toBe(200)
    const fill = h.synapse.requests.find((r) => r.path.endsWith(`/event/${encodeURIComponent(id)}`) || r.path.endsWith(`/event/${id}`))
    expect(fill?.query.user_id).toBe(bob)
    const push = h.pnm.bodies().at(-1)
    expect(push).toMatchObject({ Id: id, UserName: 'alice', ThreadId: 'alice', Message: 'racing the transaction' })
    const fetched = await h.fetch('bob')
    expect(fetched.json.received_smss.map((i: any) => i.sms_id)).toContain(id)
    // The transaction arrives later: stored once, delivered once.
    h.synapse.appservice.resume()
    await h.settle()
    expect((await h.fetch('bob', { last_id: '' })).json.received_smss.filter((i: any) => i.sms_id === id)).toHaveLength(1)
  })

  test('event_id_only with NotifyGenericTextMessage: Message and UserName come from the index', async () => {
    h = await startMessaging({ env: { PNM_VERB: 'NotifyGenericTextMessage' } })
    await bobReports()
    const room = h.synapse.rooms.createRoom(alice, { preset: 'trusted_private_chat', invite: [bob], is_direct: true })
    const id = h.synapse.sendText(alice, room, 'read me on the lock screen')
    await h.settle()
    expect((await h.notify(eventIdOnly(id, room))).status).toBe(200)
    expect(h.pnm.bodies().at(-1)).toMatchObject({ verb: 'NotifyGenericTextMessage', Message: 'read me on the lock screen', UserName: 'alice', Id: id, ThreadId: 'alice' })
  })

  test('the event not to be had, in a direct chat the index knows: the push still names it as the fetch will', async () => {
    h = await startMessaging()
    await bobReports()
    const room = h.synapse.rooms.createRoom(alice, { preset: 'trusted_private_chat', invite: [bob], is_direct: true })
    h.synapse.rooms.join(bob, room)
    h.synapse.sendText(alice, room, 'first')
    await h.settle()
    h.synapse.appservice.pause()
    h.synapse.override((req) => (req.path.includes('/event/') ? Response.json({ errcode: 'M_UNKNOWN', error: 'busy' }, { status: 500 }) : undefined))
    const id = h.synapse.sendText(alice, room, 'the fill fails')
    const full = { ...eventIdOnly(id, room), type: 'm.room.message', sender: alice, content: { msgtype: 'm.text', body: 'the fill fails' } }
    full.devices = [{ ...full.devices[0]!, data: {} as never }]
    expect((await h.notify(full)).status).toBe(200)
    expect(h.pnm.bodies().at(-1)).toMatchObject({ Id: id, UserName: 'alice', ThreadId: 'alice', Message: 'the fill fails' })
    h.synapse.appservice.resume()
    await h.settle()
    const fetched = (await h.fetch('bob')).json.received_smss.find((i: any) => i.sms_id === id)
    expect([fetched.sender, fetched.stream_id]).toEqual(['alice', 'alice'])
  })

  test('when the homeserver cannot give the event, the push is still sent as before', async () => {
    h = await startMessaging({ env: { PNM_VERB: 'NotifyGenericTextMessage' } })
    await bobReports()
    h.synapse.override((req) => (req.path.includes('/event/') ? Response.json({ errcode: 'M_NOT_FOUND', error: 'nope' }, { status: 404 }) : undefined))
    expect((await h.notify(eventIdOnly('$unknown', '!r:example.org'))).status).toBe(200)
    expect(h.pnm.bodies().at(-1)).toMatchObject({ verb: 'NotifyGenericTextMessage', Id: '$unknown', Message: 'New message', ThreadId: '!r:example.org' })
  })
})
