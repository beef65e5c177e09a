/**
 * Send Message's service (src/messages/send.ts, direct-chat.ts, outbox.ts) against the fake
 * Synapse, with the message index behind its small interface (an in-memory stand-in here).
 */
import { afterAll, beforeEach, describe, expect, test } from 'bun:test'
import { Database } from 'bun:sqlite'
import pino from 'pino'
import { AppError } from '../../src/errors.ts'
import { createPasswordVerifier, matrixPasswordBackend } from '../../src/matrix/auth.ts'
import { createMatrixClient } from '../../src/matrix/client.ts'
import type { ClientEvent } from '../../src/matrix/event.ts'
import { createMetrics } from '../../src/metrics.ts'
import { sqliteOutbox } from '../../src/messages/outbox.ts'
import { migrate } from '../../src/store/migrations.ts'
import { createSendService, type SendDeps, type SendIndex } from '../../src/messages/send.ts'
import { normalizeSend, type SendBody } from '../../src/messages/send-request.ts'
import { parseMappingFile } from '../../src/report/mapping.ts'
import { startFakeSynapse } from '../fakes/synapse.ts'

const log = pino({ level: 'silent' })
const alice = '@alice:example.org'
const bob = '@bob:example.org'
const carol = '@carol:example.org'
const synapse = startFakeSynapse({ users: { alice: 'alice-pw', bob: 'bob-pw', carol: 'carol-pw' } })
afterAll(() => synapse.stop())

function memoryIndex() {
  const direct: Array<{ a: string; b: string; room: string }> = []
  const enrolled = new Set<string>()
  const groups = new Map<string, string>()
  const delivered = new Map<string, string>()
  const recorded: ClientEvent[] = []
  const index: SendIndex = {
    async directRooms(a, b) {
      return direct.filter((d) => (d.a === a && d.b === b) || (d.a === b && d.b === a)).map((d) => d.room)
    },
    async isEnrolled(u) {
      return enrolled.has(u)
    },
    async groupRoom(u, address) {
      return groups.get(`${u}\u0000${address}`)
    },
    async deliveredRoom(u, eventId) {
      return delivered.get(`${u}\u0000${eventId}`)
    },
    async recordSent(event) {
      recorded.push(event)
    },
  }
  return { index, direct, enrolled, groups, delivered, recorded }
}

let mem: ReturnType<typeof memoryIndex>
let db: Database
beforeEach(() => {
  mem = memoryIndex()
  db?.close()
  db = new Database(':memory:')
  migrate(db)
})
afterAll(() => db?.close())

function service(over: Partial<SendDeps> & { timeoutMs?: number } = {}) {
  const matrix = createMatrixClient({ homeserverUrl: synapse.url, asToken: synapse.asToken, timeoutMs: over.timeoutMs ?? 5000 })
  const verifier = createPasswordVerifier({ backend: matrixPasswordBackend({ matrix, log, serverName: 'example.org' }), log, metrics: createMetrics(), now: Date.now, limits: { failuresPerPair: 100, failuresPerUser: 100, checksPerAddress: 1000, maxInflight: 100 } })
  const enrolledByService: string[] = []
  const s = createSendService({
    matrix,
    index: mem.index,
    outbox: sqliteOutbox(db),
    verifier,
    authMode: 'matrix',
    book: { serverName: 'example.org', mapping: [] },
    enrol: async (u) => void enrolledByService.push(u),
    now: Date.now,
    dedupeSeconds: 10,
    retryDelaysMs: [20, 40],
    ...over,
  })
  const send = (fields: SendBody) => s.send(normalizeSend(fields), '127.0.0.1', log)
  return { send, enrolledByService, fail: (fields: SendBody) => send(fields).then(() => { throw new Error('expected a refusal') }, (e: AppError) => e) }
}

