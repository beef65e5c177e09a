/**
 * Fetch Messages against random histories: transactions batched and redelivered, joins, invites
 * and leaves, race fills before the transaction, redactions, and fetches by several devices each
 * following its own ids. Invariant: each device sees exactly the user's deliveries (the messages
 * sent while the user was invited or joined), each once, in sequence order; never a message from a
 * room the user was not in, never another user's message.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test'
import fc from 'fast-check'
import { deliverExisting, ingestEvent, parseClientEvent } from '../../src/messages/ingest.ts'
import { member, redaction, text, uid } from '../messaging/events.ts'
import { startMessaging, type Messaging } from '../messaging/support.ts'

const USERS = ['alice', 'bob', 'carol'] as const
const ROOMS = ['!r1:example.org', '!r2:example.org'] as const
const DEVICES = ['d1', 'd2'] as const

type Op =
  | { kind: 'member'; room: number; user: number; membership: 'join' | 'invite' | 'leave' }
  | { kind: 'msg'; room: number; sender: number }
  | { kind: 'redact'; pick: number }
  | { kind: 'flush'; take: number; redeliver: boolean }
  | { kind: 'fill'; pick: number }
  | { kind: 'fetch'; user: number; device: number }
  | { kind: 'catchup'; user: number; room: number }

const joinOp = fc.record({ kind: fc.constant('member' as const), room: fc.nat(1), user: fc.nat(2), membership: fc.constant('join' as const) })
const op: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.record({ kind: fc.constant('member' as const), room: fc.nat(1), user: fc.nat(2), membership: fc.constantFrom('join' as const, 'invite' as const, 'leave' as const) }), weight: 2 },
  { arbitrary: fc.record({ kind: fc.constant('msg' as const), room: fc.nat(1), sender: fc.nat(2) }), weight: 5 },
  { arbitrary: fc.record({ kind: fc.constant('redact' as const), pick: fc.nat() }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('flush' as const), take: fc.integer({ min: 1, max: 6 }), redeliver: fc.boolean() }), weight: 2 },
  { arbitrary: fc.record({ kind: fc.constant('fill' as const), pick: fc.nat() }), weight: 2 },
  { arbitrary: fc.record({ kind: fc.constant('fetch' as const), user: fc.nat(2), device: fc.nat(1) }), weight: 2 },
  { arbitrary: fc.record({ kind: fc.constant('catchup' as const), user: fc.nat(2), room: fc.nat(1) }), weight: 1 },
)
/** A few joins first, so that most histories have conversations. */
const history = fc.tuple(fc.array(joinOp, { minLength: 2, maxLength: 5 }), fc.array(op, { minLength: 5, maxLength: 50 })).map(([a, b]) => [...a, ...b])

let h: Messaging
beforeAll(async () => {
  h = await startMessaging()
})
afterAll(async () => h?.close())

let run = 0

