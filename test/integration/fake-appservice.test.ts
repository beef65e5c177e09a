/**
 * The fake Synapse's appservice feed behaves as Synapse does (FIELD-GUIDE §7), so tests of the
 * proxy's transaction route can trust it: format, batching, retries, ping. The "proxy" here is a
 * small recording server whose answers each test chooses.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { createMatrixClient, MatrixError } from '../../src/matrix/client.ts'
import { startFakeSynapse } from '../fakes/synapse.ts'

interface Received {
  method: string
  path: string
  authorization: string | null
  body: any
}

function startReceiver() {
  const received: Received[] = []
  let answer: (r: Received, n: number) => Response | Promise<Response> = () => Response.json({})
  const server = Bun.serve({
    hostname: '127.0.0.1',
    port: 0,
    idleTimeout: 0,
    async fetch(request) {
      const r: Received = {
        method: request.method,
        path: new URL(request.url).pathname,
        authorization: request.headers.get('authorization'),
        body: await request.json(),
      }
      received.push(r)
      return answer(r, received.length)
    },
  })
  return {
    url: `http://127.0.0.1:${server.port}`,
    received,
    transactions: () => received.filter((r) => r.path.startsWith('/_matrix/app/v1/transactions/')),
    answer: (fn: typeof answer) => {
      answer = fn
    },
    stop: () => server.stop(true),
  }
}

const alice = '@alice:example.org'
const bob = '@bob:example.org'
const cleanups: Array<() => void> = []
afterAll(() => cleanups.forEach((f) => f()))

function setup(sender = {}) {
  const receiver = startReceiver()
  const synapse = startFakeSynapse({ sender: { retryDelayMs: () => 30, ...sender }, pingTimeoutMs: 300 })
  synapse.connectAppservice({ url: receiver.url })
  cleanups.push(() => synapse.stop(), () => receiver.stop())
  return { receiver, synapse }
}
const txnIdOf = (r: Received) => r.path.split('/').pop()!

describe('transactions', () => {
  test('events in client format with the legacy copies, PUT with the hs_token', async () => {
    const { receiver, synapse } = setup()
    const room = synapse.directChat(alice, bob)
    const id = synapse.sendText(alice, room, 'hello bob')
    await synapse.appservice.flushed()
    const txns = receiver.transactions()
    expect(txns.every((t) => t.method === 'PUT' && t.authorization === `Bearer ${synapse.hsToken}`)).toBe(true)
    expect(txns.every((t) => /^\/_matrix\/app\/v1\/transactions\/\d+$/.test(t.path))).toBe(true)
    const events = txns.flatMap((t) => t.body.events)
    const message = events.find((e: any) => e.event_id === id)
    expect(Object.keys(message).sort()).toEqual(['age', 'content', 'event_id', 'origin_server_ts', 'room_id', 'sender', 'type', 'unsigned', 'user_id'])
    expect(message).toMatchObject({ type: 'm.room.message', room_id: room, sender: alice, user_id: alice, content: { msgtype: 'm.text', body: 'hello bob' } })
    expect(message.unsigned).toEqual({ age: message.age })
    // The room's own creation events come too, in order: create first.
    expect(events[0].type).toBe('m.room.create')
  })

  test('replaced state carries prev_content and replaces_state, also in unsigned with prev_sender', async () => {
    const { receiver, synapse } = setup()
    const room = synapse.rooms.createRoom(alice, { preset: 'private_chat', name: 'First' })
    const first = synapse.rooms.timeline(room).find((e) => e.type === 'm.room.name')!
    synapse.setName(alice, room, 'Second')
    await synapse.appservice.flushed()
    const rename = receiver.transactions().flatMap((t) => t.body.events).findLast((e: any) => e.type === 'm.room.name')
    expect(rename).toMatchObject({
      state_key: '',
      content: { name: 'Second' },
      prev_content: { name: 'First' },
      replaces_state: first.event_id,
      unsigned: { prev_content: { name: 'First' }, replaces_state: first.event_id, prev_sender: alice },
    })
  })

  test('a direct invite carries is_direct and invite_room_state (with the name) at the top and in unsigned', async () => {
    const { receiver, synapse } = setup()
    const room = synapse.rooms.createRoom(alice, { preset: 'trusted_private_chat', is_direct: true, invite: [bob], name: 'Chat' })
    await synapse.appservice.flushed()
    const invite = receiver.transactions().flatMap((t) => t.body.events).find((e: any) => e.type === 'm.room.member' && e.state_key === bob)
    expect(invite.content).toEqual({ membership: 'invite', displayname: 'bob', is_direct: true })
    expect(invite.room_id).toBe(room)
    const types = invite.invite_room_state.map((s: any) => s.type).sort()
    expect(types).toEqual(['m.room.create', 'm.room.join_rules', 'm.room.member', 'm.room.name'])
    expect(invite.unsigned.invite_room_state).toEqual(invite.invite_room_state)
  })

  test('one request in flight; what queued meanwhile goes out together; ids increase as decimals', async () => {
    const { receiver, synapse } = setup()
    const room = synapse.directChat(alice, bob)
    await synapse.appservice.flushed()
    const before = receiver.transactions().length
    let release!: () => void
    const gate = new Promise<void>((r) => (release = r))
    receiver.answer(async (_r, n) => {
      if (n === before + 1) await gate
      return Response.json({})
    })
    synapse.sendText(alice, room, 'one')
    await Bun.sleep(50)
    for (const t of ['two', 'three', 'four']) synapse.sendText(bob, room, t)
    await Bun.sleep(100)
    expect(receiver.transactions().length).toBe(before + 1)
    release()
    await synapse.appservice.flushed()
    const later = receiver.transactions().slice(before)
    expect(later.map((t) => t.body.events.map((e: any) => e.content.body))).toEqual([['one'], ['two', 'three', 'four']])
    const ids = receiver.transactions().map((t) => Number(txnIdOf(t)))
    expect(ids.every((id, i) => i === 0 || id > ids[i - 1]!)).toBe(true)
  })

  test('a failure (5xx, then an answer that is not JSON) resends the same txnId with the same events', async () => {
    const { receiver, synapse } = setup()
    synapse.appservice.pause()
    const room = synapse.directChat(alice, bob)
    synapse.sendText(alice, room, 'retry me')
    receiver.answer((_r, n) => (n === 1 ? new Response('oops', { status: 500 }) : n === 2 ? new Response('', { status: 200 }) : Response.json({})))
    synapse.appservice.resume()
    await synapse.appservice.flushed()
    const txns = receiver.transactions()
    expect(txns).toHaveLength(3)
    expect(new Set(txns.map(txnIdOf)).size).toBe(1)
    expect(txns[1]!.body).toEqual(txns[0]!.body)
    expect(txns[2]!.body).toEqual(txns[0]!.body)
    expect(synapse.appservice.attempts.map((a) => a.outcome)).toEqual(['status', 'not_json', 'ok'])
  })

  test('no answer in time is a failure too: the same txnId comes again', async () => {
    const { receiver, synapse } = setup({ timeoutMs: 150 })
    synapse.appservice.pause()
    synapse.directChat(alice, bob)
    receiver.answer(async (_r, n) => {
      if (n === 1) await Bun.sleep(400)
      return Response.json({})
    })
    synapse.appservice.resume()
    await synapse.appservice.flushed()
    const txns = receiver.transactions()
    expect(txns.length).toBeGreaterThanOrEqual(2)
    expect(txnIdOf(txns[1]!)).toBe(txnIdOf(txns[0]!))
    expect(synapse.appservice.attempts[0]!.outcome).toBe('timeout')
  })

  test('only what the namespace makes interesting is sent', async () => {
    const receiver = startReceiver()
    const synapse = startFakeSynapse({ namespace: /^@phone_.*:example\.org$/, users: { alice: 'a', bob: 'b', phone_carol: 'c' } })
    synapse.connectAppservice({ url: receiver.url })
    cleanups.push(() => synapse.stop(), () => receiver.stop())
    const outside = synapse.directChat(alice, bob)
    synapse.sendText(alice, outside, 'not for the appservice')
    const inside = synapse.directChat(alice, '@phone_carol:example.org')
    const id = synapse.sendText(alice, inside, 'for the appservice')
    await synapse.appservice.flushed()
    const events = receiver.transactions().flatMap((t) => t.body.events)
    expect(events.some((e: any) => e.room_id === outside)).toBe(false)
    expect(events.some((e: any) => e.event_id === id)).toBe(true)
  })

  test('the proxy can be reached through a handler instead of a port', async () => {
    const synapse = startFakeSynapse()
    cleanups.push(() => synapse.stop())
    const seen: string[] = []
    synapse.connectAppservice({
      handle: async (request) => {
        seen.push(`${request.method} ${new URL(request.url).pathname} ${request.headers.get('authorization')}`)
        return Response.json({})
      },
    })
    synapse.directChat(alice, bob)
    await synapse.appservice.flushed()
    expect(seen.length).toBeGreaterThan(0)
    expect(seen[0]).toMatch(new RegExp(`^PUT /_matrix/app/v1/transactions/\\d+ Bearer ${synapse.hsToken}$`))
    expect(synapse.appservice.deliveredEvents().length).toBe(synapse.rooms.timeline(synapse.rooms.joinedRooms(alice)[0]!).length)
  })
})

describe('the client-side ping', () => {
  test('Synapse calls the proxy’s ping route with the hs_token; 200 duration_ms', async () => {
    const { receiver, synapse } = setup()
    const matrix = createMatrixClient({ homeserverUrl: synapse.url, asToken: synapse.asToken, timeoutMs: 5000 })
    const { durationMs } = await matrix.pingAppservice('matrix2acrobits', 'check-1')
    expect(durationMs).toBeGreaterThanOrEqual(0)
    const ping = receiver.received.find((r) => r.path === '/_matrix/app/v1/ping')!
    expect(ping).toEqual({ method: 'POST', path: '/_matrix/app/v1/ping', authorization: `Bearer ${synapse.hsToken}`, body: { transaction_id: 'check-1' } })
  })

  test('the proxy answering an error: 502 M_BAD_STATUS with its status and body', async () => {
    const { receiver, synapse } = setup()
    receiver.answer(() => Response.json({ errcode: 'M_FORBIDDEN' }, { status: 403 }))
    const matrix = createMatrixClient({ homeserverUrl: synapse.url, asToken: synapse.asToken, timeoutMs: 5000 })
    const e = (await matrix.pingAppservice('matrix2acrobits').catch((x) => x)) as MatrixError
    expect(e).toBeInstanceOf(MatrixError)
    expect([e.status, e.errcode, e.data?.status]).toEqual([502, 'M_BAD_STATUS', 403])
    expect(String(e.data?.body)).toContain('M_FORBIDDEN')
  })

  test('unreachable: 502 M_CONNECTION_FAILED; too slow: 504 M_CONNECTION_TIMEOUT; wrong id: 403', async () => {
    const { receiver, synapse } = setup()
    const matrix = createMatrixClient({ homeserverUrl: synapse.url, asToken: synapse.asToken, timeoutMs: 5000 })
    const errcodeOf = async (id = 'matrix2acrobits') => {
      const e = (await matrix.pingAppservice(id).catch((x) => x)) as MatrixError
      return [e.status, e.errcode]
    }
    receiver.answer(async () => {
      await Bun.sleep(600)
      return Response.json({})
    })
    expect(await errcodeOf()).toEqual([504, 'M_CONNECTION_TIMEOUT'])
    expect(await errcodeOf('other-id')).toEqual([403, 'M_FORBIDDEN'])
    receiver.stop()
    expect(await errcodeOf()).toEqual([502, 'M_CONNECTION_FAILED'])
  })
})
