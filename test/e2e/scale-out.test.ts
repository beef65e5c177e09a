/**
 * Two executables on one PostgreSQL database, behind no balancer (the test picks the instance):
 * reports through A are served by B, a notification delivered by A and retried to B sends one
 * push, each pusher call reaches the homeserver once, and kill -9 of one instance mid-burst loses
 * no acknowledged report while the other goes on. Messaging too: a transaction Synapse delivered
 * to A and retries to B is applied once, and a fetch through B reads what came through A.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { openPostgresStore } from '../../src/store/postgres.ts'
import { startFakePnm } from '../fakes/pnm.ts'
import { startFakeSynapse } from '../fakes/synapse.ts'
import { APP_ID, TOKEN, eventually, readAnswer } from '../harness.ts'
import { pgSkipped, pgTestScope, type TestSchema } from '../pg.ts'
import { startBinary, type RunningBinary } from './binary.ts'

const synapse = startFakeSynapse()
const pnm = startFakePnm()
afterAll(() => {
  synapse.stop()
  pnm.stop()
})
const { cleanups, schema } = pgTestScope()

const selector = (n: number) => `${n.toString(16).toUpperCase().padStart(40, '0')}:7C3A0D14`

async function twoExecutables(): Promise<{ a: RunningBinary; b: RunningBinary; s: TestSchema }> {
  const s = await schema()
  const env = {
    MATRIX_HOMESERVER_URL: synapse.url,
    MATRIX_AS_TOKEN: synapse.asToken,
    MATRIX_SERVER_NAME: synapse.serverName,
    PROXY_URL: 'https://push.example.org',
    PNM_URL: pnm.url,
    DATABASE_URL: s.url,
    AUTH_MODE: 'none',
    // The burst below is one client: the per-user cap would answer 429, which is not what is measured.
    REPORTS_PER_MINUTE: '100000',
    MAX_DEVICES_PER_USER: '100000',
  }
  const [a, b] = await Promise.all([startBinary(env), startBinary(env)])
  cleanups.push(() => a.stop('SIGKILL'), () => b.stop('SIGKILL'))
  return { a, b, s }
}

const report = (instance: RunningBinary, n: number, token = `${TOKEN}-${n}`) =>
  fetch(`${instance.url}/api/client/push_token_report`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ selector: selector(n), token_msgs: token, app_id_msgs: APP_ID, username: `user${n}` }),
  })

const notify = async (instance: RunningBinary, eventId: string, pushkey: string) =>
  readAnswer(
    await fetch(`${instance.url}/_matrix/push/v1/notify`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ notification: { event_id: eventId, room_id: '!r:example.org', counts: { unread: 1 }, devices: [{ app_id: APP_ID, pushkey }] } }),
    }),
  )

describe.skipIf(pgSkipped())('two executables on one PostgreSQL database', () => {
  test('a report through A is served by B; a notification delivered by A and retried to B is pushed once', async () => {
    const { a, b } = await twoExecutables()
    const token = `${TOKEN}-shared-${Date.now()}`
    expect((await report(a, 1, token)).status).toBe(200)
    const first = await notify(b, '$through-b', token)
    expect(first.json).toEqual({ rejected: [] })
    expect(pnm.bodies().filter((x) => x.DeviceToken === token).map((x) => x.Id)).toEqual(['$through-b'])

    expect((await notify(a, '$retried', token)).status).toBe(200)
    const retry = await notify(b, '$retried', token)
    expect(retry.status).toBe(200)
    expect(retry.json).toEqual({ rejected: [] })
    expect(pnm.bodies().filter((x) => x.DeviceToken === token && x.Id === '$retried')).toHaveLength(1)
  }, 30_000)

  test('reports spread over both: each pusher call reaches the homeserver exactly once', async () => {
    const { a, b, s } = await twoExecutables()
    const tag = `once-${Date.now()}`
    for (let i = 0; i < 20; i++) synapse.addUser(`user${100 + i}`, 'unused')
    const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => report(i % 2 === 0 ? a : b, 100 + i, `${tag}-${i}`)))
    expect(answers.every((r) => r.status === 200)).toBe(true)
    const store = await openPostgresStore(s.url)
    cleanups.push(() => store.close())
    for (let i = 0; i < 100 && (await store.countPendingJobs()) > 0; i++) await Bun.sleep(100)
    expect(await store.countPendingJobs()).toBe(0)
    const sets = synapse.pusherCalls().filter((c) => String(c.body.pushkey).startsWith(tag))
    expect(sets.map((c) => c.body.pushkey).sort()).toEqual(Array.from({ length: 20 }, (_, i) => `${tag}-${i}`).sort())
  }, 30_000)

  test('kill -9 of A mid-burst: every acknowledged report is stored, and B goes on', async () => {
    const { a, b, s } = await twoExecutables()
    const acknowledged: number[] = []
    let acknowledgedByA = 0
    const burst = Array.from({ length: 100 }, async (_, i) => {
      await Bun.sleep(i * 10)
      try {
        const r = await report(i % 2 === 0 ? a : b, 1000 + i)
        if (r.status === 200) {
          acknowledged.push(1000 + i)
          if (i % 2 === 0) acknowledgedByA++
        }
      } catch {
        // A's connections die with it: those reports were never acknowledged.
      }
    })
    await eventually(() => acknowledgedByA >= 5, 10_000)
    a.proc.kill('SIGKILL')
    await Promise.all(burst)
    expect(await a.proc.exited).not.toBe(0)
    // Killed mid-burst: some of A's reports were never answered.
    expect(acknowledgedByA).toBeLessThan(50)
    const store = await openPostgresStore(s.url)
    cleanups.push(() => store.close())
    const stored = new Set((await store.listRegistrations()).map((r) => r.selector))
    expect(acknowledged.length).toBeGreaterThan(50)
    for (const n of acknowledged) expect(stored.has(selector(n))).toBe(true)
    // B answers as before.
    expect((await report(b, 2000)).status).toBe(200)
    expect((await fetch(`${b.url}/ready`)).status).toBe(200)
    expect((await notify(b, '$after-kill', `${TOKEN}-2000`)).json).toEqual({ rejected: [] })
  }, 30_000)
})

describe.skipIf(pgSkipped())('messaging on two executables sharing one PostgreSQL database', () => {
  test('a transaction delivered to A and retried to B is applied once; fetch through B sees it; a later message through B follows the cursor', async () => {
    const passwords = { alice: 'alice-password', bob: 'bob-password' }
    const hs = startFakeSynapse({ users: passwords, sender: { retryDelayMs: () => 50, timeoutMs: 5_000 } })
    cleanups.push(() => hs.stop())
    const s = await schema()
    const env = {
      MATRIX_HOMESERVER_URL: hs.url,
      MATRIX_AS_TOKEN: hs.asToken,
      MATRIX_HS_TOKEN: hs.hsToken,
      MATRIX_SERVER_NAME: hs.serverName,
      PROXY_URL: 'https://push.example.org',
      PNM_URL: pnm.url,
      DATABASE_URL: s.url,
    }
    const [a, b] = await Promise.all([startBinary(env), startBinary(env)])
    cleanups.push(() => a.stop('SIGKILL'), () => b.stop('SIGKILL'))
    const fetchBob = async (instance: RunningBinary, fields: Record<string, string> = {}) => {
      const res = await fetch(`${instance.url}/api/client/fetch_messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ username: 'bob', password: passwords.bob, ...fields }),
      })
      expect(res.status).toBe(200)
      return ((await res.json()) as { received_smss: { sms_id: string; sms_text: string }[] }).received_smss
    }
    await fetchBob(b)

    hs.connectAppservice({ url: a.url })
    const room = hs.rooms.createRoom('@alice:example.org', { preset: 'trusted_private_chat', invite: ['@bob:example.org'], is_direct: true })
    const first = hs.sendText('@alice:example.org', room, 'through A')
    await hs.appservice.flushed()
    expect(hs.appservice.acknowledged.length).toBeGreaterThan(0)

    // Synapse saw no answer from A and sends every transaction again, to B this time.
    for (const txn of hs.appservice.acknowledged) {
      const res = await fetch(`${b.url}/_matrix/app/v1/transactions/${txn.txnId}`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${hs.hsToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ events: txn.events }),
      })
      expect(res.status).toBe(200)
    }
    expect(await eventually(() => b.lines.some((l) => l.includes('transaction already committed; nothing to do')))).toBe(true)
    expect(b.lines.some((l) => l.includes('"msg":"transaction committed"'))).toBe(false)
    expect((await fetchBob(b, { last_id: '' })).map((m) => [m.sms_id, m.sms_text])).toEqual([[first, 'through A']])

    // The feed moves to B: the next message follows the cursor read through B, fetched through A.
    hs.connectAppservice({ url: b.url })
    const second = hs.sendText('@alice:example.org', room, 'through B')
    await hs.appservice.flushed()
    expect((await fetchBob(a, { last_id: first })).map((m) => m.sms_id)).toEqual([second])
  }, 60_000)
})
