/**
 * The Matrix client's room calls (src/matrix/client.ts) against the fake Synapse's rooms, with
 * Synapse's answers (FIELD-GUIDE §7).
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { createMatrixClient, MatrixError } from '../../src/matrix/client.ts'
import { startFakeSynapse } from '../fakes/synapse.ts'

const synapse = startFakeSynapse({ users: { alice: 'a', bob: 'b', carol: 'c' } })
afterAll(() => synapse.stop())
const matrix = createMatrixClient({ homeserverUrl: synapse.url, asToken: synapse.asToken, timeoutMs: 5000 })
const alice = '@alice:example.org'
const bob = '@bob:example.org'
const carol = '@carol:example.org'

async function failure(p: Promise<unknown>): Promise<MatrixError> {
  try {
    await p
  } catch (e) {
    if (e instanceof MatrixError) return e
    throw e
  }
  throw new Error('expected a MatrixError')
}

describe('acting as a user', () => {
  test('createRoom as Element makes a direct chat: the exact request, the state it gives', async () => {
    const body = { preset: 'trusted_private_chat', is_direct: true, invite: [bob] }
    const room = await matrix.createRoom(alice, body)
    const call = synapse.calls('/_matrix/client/v3/createRoom').at(-1)!
    expect(call.method).toBe('POST')
    expect(call.query).toEqual({ user_id: alice })
    expect(call.authorization).toBe(`Bearer ${synapse.asToken}`)
    expect(call.body).toEqual(body)
    expect(synapse.rooms.membership(room, bob)).toBe('invite')
    // trusted_private_chat: the invitee gets power level 100 too.
    expect(synapse.rooms.stateContent(room, 'm.room.power_levels')!.users).toEqual({ [alice]: 100, [bob]: 100 })
    expect(await matrix.stateEvent(alice, room, 'm.room.history_visibility')).toEqual({ history_visibility: 'shared' })
    expect(await matrix.stateEvent(alice, room, 'm.room.encryption')).toBeUndefined()
    const invite = synapse.rooms.timeline(room).find((e) => e.type === 'm.room.member' && e.state_key === bob)!
    expect(invite.content).toEqual({ membership: 'invite', displayname: 'bob', is_direct: true })
  })

  test('join only when invited or public; joined_rooms and joined_members follow', async () => {
    const room = await matrix.createRoom(alice, { preset: 'private_chat', name: 'Team' })
    const refused = await failure(matrix.join(bob, room))
    expect([refused.status, refused.errcode]).toEqual([403, 'M_FORBIDDEN'])
    await matrix.invite(alice, room, bob)
    expect(await matrix.join(bob, room)).toBe(room)
    expect(await matrix.joinedRooms(bob)).toContain(room)
    expect(await matrix.joinedMembers(bob, room)).toEqual({
      [alice]: { display_name: 'alice', avatar_url: null },
      [bob]: { display_name: 'bob', avatar_url: null },
    })
    await matrix.leave(bob, room)
    expect(await matrix.joinedRooms(bob)).not.toContain(room)
    const gone = await failure(matrix.joinedMembers(bob, room))
    expect(gone.status).toBe(403)
  })

  test('send: an event id; the same path returns the first event id, even for another user', async () => {
    const room = synapse.directChat(alice, bob)
    const first = await matrix.sendMessage(alice, room, 'txn-1', { msgtype: 'm.text', body: 'hello' })
    expect(first).toMatch(/^\$[A-Za-z0-9_-]{43}$/)
    expect(await matrix.sendMessage(alice, room, 'txn-1', { msgtype: 'm.text', body: 'changed' })).toBe(first)
    expect(await matrix.sendMessage(bob, room, 'txn-1', { msgtype: 'm.text', body: 'from bob' })).toBe(first)
    const texts = synapse.rooms.timeline(room).filter((e) => e.type === 'm.room.message').map((e) => e.content.body)
    expect(texts).toEqual(['hello'])
    const outsider = await failure(matrix.sendMessage(carol, room, 'txn-2', { msgtype: 'm.text', body: 'x' }))
    expect([outsider.status, outsider.errcode]).toEqual([403, 'M_FORBIDDEN'])
  })

  test('getEvent: the event; an edited one announces its edit; a redacted one has empty content; unknown is 404', async () => {
    const room = synapse.directChat(alice, bob)
    const id = synapse.sendText(alice, room, 'hello bob')
    const got = await matrix.getEvent(bob, room, id)
    expect(got).toMatchObject({ event_id: id, room_id: room, sender: alice, type: 'm.room.message', content: { msgtype: 'm.text', body: 'hello bob' } })
    const editId = synapse.edit(alice, room, id, 'hello bob!')
    expect(((await matrix.getEvent(bob, room, id)).unsigned as any)['m.relations']['m.replace'].event_id).toBe(editId)
    synapse.rooms.redact(alice, room, id)
    const redacted = await matrix.getEvent(bob, room, id)
    expect(redacted.content).toEqual({})
    expect((redacted.unsigned as any).redacted_because.type).toBe('m.room.redaction')
    const missing = await failure(matrix.getEvent(bob, room, '$unknown'))
    expect([missing.status, missing.errcode, missing.isNotFound]).toEqual([404, 'M_NOT_FOUND', true])
    const notMember = await failure(matrix.getEvent(carol, room, editId))
    expect(notMember.status).toBe(404)
  })

  test('messages dir=b: newest first, limited, paginated', async () => {
    const room = synapse.directChat(alice, bob)
    for (const n of [1, 2, 3, 4]) synapse.sendText(alice, room, `m${n}`)
    const page = await matrix.roomMessages(bob, room, { dir: 'b', limit: 3 })
    expect(page.chunk.map((e) => e.content.body)).toEqual(['m4', 'm3', 'm2'])
    const next = await matrix.roomMessages(bob, room, { dir: 'b', limit: 2, from: page.end })
    expect(next.chunk[0]!.content.body).toBe('m1')
    expect(synapse.calls(`/_matrix/client/v3/rooms/${encodeURIComponent(room)}/messages`)[0]!.query).toEqual({ user_id: bob, dir: 'b', limit: '3' })
  })

  test('room state: the list, one event, 404 → undefined', async () => {
    const room = await matrix.createRoom(alice, { preset: 'private_chat', name: 'Room, with comma' })
    const state = await matrix.roomState(alice, room)
    expect(state.map((e) => e.type)).toEqual(
      expect.arrayContaining(['m.room.create', 'm.room.member', 'm.room.power_levels', 'm.room.join_rules', 'm.room.history_visibility', 'm.room.name']),
    )
    expect(await matrix.stateEvent(alice, room, 'm.room.name')).toEqual({ name: 'Room, with comma' })
    expect(await matrix.stateEvent(alice, room, 'm.room.member', alice)).toMatchObject({ membership: 'join' })
    expect(await matrix.stateEvent(alice, room, 'm.room.tombstone')).toBeUndefined()
  })

  test('account data: undefined until written, then what was written; only one’s own', async () => {
    expect(await matrix.getAccountData(carol, 'm.direct')).toBeUndefined()
    await matrix.putAccountData(carol, 'm.direct', { [alice]: ['!a:example.org'] })
    expect(await matrix.getAccountData(carol, 'm.direct')).toEqual({ [alice]: ['!a:example.org'] })
    const path = `/_matrix/client/v3/user/${encodeURIComponent(carol)}/account_data/m.direct`
    expect(synapse.calls(path).map((r) => r.method)).toEqual(['GET', 'PUT', 'GET'])
  })

  test('read receipts are recorded', async () => {
    const room = synapse.directChat(alice, bob)
    const id = synapse.sendText(alice, room, 'read me')
    await matrix.readReceipt(bob, room, id)
    expect(synapse.rooms.receipts.at(-1)).toMatchObject({ user: bob, room, eventId: id, type: 'm.read' })
  })

  test('a user the appservice never registered: 403 "has not registered this user"', async () => {
    const e = await failure(matrix.joinedRooms('@nobody:example.org'))
    expect([e.status, e.errcode, e.isNamespaceProblem]).toEqual([403, 'M_FORBIDDEN', true])
    expect(e.message).toContain('Application service has not registered this user')
  })

  test('path segments are URL-encoded', async () => {
    const room = synapse.directChat(alice, bob)
    await failure(matrix.getEvent(bob, room, '$a/b?c#d'))
    const last = synapse.requests.at(-1)!
    expect(last.path).toBe(`/_matrix/client/v3/rooms/${encodeURIComponent(room)}/event/${encodeURIComponent('$a/b?c#d')}`)
    expect(last.query).toEqual({ user_id: bob })
  })
})