const asAlice = (to: string, body: string, more: SendBody = {}): SendBody => ({ username: 'alice', password: 'alice-pw', to, body, ...more })
const messagesIn = (room: string) => synapse.rooms.timeline(room).filter((e) => e.type === 'm.room.message')
const sendCalls = () => synapse.requests.filter((r) => r.method === 'PUT' && r.path.includes('/send/m.room.message/'))
const createCalls = () => synapse.calls('/_matrix/client/v3/createRoom')
const freshPair = () => {
  const n = Math.random().toString(36).slice(2, 8)
  const a = `a${n}`
  const b = `b${n}`
  synapse.addUser(a, 'pw')
  synapse.addUser(b, 'pw')
  return { a: `@${a}:example.org`, b: `@${b}:example.org`, as: (to: string, body: string, more: SendBody = {}): SendBody => ({ username: a, password: 'pw', to, body, ...more }), bLocal: b }
}

describe('direct chats: create', () => {
  test('the first message creates the chat: exact createRoom body, both users’ m.direct merged, the phone peer accepts', async () => {
    const p = freshPair()
    mem.enrolled.add(p.b)
    synapse.rooms.putAccountData(p.a, 'm.direct', { [carol]: ['!old:example.org'] })
    const before = createCalls().length
    const { sms_id } = await service().send(p.as(p.bLocal, 'hello'))
    const calls = createCalls().slice(before)
    expect(calls).toHaveLength(1)
    expect(calls[0]!.body).toEqual({ preset: 'trusted_private_chat', is_direct: true, invite: [p.b] })
    expect(calls[0]!.query).toEqual({ user_id: p.a })
    const room = synapse.rooms.joinedRooms(p.a).at(-1)!
    expect(synapse.rooms.accountDataOf(p.a, 'm.direct')).toEqual({ [carol]: ['!old:example.org'], [p.b]: [room] })
    expect(synapse.rooms.accountDataOf(p.b, 'm.direct')).toEqual({ [p.a]: [room] })
    expect(synapse.rooms.membership(room, p.b)).toBe('join')
    expect(synapse.rooms.stateContent(room, 'm.room.encryption')).toBeUndefined()
    expect(synapse.rooms.stateContent(room, 'm.room.canonical_alias')).toBeUndefined()
    // The encryption check happened before the message.
    const encCheck = synapse.requests.findIndex((r) => r.method === 'GET' && r.path.endsWith('/state/m.room.encryption/'))
    expect(encCheck).toBeGreaterThan(-1)
    const [message] = messagesIn(room)
    expect(message!.event_id).toBe(sms_id)
    expect(message!.content).toEqual({ msgtype: 'm.text', body: 'hello' })
    expect(message!.sender).toBe(p.a)
    expect(mem.recorded).toEqual([expect.objectContaining({ event_id: sms_id, room_id: room, sender: p.a, content: { msgtype: 'm.text', body: 'hello' } })])
  })

  test('a peer who is not a phone user is only invited: they accept in their own client', async () => {
    const p = freshPair()
    await service().send(p.as(p.b, 'hi'))
    const room = synapse.rooms.joinedRooms(p.a).at(-1)!
    expect(synapse.rooms.membership(room, p.b)).toBe('invite')
  })

  test('concurrent first messages of a pair create one room', async () => {
    const p = freshPair()
    const before = createCalls().length
    const s = service()
    const answers = await Promise.all(['one', 'two', 'three', 'four'].map((t) => s.send(p.as(p.b, t))))
    expect(createCalls().length - before).toBe(1)
    const rooms = synapse.rooms.joinedRooms(p.a)
    expect(rooms).toHaveLength(1)
    expect(messagesIn(rooms[0]!).map((e) => e.event_id).sort()).toEqual(answers.map((a) => a.sms_id).sort())
  })

  test('a module that encrypts new rooms: 502, nothing sent', async () => {
    const p = freshPair()
    synapse.rooms.setEncryptNewRooms(true)
    try {
      const e = await service().fail(p.as(p.b, 'secret'))
      expect(e.status).toBe(502)
      expect(e.message).toContain('encrypted')
    } finally {
      synapse.rooms.setEncryptNewRooms(false)
    }
    expect(messagesIn(synapse.rooms.joinedRooms(p.a)[0]!)).toHaveLength(0)
  })
})

