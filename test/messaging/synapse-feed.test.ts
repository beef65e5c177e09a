/** Messaging against the fake Synapse: its real transactions in, jobs out as the users, fetch from the index. */
import { afterEach, describe, expect, test } from 'bun:test'
import { eventually } from '../harness.ts'
import { uid } from './events.ts'
import { startMessaging, type Messaging } from './support.ts'

let h: Messaging
afterEach(async () => h?.close())

const alice = uid('alice')
const bob = uid('bob')
const carol = uid('carol')
const texts = (items: any[]) => items.map((i) => i.sms_text)

describe('messaging with the fake Synapse feed', () => {
  test('AUTO_JOIN_DIRECT: an enrolled invitee joins a new direct chat, records it in m.direct, and reads the first message', async () => {
    h = await startMessaging()
    await h.fetch('bob')
    const room = h.synapse.rooms.createRoom(alice, { preset: 'trusted_private_chat', invite: [bob], is_direct: true })
    const first = h.synapse.sendText(alice, room, 'first message')
    await h.settle()
    await eventually(() => h.synapse.rooms.membership(room, bob) === 'join')
    await h.settle()
    expect(h.synapse.rooms.accountDataOf(bob, 'm.direct')).toEqual({ [alice]: [room] })
    const got = await h.fetch('bob')
    expect(got.json.received_smss).toEqual([expect.objectContaining({ sms_id: first, sender: 'alice', stream_id: 'alice', sms_text: 'first message' })])
    // The join was made as bob (as_token + ?user_id=).
    const join = h.synapse.requests.find((r) => /\/join\/|\/rooms\/[^/]+\/join$/.test(r.path))
    expect(join?.query.user_id).toBe(bob)
  })

  test('AUTO_JOIN_DIRECT never joins a room of more than two members, nor invites by the appservice user', async () => {
    h = await startMessaging()
    await h.fetch('bob')
    const room = h.synapse.rooms.createRoom(alice, { preset: 'private_chat', invite: [carol] })
    h.synapse.rooms.join(carol, room)
    h.synapse.rooms.invite(alice, room, bob, true)
    // The appservice's own user (whoami with the as_token) inviting to a direct chat.
    const own = h.synapse.rooms.createRoom('@appservice:example.org', { preset: 'trusted_private_chat', invite: [bob], is_direct: true })
    await h.settle()
    expect(h.synapse.rooms.membership(room, bob)).toBe('invite')
    expect(h.synapse.rooms.membership(own, bob)).toBe('invite')
    expect(h.synapse.requests.filter((r) => /\/join\/|\/rooms\/[^/]+\/join$/.test(r.path))).toEqual([])
  })

  test('a direct-chat invite from before enrolment is accepted by the catch-up, which then reads its history', async () => {
    h = await startMessaging()
    const room = h.synapse.rooms.createRoom(alice, { preset: 'trusted_private_chat', invite: [bob], is_direct: true })
    const first = h.synapse.sendText(alice, room, 'are you there?')
    await h.settle()
    expect(await h.index!.countMessages()).toBe(0)
    await h.fetch('bob')
    await h.settle()
    expect(h.synapse.rooms.membership(room, bob)).toBe('join')
    expect(h.synapse.rooms.accountDataOf(bob, 'm.direct')).toEqual({ [alice]: [room] })
    expect((await h.fetch('bob')).json.received_smss).toEqual([expect.objectContaining({ sms_id: first, sender: 'alice', sms_text: 'are you there?' })])
  })

  test('invites the proxy never saw (messaging was off) are read at enrolment: a direct chat is accepted and read', async () => {
    h = await startMessaging()
    // As with `url: null`: Synapse sends these events to no appservice.
    h.synapse.appservice.pause()
    const room = h.synapse.rooms.createRoom(alice, { preset: 'trusted_private_chat', invite: [bob], is_direct: true })
    const first = h.synapse.sendText(alice, room, 'sent before messaging was on')
    h.synapse.appservice.dropQueued()
    h.synapse.appservice.resume()
    await h.fetch('bob')
    await h.settle()
    const sync = h.synapse.requests.find((r) => r.path === '/_matrix/client/v3/sync')
    expect(sync?.query).toMatchObject({ user_id: bob, timeout: '0' })
    expect(h.synapse.rooms.membership(room, bob)).toBe('join')
    expect(h.synapse.rooms.accountDataOf(bob, 'm.direct')).toEqual({ [alice]: [room] })
    expect((await h.fetch('bob')).json.received_smss).toEqual([
      expect.objectContaining({ sms_id: first, sender: 'alice', stream_id: 'alice', sms_text: 'sent before messaging was on' }),
    ])
  })

  test('a group invite the proxy never saw is learned at enrolment (named, not joined); messages then reach the invitee', async () => {
    h = await startMessaging()
    h.synapse.appservice.pause()
    const room = h.synapse.rooms.createRoom(alice, { preset: 'private_chat', name: 'Team, Room', invite: [carol] })
    h.synapse.rooms.join(carol, room)
    h.synapse.rooms.invite(alice, room, bob)
    h.synapse.appservice.dropQueued()
    h.synapse.appservice.resume()
    await h.fetch('bob')
    await h.settle()
    expect(h.synapse.rooms.membership(room, bob)).toBe('invite')
    const later = h.synapse.sendText(carol, room, 'welcome')
    await h.settle()
    // carol set no display name, and joined before the proxy listened: her user id stands for it.
    expect(texts((await h.fetch('bob')).json.received_smss)).toEqual([`${carol}: welcome`])
    // The conversation's address is the room's name, spaces and commas replaced (the app splits on both).
    const [item] = (await h.fetch('bob', { device: 'other' })).json.received_smss
    expect(item).toMatchObject({ sms_id: later, sender: 'Team\u201a\u00a0Room', stream_id: 'Team\u201a\u00a0Room' })
  })

  test('enrolment catch-up: rooms, members, names and recent messages from before the first fetch', async () => {
    h = await startMessaging()
    const room = h.synapse.rooms.createRoom(alice, { preset: 'private_chat', invite: [bob, carol], name: 'Old Friends' })
    h.synapse.rooms.join(bob, room)
    h.synapse.rooms.join(carol, room)
    for (let i = 1; i <= 60; i++) h.synapse.sendText(i % 2 ? alice : bob, room, `old ${i}`)
    await h.settle()
    expect(await h.index!.countMessages()).toBe(0)
    await h.fetch('bob')
    await h.settle()
    const got = await h.fetch('bob', { device: 'phone' })
    // The last 50 messages of the room: received ones and bob's own sent ones.
    expect(got.json.received_smss.length + got.json.sent_smss.length).toBe(50)
    expect(got.json.received_smss[0].stream_id).toBe('Old\u00a0Friends')
    expect(got.json.received_smss.at(-1).sms_text).toBe(`${h.synapse.rooms.joinedMembers(alice, room)[alice]?.display_name ?? alice}: old 59`)
    // From now on the stream delivers the rest.
    h.synapse.sendText(carol, room, 'new one')
    await h.settle()
    expect(texts((await h.fetch('bob', { device: 'phone' })).json.received_smss)).toEqual([expect.stringContaining('new one')])
  })

  test('catch-up: a chat of two is direct when the invite said so or the peer\'s m.direct lists it, though the user\'s own does not', async () => {
    h = await startMessaging()
    // Made while messaging was off: no event of it reaches the proxy (registration url null).
    h.synapse.appservice.pause()
    // Element made both; bob joined from another client that wrote no m.direct.
    const invited = h.synapse.rooms.createRoom(alice, { preset: 'trusted_private_chat', invite: [bob], is_direct: true })
    h.synapse.rooms.join(bob, invited)
    h.synapse.sendText(alice, invited, 'invited as direct')
    const listed = h.synapse.rooms.createRoom(carol, { preset: 'private_chat', invite: [bob] })
    h.synapse.rooms.join(bob, listed)
    h.synapse.rooms.putAccountData(carol, 'm.direct', { [bob]: [listed] })
    h.synapse.sendText(carol, listed, 'listed by carol')
    // Neither: a room of two that nobody called direct stays a group.
    const plain = h.synapse.rooms.createRoom(carol, { preset: 'private_chat', invite: [bob], name: 'Two of us' })
    h.synapse.rooms.join(bob, plain)
    h.synapse.sendText(carol, plain, 'just a room')
    // Filler, so that the first invite is no longer in the 50 events the catch-up reads: alice's
    // m.direct (Element writes the inviter's) tells.
    h.synapse.rooms.putAccountData(alice, 'm.direct', { [bob]: [invited] })
    // And one whose invite is among them, listed by nobody.
    const recent = h.synapse.rooms.createRoom(uid('dave'), { preset: 'trusted_private_chat', invite: [bob], is_direct: true })
    h.synapse.rooms.join(bob, recent)
    h.synapse.sendText(uid('dave'), recent, 'invite in the history')
    for (let i = 0; i < 60; i++) h.synapse.sendText(alice, invited, `more ${i}`)
    h.synapse.appservice.dropQueued()
    h.synapse.appservice.resume()
    await h.fetch('bob')
    await h.settle()
    const got = (await h.fetch('bob', { device: 'phone' })).json.received_smss
    const by = (text: string) => got.find((i: { sms_text: string }) => i.sms_text.endsWith(text))
    expect(by('more 59')).toMatchObject({ stream_id: 'alice', sms_text: 'more 59' })
    expect(by('listed by carol')).toMatchObject({ stream_id: 'carol', sms_text: 'listed by carol' })
    expect(by('invite in the history')).toMatchObject({ stream_id: 'dave', sms_text: 'invite in the history' })
    expect(by('just a room')).toMatchObject({ stream_id: 'Two\u00a0of\u00a0us' })
  })

  test('a catch-up that fails is retried until it succeeds', async () => {
    h = await startMessaging()
    const room = h.synapse.rooms.createRoom(alice, { preset: 'private_chat', invite: [bob] })
    h.synapse.rooms.join(bob, room)
    h.synapse.sendText(alice, room, 'earlier')
    await h.settle()
    let failures = 0
    h.synapse.override((req) => (req.path.endsWith('/joined_rooms') && failures++ < 2 ? Response.json({ errcode: 'M_UNKNOWN', error: 'down' }, { status: 502 }) : undefined))
    await h.fetch('bob')
    await eventually(async () => (await h.fetch('bob')).json.received_smss.length === 1, 8000)
    expect(failures).toBeGreaterThanOrEqual(3)
  })

  test('room upgrade: enrolled members follow the tombstone and the conversation keeps its address', async () => {
    h = await startMessaging()
    await h.fetch('bob')
    const room = h.synapse.rooms.createRoom(alice, { preset: 'private_chat', invite: [bob, carol], name: 'Project' })
    h.synapse.rooms.join(bob, room)
    h.synapse.rooms.join(carol, room)
    h.synapse.sendText(alice, room, 'in the old room')
    await h.settle()
    // Element's upgrade dialog invites the old room's members.
    const next = h.synapse.rooms.createRoom(alice, { preset: 'private_chat', invite: [bob, carol], name: 'Project v2', creation_content: { predecessor: { room_id: room, event_id: '$x' } } })
    h.synapse.tombstone(alice, room, next)
    await h.settle()
    await eventually(() => h.synapse.rooms.membership(next, bob) === 'join')
    h.synapse.sendText(alice, next, 'in the new room')
    await h.settle()
    const got = await h.fetch('bob')
    expect(got.json.received_smss.map((i: any) => i.stream_id)).toEqual(['Project', 'Project'])
  })
})

describe('messaging switched on later', () => {
  test('users who reported a token while messaging was off are enrolled and caught up at start', async () => {
    const { tempDir, SELECTOR, TOKEN, APP_ID } = await import('../harness.ts')
    const { rmSync } = await import('node:fs')
    const dir = tempDir()
    try {
      const db = `${dir}/tokens.db`
      const off = await startMessaging({ env: { MATRIX_HS_TOKEN: undefined, PUSH_TOKEN_DB_PATH: db } })
      expect((await off.report({ selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, username: 'bob', password: 'bob-password' })).status).toBe(200)
      await off.close()
      h = await startMessaging({ env: { PUSH_TOKEN_DB_PATH: db } })
      await eventually(async () => h.index!.isEnrolled(bob))
      await eventually(() => h.synapse.requests.some((r) => r.path.endsWith('/joined_rooms') && r.query.user_id === bob))
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