test('each device sees exactly its user deliveries, once each, in order, from rooms the user was in', async () => {
  await fc.assert(
    fc.asyncProperty(history, async (ops) => {
      run++
      // Each run has rooms and users of its own, so runs share one service.
      const rooms = ROOMS.map((r) => r.replace('!', `!p${run}_`))
      const users = USERS.map((u) => uid(`${u}${run}`))
      for (const u of users) h.synapse.addUser(u.slice(1, u.indexOf(':')), 'pw')
      const fetchAs = (user: number, fields: Record<string, string>) =>
        h.request('POST', '/api/client/fetch_messages', { username: users[user]!.slice(1, users[user]!.indexOf(':')), password: 'pw', ...fields })
      for (let u = 0; u < users.length; u++) expect((await fetchAs(u, {})).status).toBe(200)

      const membership = rooms.map(() => users.map(() => 'none' as string))
      const pending: any[] = []
      const messages: { event: any; room: number; present: Set<number> }[] = []
      const redacted = new Set<string>()
      const filled = new Set<string>()
      let txn = run * 10_000
      const seen = new Map<string, { received: string[]; sent: string[] }>()

      async function flush(take: number, redeliver: boolean) {
        if (pending.length === 0) return
        const batch = pending.splice(0, take)
        const id = String((txn += 1 + (take % 3)))
        expect((await h.txn(id, batch)).status).toBe(200)
        if (redeliver) expect((await h.txn(id, batch)).status).toBe(200)
      }

      async function fetchDevice(user: number, device: number) {
        const key = `${user}/${device}`
        const state = seen.get(key) ?? { received: [], sent: [] }
        seen.set(key, state)
        const res = await fetchAs(user, { device: DEVICES[device]!, last_id: state.received.at(-1) ?? '', last_sent_id: state.sent.at(-1) ?? '' })
        expect(res.status).toBe(200)
        for (const [list, items] of [['received', res.json.received_smss], ['sent', res.json.sent_smss]] as const) {
          for (const item of items) {
            const m = messages.find((x) => x.event.event_id === item.sms_id)
            // Never another user's message, never a room the user was not in.
            expect(m).toBeDefined()
            expect(m!.present.has(user)).toBe(true)
            expect(list === 'sent').toBe(m!.event.sender === users[user])
            expect(state[list]).not.toContain(item.sms_id)
            state[list].push(item.sms_id)
          }
        }
        return res.json.received_smss.length + res.json.sent_smss.length
      }

      for (const o of ops) {
        if (o.kind === 'member') {
          const prev = membership[o.room]![o.user]!
          pending.push(member({ room: rooms[o.room]!, sender: users[o.user]!, membership: o.membership, prev: prev === 'none' ? undefined : { membership: prev } }))
          membership[o.room]![o.user] = o.membership
        } else if (o.kind === 'msg') {
          if (membership[o.room]![o.sender] !== 'join') continue
          const event = text({ room: rooms[o.room]!, sender: users[o.sender]! }, `m${messages.length}`)
          const present = new Set(users.map((_, u) => u).filter((u) => ['join', 'invite'].includes(membership[o.room]![u]!)))
          messages.push({ event, room: o.room, present })
          pending.push(event)
        } else if (o.kind === 'redact') {
          if (messages.length === 0) continue
          const m = messages[o.pick % messages.length]!
          pending.push(redaction({ room: m.event.room_id, sender: m.event.sender }, m.event.event_id))
          redacted.add(m.event.event_id)
        } else if (o.kind === 'flush') {
          await flush(o.take, o.redeliver)
        } else if (o.kind === 'fill') {
          // A push reached a present user before the transaction: the proxy fetched the event as them.
          const waiting = messages.filter((m) => pending.includes(m.event) && !redacted.has(m.event.event_id))
          if (waiting.length === 0) continue
          const m = waiting[o.pick % waiting.length]!
          const forUser = [...m.present][o.pick % m.present.size]!
          const parsed = parseClientEvent(m.event)
          if (!parsed.ok) throw new Error(parsed.reason)
          await h.index!.write((tx) => ingestEvent(tx, parsed.event, { autoJoinDirect: false, oldestTs: 0, now: Date.now(), fillFor: users[forUser] }, 'fill'))
          filled.add(m.event.event_id)
        } else if (o.kind === 'catchup') {
          // A catch-up as a joined user: Synapse's last messages of the room, oldest first, whether
          // or not their transaction came yet (a redacted one comes back empty and shows nothing).
          if (membership[o.room]![o.user] !== 'join') continue
          const recent = messages.filter((m) => m.room === o.room).slice(-50)
          const ctx = { autoJoinDirect: false, oldestTs: 0, now: Date.now(), fillFor: users[o.user] }
          await h.index!.write(async (tx) => {
            // As the catch-up job does: the user's own membership from joined_members first, unless
            // the stream already told the index (the stream wins over the snapshot).
            const known = await tx.getMember(rooms[o.room]!, users[o.user]!)
            if (!known?.fromStream) {
              await tx.setMember({ roomId: rooms[o.room]!, userId: users[o.user]!, membership: 'join', sinceOrd: known?.sinceOrd ?? 0, fromStream: false, updatedAt: ctx.now })
            }
            for (const m of recent) {
              const raw = redacted.has(m.event.event_id) ? { ...m.event, content: {} } : m.event
              const parsed = parseClientEvent(raw)
              if (!parsed.ok) throw new Error(parsed.reason)
              await ingestEvent(tx, parsed.event, ctx, 'catchup')
              await deliverExisting(tx, users[o.user]!, m.event.event_id, ctx)
            }
          })
          // The user may now see these too: they are in the room.
          for (const m of recent) if (!redacted.has(m.event.event_id)) m.present.add(o.user)
        } else {
          await fetchDevice(o.user, o.device)
        }
      }
      await flush(pending.length, false)
      for (let u = 0; u < users.length; u++) {
        for (let d = 0; d < DEVICES.length; d++) {
          while ((await fetchDevice(u, d)) > 0) {}
          const state = seen.get(`${u}/${d}`)!
          // Everything the user should have and that was not redacted, each exactly once.
          for (const [list, sent] of [['received', false], ['sent', true]] as const) {
            const expected = messages.filter((m) => m.present.has(u) && (m.event.sender === users[u]) === sent).map((m) => m.event.event_id)
            for (const id of expected) if (!redacted.has(id)) expect(state[list]).toContain(id)
            // In delivery order.
            const seqs = await Promise.all(state[list].map((id) => h.index!.deliverySeq(users[u]!, id)))
            expect(seqs).toEqual([...seqs].sort((a, b) => a! - b!))
          }
        }
      }
    }),
    { numRuns: 40 },
  )
}, 120_000)
