/**
 * Messaging on two instances of the service (two composed apps, each with its own fake Synapse) on
 * one PostgreSQL schema: the message index and the send outbox are the database's, not a file's.
 */
import { describe, expect, test } from 'bun:test'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { eventually } from '../harness.ts'
import { pgSkipped, pgTestScope, startPgRelay } from '../pg.ts'
import { directChatSetup, member, redaction, state, text, uid } from './events.ts'
import { startMessaging, type Messaging } from './support.ts'

const { cleanups, schema } = pgTestScope()

/** A service on a fresh schema reached through a relay the test can cut and restore. */
async function messagingBehindRelay() {
  const s = await schema()
  const relay = startPgRelay(s.url)
  cleanups.push(() => relay.stop())
  const h = await startMessaging({ env: { DATABASE_URL: relay.url(s.url) } })
  cleanups.push(() => h.close())
  return { relay, h }
}

async function twoInstances(): Promise<[Messaging, Messaging]> {
  const s = await schema()
  const start = async () => {
    const h = await startMessaging({ env: { DATABASE_URL: s.url } })
    cleanups.push(() => h.close())
    return h
  }
  return [await start(), await start()]
}

const alice = uid('alice')
const bob = uid('bob')
const room = '!dm:example.org'

describe.skipIf(pgSkipped())('messaging on two instances sharing PostgreSQL', () => {
  test('a transaction delivered to A and retried to B is applied once; a fetch through B sees it; no SQLite file is opened', async () => {
    const [a, b] = await twoInstances()
    expect((await b.fetch('bob')).status).toBe(200)
    const events = [...directChatSetup(room, alice, bob), text({ room, sender: alice }, 'Hello through A')]
    expect((await a.txn('42', events)).status).toBe(200)
    // Synapse got no answer in time and sends the same transaction to the other instance.
    expect((await b.txn('42', events)).status).toBe(200)
    expect(b.logs.parsed().some((l) => l.msg === 'transaction already committed; nothing to do' && l.txn_id === '42')).toBe(true)
    expect(await b.index!.countMessages()).toBe(1)
    const got = await b.fetch('bob')
    expect(got.status).toBe(200)
    expect(got.json.received_smss.map((m: { sms_text: string }) => m.sms_text)).toEqual(['Hello through A'])
    // Both copies at once: still one delivery each.
    const second = [text({ room, sender: alice }, 'second')]
    const answers = await Promise.all([a.txn('43', second), b.txn('43', second)])
    expect(answers.map((r) => r.status)).toEqual([200, 200])
    const again = await a.fetch('bob')
    expect(again.json.received_smss.map((m: { sms_text: string }) => m.sms_text)).toEqual(['Hello through A', 'second'])
    // The index is the database's: PUSH_TOKEN_DB_PATH was never created.
    expect(existsSync(join(a.dir, 'tokens.db'))).toBe(false)
    expect(existsSync(join(b.dir, 'tokens.db'))).toBe(false)
  })

  test('U+0000, which PostgreSQL text cannot hold, neither stops the feed nor fails a fetch or a send: U+FFFD in events, 400 from the app', async () => {
    const [a] = await twoInstances()
    expect((await a.fetch('bob')).status).toBe(200)
    const named = { room, sender: alice }
    const events = [
      ...directChatSetup(room, alice, bob),
      { ...member({ room, sender: alice, membership: 'join', displayname: 'Al\u0000ice', prev: { membership: 'join' } }) },
      state(named, 'm.room.name', { name: 'Ro\u0000om' }),
      text(named, 'a\u0000b'),
      // A redaction naming no event ID: PostgreSQL refused to compare the number with its text.
      { ...redaction(named, '$nothing'), redacts: 42, content: { redacts: 42 } },
      text(named, 'after'),
    ]
    const answer = await a.txn('77', events)
    expect(answer.status).toBe(200)
    const got = await a.fetch('bob')
    expect(got.json.received_smss.map((m: { sms_text: string }) => m.sms_text)).toEqual(['a\uFFFDb', 'after'])
    // The app's own fields: a 400 naming the field, not the database's error.
    for (const [fields, field] of [
      [{ device: 'd\u00001' }, 'device'],
      [{ last_id: '$x\u0000' }, 'last_id'],
    ] as const) {
      const refused = await a.fetch('bob', fields)
      expect(refused.status).toBe(400)
      expect(refused.json.error).toBe(`${field} contains a control character`)
    }
    const send = await a.request('POST', '/api/client/send_message', { username: 'bob', password: 'bob-password', to: 'ali\u0000ce', body: 'hi' })
    expect(send.status).toBe(400)
    expect(send.json.error).toBe('to contains a control character')
  })

  test('a message repeated through B within SEND_DEDUPE_SECONDS answers the sms_id A sent, without a second /send', async () => {
    const [a, b] = await twoInstances()
    const body = { username: 'alice', password: 'alice-password', to: 'bob', body: 'only once' }
    const first = await a.request('POST', '/api/client/send_message', body)
    expect(first.status).toBe(200)
    const repeat = await b.request('POST', '/api/client/send_message', body)
    expect(repeat.status).toBe(200)
    expect(repeat.json).toEqual({ sms_id: first.json.sms_id })
    expect(b.synapse.requests.filter((r) => r.path.includes('/send/'))).toEqual([])
    expect(a.synapse.requests.filter((r) => r.path.includes('/send/'))).toHaveLength(1)
    // What A sent is in alice's sent list, fetched through B.
    const sent = await b.fetch('alice')
    expect(sent.json.sent_smss.map((m: { sms_id: string }) => m.sms_id)).toEqual([first.json.sms_id])
  })
  test('database unreachable: transactions and fetches answer 503 (nothing lost, Synapse and the app retry); both work again when it returns', async () => {
    const { relay, h } = await messagingBehindRelay()
    expect((await h.fetch('bob')).status).toBe(200)
    relay.cut()
    const events = [...directChatSetup(room, alice, bob), text({ room, sender: alice }, 'while the database was away')]
    const txn = await h.txn('77', events)
    expect(txn.status).toBe(503)
    const fetched = await h.fetch('bob')
    expect(fetched.status).toBe(503)
    expect(fetched.json).toEqual({ error: 'The message index cannot be read now; try again later' })
    expect(h.logs.parsed().some((l) => l.msg === 'message index unavailable; fetch answered 503')).toBe(true)
    relay.restore()
    // Synapse sends the transaction again; the pool reconnects by itself.
    expect(await eventually(async () => (await h.txn('77', events)).status === 200, 10_000)).toBe(true)
    const got = await h.fetch('bob')
    expect(got.status).toBe(200)
    expect(got.json.received_smss.map((m: { sms_text: string }) => m.sms_text)).toEqual(['while the database was away'])
  }, 30_000)
  test('jobs: after the database was away, the worker asks again by itself and runs what was queued', async () => {
    const { relay, h } = await messagingBehindRelay()
    await h.messaging.jobs!.idle()
    // Queued as another instance would: nothing wakes this worker but its own schedule.
    await h.index!.write((tx) => tx.queueJob('catchup', uid('carol'), '', Date.now() + 100))
    relay.cut()
    h.messaging.jobs!.kick()
    await h.messaging.jobs!.idle()
    expect(h.logs.parsed().some((l) => l.msg === 'messaging jobs: the index is unavailable')).toBe(true)
    relay.restore()
    expect(await eventually(async () => (await h.index!.pendingJobs().catch(() => [1])).length === 0, 10_000)).toBe(true)
    expect(h.logs.parsed().some((l) => l.msg === 'enrolment catch-up done' && l.user_id === uid('carol'))).toBe(true)
  }, 30_000)
})