describe('direct chats: reuse, re-check, skip', () => {
  test('the room the index knows is reused: no createRoom', async () => {
    const p = freshPair()
    const room = synapse.directChat(p.a, p.b)
    mem.direct.push({ a: p.a, b: p.b, room })
    const before = createCalls().length
    const { sms_id } = await service().send(p.as(p.b, 'again'))
    expect(createCalls().length).toBe(before)
    expect(messagesIn(room).map((e) => e.event_id)).toEqual([sms_id])
  })

  test('a room from the peer’s m.direct is found too', async () => {
    const p = freshPair()
    const room = synapse.directChat(p.b, p.a)
    synapse.rooms.putAccountData(p.b, 'm.direct', { [p.a]: [room] })
    const before = createCalls().length
    await service().send(p.as(p.b, 'found'))
    expect(createCalls().length).toBe(before)
    expect(messagesIn(room)).toHaveLength(1)
  })

  test.each([
    ['encrypted', (p: ReturnType<typeof freshPair>) => synapse.directChat(p.a, p.b, { encrypted: true })],
    [
      'three members',
      (p: ReturnType<typeof freshPair>) => {
        const r = synapse.directChat(p.a, p.b)
        synapse.rooms.invite(p.a, r, carol)
        return r
      },
    ],
    [
      'replaced (tombstone)',
      (p: ReturnType<typeof freshPair>) => {
        const r = synapse.directChat(p.a, p.b)
        synapse.tombstone(p.a, r, '!elsewhere:example.org')
        return r
      },
    ],
    [
      'the sender has left',
      (p: ReturnType<typeof freshPair>) => {
        const r = synapse.directChat(p.a, p.b)
        synapse.rooms.leave(p.a, r)
        return r
      },
    ],
  ])('%s: skipped, a new room is created', async (_, make) => {
    const p = freshPair()
    const dead = make(p)
    mem.direct.push({ a: p.a, b: p.b, room: dead })
    const before = createCalls().length
    const { sms_id } = await service().send(p.as(p.b, 'fresh'))
    expect(createCalls().length).toBe(before + 1)
    expect(messagesIn(dead)).toHaveLength(0)
    expect(synapse.rooms.findEvent(sms_id)!.room_id).not.toBe(dead)
  })

  test('a peer who left is invited again; the room is kept', async () => {
    const p = freshPair()
    const room = synapse.directChat(p.a, p.b)
    synapse.rooms.leave(p.b, room)
    mem.direct.push({ a: p.a, b: p.b, room })
    const before = createCalls().length
    await service().send(p.as(p.b, 'come back'))
    expect(createCalls().length).toBe(before)
    expect(synapse.rooms.membership(room, p.b)).toBe('invite')
    expect(messagesIn(room)).toHaveLength(1)
  })

  test('a sender who is only invited joins, then sends', async () => {
    const p = freshPair()
    const room = synapse.directChat(p.b, p.a, { join: false })
    mem.direct.push({ a: p.a, b: p.b, room })
    await service().send(p.as(p.b, 'accepting'))
    expect(synapse.rooms.membership(room, p.a)).toBe('join')
    expect(messagesIn(room)).toHaveLength(1)
  })

  test('of two qualifying rooms the most recently active wins', async () => {
    const p = freshPair()
    const older = synapse.directChat(p.a, p.b)
    const newer = synapse.directChat(p.b, p.a)
    synapse.sendText(p.a, older, 'old talk')
    await Bun.sleep(5)
    synapse.sendText(p.b, newer, 'new talk')
    mem.direct.push({ a: p.a, b: p.b, room: older }, { a: p.a, b: p.b, room: newer })
    const { sms_id } = await service().send(p.as(p.b, 'which room?'))
    expect(synapse.rooms.findEvent(sms_id)!.room_id).toBe(newer)
  })

  test('403 on send (kicked meanwhile): the chat is found or created again, once', async () => {
    const p = freshPair()
    const room = synapse.directChat(p.a, p.b)
    mem.direct.push({ a: p.a, b: p.b, room })
    // The check passes, then the sender is kicked before the message goes out.
    synapse.override((req) => {
      if (req.method === 'PUT' && req.path.includes(encodeURIComponent(room)) && req.path.includes('/send/')) {
        synapse.override(undefined)
        synapse.rooms.kick(p.b, room, p.a)
      }
      return undefined
    })
    const { sms_id } = await service().send(p.as(p.b, 'after kick'))
    expect(synapse.rooms.findEvent(sms_id)!.room_id).not.toBe(room)
  })
})

