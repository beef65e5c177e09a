/**
 * Send Message exactly once, against random runs: texts sent and repeated (one after another and at
 * the same time), while the homeserver fails some /send calls before making the event (5xx) or
 * after (the answer is lost: 5xx, or no answer in time), or go down for longer than a send may take
 * right after making the event (the app gets 503), and the app retries what failed.
 * Invariant: a text becomes at most one event; once any send of it is answered 200, exactly one,
 * and every 200 for it carries that event's id. A new direct chat is created once.
 */
import { afterAll, expect, test } from 'bun:test'
import { Database } from 'bun:sqlite'
import fc from 'fast-check'
import pino from 'pino'
import { AppError } from '../../src/errors.ts'
import { createMatrixClient } from '../../src/matrix/client.ts'
import { sqliteOutbox } from '../../src/messages/outbox.ts'
import { createSendService, type SendIndex } from '../../src/messages/send.ts'
import { normalizeSend } from '../../src/messages/send-request.ts'
import { migrate } from '../../src/store/migrations.ts'
import { startFakeSynapse } from '../fakes/synapse.ts'

const log = pino({ level: 'silent' })
const synapse = startFakeSynapse({ users: {} })
afterAll(() => synapse.stop())

type Fault = 'none' | 'before' | 'after' | 'slow' | 'outage'
interface Step {
  /** Which of a few texts: repeats are likely. */
  text: number
  /** Sent together with the next step (no await between). */
  together: boolean
  /** What the homeserver does with this step's first /send. */
  fault: Fault
}

const step = fc.record({
  text: fc.nat(3),
  together: fc.boolean(),
  fault: fc.constantFrom<Fault>('none', 'none', 'before', 'after', 'slow', 'outage'),
})

let run = 0

test('a text is one event at most; answered 200, exactly one, with that id', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 12 }), async (steps) => {
      run++
      const a = `pa${run}`
      const b = `pb${run}`
      synapse.addUser(a, 'pw')
      synapse.addUser(b, 'pw')
      const db = new Database(':memory:')
      migrate(db)
      const index: SendIndex = {
        directRooms: async () => [],
        isEnrolled: async () => false,
        groupRoom: async () => undefined,
        deliveredRoom: async () => undefined,
        recordSent: async () => {},
      }
      const matrix = createMatrixClient({ homeserverUrl: synapse.url, asToken: synapse.asToken, timeoutMs: 150 })
      const service = createSendService({
        matrix,
        index,
        outbox: sqliteOutbox(db),
        verifier: { verify: async (username) => `@${username}:example.org` },
        authMode: 'matrix',
        book: { serverName: 'example.org', mapping: [] },
        enrol: async () => {},
        now: Date.now,
        dedupeSeconds: 60,
        perMinute: 1000,
        budgetMs: 400,
        retryDelaysMs: [10, 20],
      })
      // Faults are applied to the n-th /send of the run, in the order Synapse receives them.
      const faults: Fault[] = []
      let outageUntil = 0
      synapse.override(async (req) => {
        if (req.method !== 'PUT' || !req.path.includes('/send/') || req.query.user_id !== `@${a}:example.org`) return undefined
        let fault = Date.now() < outageUntil ? 'before' : (faults.shift() ?? 'none')
        if (fault === 'outage') {
          outageUntil = Date.now() + 600
          fault = 'after'
        }
        if (fault === 'before') return Response.json({ errcode: 'M_UNKNOWN', error: 'Internal server error' }, { status: 500 })
        if (fault === 'after' || fault === 'slow') {
          // The event is made (Synapse remembers the path), but the answer is lost.
          synapse.rooms.send(req.query.user_id!, decodeURIComponent(req.path.split('/')[5]!), 'm.room.message', req.body, req.path)
          if (fault === 'slow') await Bun.sleep(250)
          return Response.json({ errcode: 'M_UNKNOWN', error: 'Internal server error' }, { status: 500 })
        }
        return undefined
      })
      const answers = new Map<number, string[]>()
      const sendOne = async (s: Step) => {
        faults.push(s.fault)
        try {
          const { sms_id } = await service.send(normalizeSend({ username: a, password: 'pw', to: b, body: `text ${s.text}` }), undefined, log)
          answers.set(s.text, [...(answers.get(s.text) ?? []), sms_id])
        } catch (e) {
          expect(e).toBeInstanceOf(AppError)
          expect((e as AppError).status).toBe(503)
        }
      }
      try {
        let batch: Promise<void>[] = []
        for (const s of steps) {
          batch.push(sendOne(s))
          if (!s.together) {
            await Promise.all(batch)
            batch = []
          }
        }
        await Promise.all(batch)
        // The app retries every text until it is answered (the homeserver behaves now).
        faults.length = 0
        await Bun.sleep(Math.max(0, outageUntil - Date.now()))
        for (const t of new Set(steps.map((s) => s.text))) if (!answers.has(t)) await sendOne({ text: t, together: false, fault: 'none' })
      } finally {
        synapse.override(undefined)
        db.close()
      }
      const rooms = synapse.rooms.joinedRooms(`@${a}:example.org`)
      expect(rooms).toHaveLength(1)
      const events = synapse.rooms.timeline(rooms[0]!).filter((e) => e.type === 'm.room.message')
      for (const t of new Set(steps.map((s) => s.text))) {
        const made = events.filter((e) => e.content.body === `text ${t}`)
        expect(made).toHaveLength(1)
        expect(new Set(answers.get(t))).toEqual(new Set([made[0]!.event_id]))
      }
    }),
    { numRuns: 25 },
  )
}, 120_000)