describe('exactly once', () => {
  test('a replay within SEND_DEDUPE_SECONDS answers the first sms_id; nothing is sent again', async () => {
    const p = freshPair()
    const s = service()
    const first = await s.send(p.as(p.b, 'same text'))
    const sends = sendCalls().length
    const again = await s.send(p.as(p.b, 'same text'))
    expect(again).toEqual(first)
    expect(sendCalls().length).toBe(sends)
  })

  test('concurrent repeats share one call', async () => {
    const p = freshPair()
    const s = service()
    const sends = sendCalls().length
    const answers = await Promise.all([1, 2, 3].map(() => s.send(p.as(p.b, 'tap tap tap'))))
    expect(new Set(answers.map((a) => a.sms_id)).size).toBe(1)
    expect(sendCalls().length - sends).toBe(1)
  })

  test('SEND_DEDUPE_SECONDS=0: the same text twice is two messages', async () => {
    const p = freshPair()
    const s = service({ dedupeSeconds: 0 })
    const one = await s.send(p.as(p.b, 'twice'))
    const two = await s.send(p.as(p.b, 'twice'))
    expect(one.sms_id).not.toBe(two.sms_id)
  })

  test('a timed-out send is retried with the same transaction id: one event', async () => {
    const p = freshPair()
    const room = synapse.directChat(p.a, p.b)
    mem.direct.push({ a: p.a, b: p.b, room })
    let slowed = false
    synapse.override(async (req) => {
      if (!slowed && req.method === 'PUT' && req.path.includes('/send/')) {
        slowed = true
        await Bun.sleep(400) // longer than the client's timeout; Synapse still makes the event
      }
      return undefined
    })
    try {
      const { sms_id } = await service({ timeoutMs: 150 }).send(p.as(p.b, 'slow'))
      await Bun.sleep(400)
      const puts = sendCalls().filter((r) => r.query.user_id === p.a)
      expect(puts.length).toBeGreaterThanOrEqual(2)
      expect(new Set(puts.map((r) => r.path)).size).toBe(1)
      expect(messagesIn(room).map((e) => e.event_id)).toEqual([sms_id])
    } finally {
      synapse.override(undefined)
    }
  })

  test('5xx then success: same transaction id, one event', async () => {
    const p = freshPair()
    const room = synapse.directChat(p.a, p.b)
    mem.direct.push({ a: p.a, b: p.b, room })
    let failures = 0
    synapse.override((req) => {
      if (req.method === 'PUT' && req.path.includes('/send/') && failures < 2) {
        failures++
        return Response.json({ errcode: 'M_UNKNOWN', error: 'Internal server error' }, { status: 500 })
      }
      return undefined
    })
    try {
      await service().send(p.as(p.b, 'flaky'))
    } finally {
      synapse.override(undefined)
    }
    const puts = sendCalls().filter((r) => r.query.user_id === p.a)
    expect(puts).toHaveLength(3)
    expect(new Set(puts.map((r) => r.path)).size).toBe(1)
    expect(puts[0]!.path).toMatch(/\/send\/m\.room\.message\/[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-/)
    expect(messagesIn(room)).toHaveLength(1)
  })

  test('Synapse down: 503 with Retry-After within the budget; the app’s retry sends once', async () => {
    const p = freshPair()
    const room = synapse.directChat(p.a, p.b)
    mem.direct.push({ a: p.a, b: p.b, room })
    synapse.override((req) => (req.method === 'PUT' && req.path.includes('/send/') ? new Response('bad gateway', { status: 502 }) : undefined))
    const s = service({ budgetMs: 600 })
    const started = Date.now()
    const e = await s.send(p.as(p.b, 'down')).catch((x: AppError) => x)
    synapse.override(undefined)
    expect(e).toBeInstanceOf(AppError)
    expect([(e as AppError).status, (e as AppError).retryAfter]).toEqual([503, 5])
    expect(Date.now() - started).toBeLessThan(3000)
    const paths = new Set(sendCalls().filter((r) => r.query.user_id === p.a).map((r) => r.path))
    expect(paths.size).toBe(1)
    await s.send(p.as(p.b, 'down'))
    // The app's retry used the same transaction id: still one path, one event.
    expect(new Set(sendCalls().filter((r) => r.query.user_id === p.a).map((r) => r.path)).size).toBe(1)
    expect(messagesIn(room)).toHaveLength(1)
  })

  test('a homeserver slow at creating the chat: 503 within the budget; the retry sends once into that chat', async () => {
    const p = freshPair()
    synapse.override(async (req) => {
      if (req.path === '/_matrix/client/v3/createRoom' && req.query.user_id === p.a) await Bun.sleep(800)
      return undefined
    })
    const s = service({ budgetMs: 300 })
    const started = Date.now()
    const e = await s.fail(p.as(p.b, 'slow start'))
    expect([e.status, e.retryAfter]).toEqual([503, 5])
    expect(Date.now() - started).toBeLessThan(700)
    synapse.override(undefined)
    await Bun.sleep(900)
    const { sms_id } = await s.send(p.as(p.b, 'slow start'))
    const rooms = synapse.rooms.joinedRooms(p.a)
    expect(rooms).toHaveLength(1)
    expect(messagesIn(rooms[0]!).map((m) => m.event_id)).toEqual([sms_id])
  })

  test('transaction ids are fresh per message and never shared between users', async () => {
    const p = freshPair()
    const q = freshPair()
    const s = service({ dedupeSeconds: 0 })
    for (const text of ['x', 'x', 'y']) {
      await s.send(p.as(p.b, text))
      await s.send(q.as(q.b, text))
    }
    const ids = sendCalls()
      .filter((r) => r.query.user_id === p.a || r.query.user_id === q.a)
      .map((r) => r.path.split('/').pop())
    expect(ids).toHaveLength(6)
    expect(new Set(ids).size).toBe(6)
  })
})

describe('addresses, limits, content types', () => {
  test('`to`: a Matrix ID, user@domain, a localpart; anything else a 400 naming to; oneself a 400', async () => {
    const p = freshPair()
    const s = service({ dedupeSeconds: 0 })
    for (const to of [p.b, `${p.bLocal}@example.org`, p.bLocal]) await s.send(p.as(to, `to ${to}`))
    expect(synapse.rooms.joinedRooms(p.a)).toHaveLength(1)
    for (const bad of ['john smith', '#room:example.org', '']) {
      const e = await s.fail(p.as(bad, 'x'))
      expect(e.status).toBe(400)
      expect(e.message).toContain('to')
    }
    const self = await s.fail(p.as(p.a, 'me'))
    expect([self.status, self.message.includes('yourself')]).toEqual([400, true])
  })

  test('`to`: a user of this server that does not exist is a 400 naming to, and no room is made (Synapse would invite nobody)', async () => {
    const p = freshPair()
    const s = service({ dedupeSeconds: 0 })
    const before = createCalls().length
    for (const ghost of ['nosuchuser', '@nosuchuser:example.org', 'a,b', '!!!']) {
      const e = await s.fail(p.as(ghost, 'into the void'))
      expect([e.status, e.message]).toEqual([400, `to: ${ghost.startsWith('@') ? ghost : `@${ghost}:example.org`} is not a user of this homeserver`])
    }
    expect(createCalls().length).toBe(before)
    expect(synapse.requests.filter((r) => r.path === `/_matrix/client/v3/profile/${encodeURIComponent('@nosuchuser:example.org')}`).at(-1)?.query).toEqual({ user_id: p.a })
    // An existing user is asked once, before the room is made; the chat found later is not asked about.
    const profiles = () => synapse.requests.filter((r) => r.path.startsWith('/_matrix/client/v3/profile/')).length
    const asked = profiles()
    await s.send(p.as(p.bLocal, 'hello'))
    await s.send(p.as(p.bLocal, 'again'))
    expect([createCalls().length - before, profiles() - asked]).toEqual([1, 1])
  })

  test('`to`: profiles the homeserver will not show (403) or a remote user: the room is made all the same; a homeserver fault is a 503', async () => {
    const p = freshPair()
    const s = service({ dedupeSeconds: 0 })
    synapse.override((req) =>
      req.path.startsWith('/_matrix/client/v3/profile/') ? Response.json({ errcode: 'M_FORBIDDEN', error: "You don't share a room with this user" }, { status: 403 }) : undefined,
    )
    try {
      const { sms_id } = await s.send(p.as(p.bLocal, 'restricted profiles'))
      expect(synapse.rooms.membership(synapse.rooms.findEvent(sms_id)!.room_id, p.b)).toBe('invite')
    } finally {
      synapse.override(undefined)
    }
    const q = freshPair()
    synapse.override((req) => (req.path.startsWith('/_matrix/client/v3/profile/') ? new Response('busy', { status: 502 }) : undefined))
    try {
      const before = createCalls().length
      expect((await s.fail(q.as(q.bLocal, 'later'))).status).toBe(503)
      expect(createCalls().length).toBe(before)
    } finally {
      synapse.override(undefined)
    }
    const profiles = synapse.requests.filter((r) => r.path.startsWith('/_matrix/client/v3/profile/')).length
    await s.send(q.as('@someone:remote.example', 'over federation'))
    expect(synapse.requests.filter((r) => r.path.startsWith('/_matrix/client/v3/profile/')).length).toBe(profiles)
  })

  test('`to`: a MAPPING_FILE number or sub-number names its user', async () => {
    const p = freshPair()
    const parsed = parseMappingFile(JSON.stringify([{ matrix_id: p.b, number: '5551001', sub_numbers: ['5551002'] }]))
    if (!parsed.ok) throw new Error(parsed.error)
    const s = service({ book: { serverName: 'example.org', mapping: parsed.entries }, dedupeSeconds: 0 })
    for (const to of ['5551001', '5551002']) {
      const { sms_id } = await s.send(p.as(to, `to ${to}`))
      const room = synapse.rooms.findEvent(sms_id)!.room_id
      expect(synapse.rooms.membership(room, p.b)).toBe('invite')
    }
    expect(synapse.rooms.joinedRooms(p.a)).toHaveLength(1)
  })

  test('a group address the caller holds sends into that room', async () => {
    const p = freshPair()
    const room = synapse.rooms.createRoom(p.a, { preset: 'private_chat', name: 'Team Room', invite: [p.b, carol] })
    mem.groups.set(`${p.a}\u0000Team\u00a0Room`, room)
    const { sms_id } = await service().send(p.as('Team\u00a0Room', 'hello team'))
    expect(synapse.rooms.findEvent(sms_id)!.room_id).toBe(room)
    // Having left, the address still resolves, but the homeserver refuses: 403, no new room.
    synapse.rooms.leave(p.a, room)
    const before = createCalls().length
    const left = await service().fail(p.as('Team\u00a0Room', 'still there?'))
    expect([left.status, createCalls().length]).toEqual([403, before])
    // Another user does not hold it: for them it is no address at all.
    const e = await service().fail({ username: 'carol', password: 'carol-pw', to: 'Team\u00a0Room', body: 'x' })
    expect(e.status).toBe(400)
  })

  test('a body over 32 KiB or an empty one is a 400 naming body; 32 KiB exactly is sent', async () => {
    const p = freshPair()
    const s = service()
    const big = await s.fail(p.as(p.b, 'é'.repeat(16 * 1024 + 1)))
    expect([big.status, big.message.startsWith('body')]).toEqual([400, true])
    expect((await s.fail(p.as(p.b, ''))).status).toBe(400)
    await s.send(p.as(p.b, 'x'.repeat(32 * 1024)))
  })

  test('more than the per-minute limit: 429 with Retry-After; repeats of a sent message are free', async () => {
    const p = freshPair()
    const s = service({ perMinute: 3 })
    for (const t of ['1', '2', '3']) await s.send(p.as(p.b, t))
    const e = await s.fail(p.as(p.b, '4'))
    expect(e.status).toBe(429)
    expect(e.retryAfter).toBeGreaterThan(0)
    await s.send(p.as(p.b, '3'))
  })

  test('a "displayed" report becomes a read receipt with an sms_id of its own, never a chat message', async () => {
    const p = freshPair()
    const room = synapse.directChat(p.b, p.a)
    const incoming = synapse.sendText(p.b, room, 'read me')
    mem.delivered.set(`${p.a}\u0000${incoming}`, room)
    const body = JSON.stringify({ 'message-id': incoming, 'display-notification': { status: 'displayed' } })
    const { sms_id } = await service().send(p.as(p.b, body, { content_type: 'application/x-acro-disposition-notification' }))
    expect(sms_id).not.toBe(incoming)
    expect(synapse.rooms.receipts.at(-1)).toMatchObject({ user: p.a, room, eventId: incoming, type: 'm.read' })
    expect(messagesIn(room)).toHaveLength(1)
  })

  test('a delivery-only report or one for a message the user never got sends no receipt', async () => {
    const p = freshPair()
    const receipts = synapse.rooms.receipts.length
    const s = service()
    const delivered = JSON.stringify({ message_id: '$x', 'delivery-notification': { status: 'delivered' } })
    const foreign = JSON.stringify({ message_id: '$not-mine', 'display-notification': { status: 'displayed' } })
    for (const body of [delivered, foreign]) {
      const a = await s.send(p.as(p.b, body, { content_type: 'application/x-acro-disposition-notification' }))
      expect(typeof a.sms_id).toBe('string')
    }
    expect(synapse.rooms.receipts.length).toBe(receipts)
    const bad = await s.fail(p.as(p.b, 'not json', { content_type: 'application/x-acro-disposition-notification' }))
    expect([bad.status, bad.message.startsWith('body')]).toEqual([400, true])
  })

  test('file transfers and anything else: 400 "not supported yet"', async () => {
    const p = freshPair()
    for (const type of ['application/x-acro-filetransfer+json', 'image/png']) {
      const e = await service().fail(p.as(p.b, '{}', { content_type: type }))
      expect(e.status).toBe(400)
      expect(e.message).toContain('not supported yet')
    }
  })

  test('authentication: 403 with AUTH_MODE=none, 401 for a wrong password; the sender is enrolled', async () => {
    const none = await service({ authMode: 'none' }).fail(asAlice(bob, 'x'))
    expect(none.status).toBe(403)
    const wrong = await service().fail({ username: 'alice', password: 'nope', to: bob, body: 'x' })
    expect(wrong.status).toBe(401)
    const s = service()
    await s.send(asAlice(bob, 'enrol me'))
    expect(s.enrolledByService).toEqual([alice])
  })
})
