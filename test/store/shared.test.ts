/**
 * Two instances of the service (two harnesses) on one PostgreSQL schema: what one stores the other
 * serves, a notification retried to the other sends no second push, a pusher job is worked by
 * exactly one of them, and the shared duplicate filter's claims expire.
 */
import { describe, expect, test } from 'bun:test'
import { SQL } from 'bun'
import { createSharedDuplicateFilter } from '../../src/gateway/dedupe-shared.ts'
import { migratePostgres } from '../../src/store/pg-migrations.ts'
import { openPostgresStore } from '../../src/store/postgres.ts'
import { createMatrixClient } from '../../src/matrix/client.ts'
import { createMetrics } from '../../src/metrics.ts'
import { createPusherWorker } from '../../src/pusher/worker.ts'
import { planPusherCalls } from '../../src/report/plan.ts'
import pino from 'pino'
import { startFakeSynapse } from '../fakes/synapse.ts'
import { APP_ID, SELECTOR, TOKEN, eventually, startHarness, type Harness } from '../harness.ts'
import { pgSkipped, pgTestScope, startPgRelay } from '../pg.ts'

const { cleanups, schema } = pgTestScope()

async function twoInstances(env: Record<string, string> = {}): Promise<[Harness, Harness]> {
  const s = await schema()
  const start = async () => {
    const h = await startHarness({ env: { AUTH_MODE: 'none', DATABASE_URL: s.url, ...env } })
    cleanups.push(() => h.close())
    return h
  }
  return [await start(), await start()]
}

const report = (h: Harness, token = TOKEN) => h.report({ selector: SELECTOR, token_msgs: token, app_id_msgs: APP_ID, username: 'alice' })
const notification = (id: string) => ({ event_id: id, room_id: '!r:example.org', counts: { unread: 1 }, devices: [{ app_id: APP_ID, pushkey: TOKEN }] })

describe.skipIf(pgSkipped())('two instances on one PostgreSQL database', () => {
  test('a report through A is served by B', async () => {
    const [a, b] = await twoInstances()
    expect((await report(a)).status).toBe(200)
    const res = await b.notify(notification('$one'))
    expect(res.json).toEqual({ rejected: [] })
    expect(b.pnm.bodies().map((x) => [x.Id, x.DeviceToken, x.Selector])).toEqual([['$one', TOKEN, SELECTOR]])
  })

  test('a notification delivered by A and retried to B sends one push', async () => {
    const [a, b] = await twoInstances()
    await report(a)
    expect((await a.notify(notification('$e'))).status).toBe(200)
    const retry = await b.notify(notification('$e'))
    expect(retry.status).toBe(200)
    expect(retry.json).toEqual({ rejected: [] })
    expect(a.pnm.bodies().length + b.pnm.bodies().length).toBe(1)
    expect(b.logs.lines.some((l) => l.includes('event already delivered to this device'))).toBe(true)
  })

  test('retried to B while A is still sending: B answers 503 and sends nothing; the next retry is a duplicate', async () => {
    const [a, b] = await twoInstances()
    await report(a)
    a.pnm.behave(TOKEN, { kind: 'hang' })
    const first = a.notify(notification('$slow'))
    await eventually(() => a.pnm.requests.length === 1)
    const during = await b.notify(notification('$slow'))
    expect(during.status).toBe(503)
    expect(during.headers.get('retry-after')).toBe('1')
    expect(b.pnm.requests).toHaveLength(0)
    a.pnm.release()
    expect((await first).status).toBe(200)
    expect((await b.notify(notification('$slow'))).status).toBe(200)
    expect(b.pnm.requests).toHaveLength(0)
  })

  test('A could not deliver: its claim is released and the retry to B delivers', async () => {
    const [a, b] = await twoInstances()
    await report(a)
    a.pnm.behave(TOKEN, { kind: 'status', status: 503 })
    expect((await a.notify(notification('$fail'))).status).toBe(502)
    const retry = await b.notify(notification('$fail'))
    expect(retry.status).toBe(200)
    expect(b.pnm.bodies().map((x) => x.Id)).toEqual(['$fail'])
  })
})

describe.skipIf(pgSkipped())('password guessing across instances', () => {
  test('five failures are five whichever instance answers: the sixth is 429 on both, even with the right password', async () => {
    const [a, b] = await twoInstances({ AUTH_MODE: 'matrix' })
    const attempt = (h: Harness, password: string, n: number) =>
      h.report({ selector: `${SELECTOR.slice(0, -1)}${n}`, token_msgs: `${TOKEN}-${n}`, app_id_msgs: APP_ID, username: 'alice', password })
    for (let i = 0; i < 5; i++) expect((await attempt(i % 2 === 0 ? a : b, `guess-${i}`, i)).status).toBe(401)
    for (const h of [a, b]) {
      const limited = await attempt(h, 'alice-password', 9)
      expect(limited.status).toBe(429)
      expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
      expect(limited.json.error).toMatch(/Too many failed attempts/)
    }
    expect(a.synapse.calls('/_matrix/client/v3/login').length + b.synapse.calls('/_matrix/client/v3/login').length).toBe(5)
    // Another user is not affected, on either instance.
    const bob = await b.report({ selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, username: 'bob', password: 'bob-password' })
    expect(bob.status).toBe(200)
  })

  test('the shared budgets unreachable: 503, and the line saying why carries the request id', async () => {
    const s = await schema()
    const relay = startPgRelay(s.url)
    cleanups.push(() => relay.stop())
    const h = await startHarness({ env: { AUTH_MODE: 'matrix', DATABASE_URL: relay.url(s.url) } })
    cleanups.push(() => h.close())
    relay.cut()
    const refused = await h.report({ selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, username: 'alice', password: 'alice-password' })
    expect(refused.status).toBe(503)
    const line = h.logs.parsed().find((l) => l.msg === 'shared password-check budgets unavailable (database); refusing for now')
    expect(line?.req_id).toBe(refused.headers.get('x-request-id'))
    relay.restore()
  })

  test('a database that stops answering without closing (a partition): 503 in time on every route that needs it, then back by itself', async () => {
    const s = await schema()
    const relay = startPgRelay(s.url)
    cleanups.push(() => relay.stop())
    const h = await startHarness({ env: { AUTH_MODE: 'none', DATABASE_URL: relay.url(s.url) }, compose: { databaseTimeoutMs: 300 } })
    cleanups.push(() => h.close())
    const report = () => h.report({ selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, username: '@alice:example.org' })
    expect((await report()).status).toBe(200)
    const notify = (id: string) => h.notify({ event_id: id, room_id: '!r:example.org', counts: { unread: 1 }, devices: [{ app_id: APP_ID, pushkey: TOKEN }] })
    expect((await notify('$before')).status).toBe(200)
    relay.freeze()
    const started = performance.now()
    const answers = await Promise.all([report(), notify('$frozen'), h.request('GET', '/ready')])
    expect(answers.map((a) => a.status)).toEqual([503, 503, 503])
    expect(performance.now() - started).toBeLessThan(5_000)
    expect(h.logs.parsed().some((l) => /took longer than 300 ms/.test(String(l.err)))).toBe(true)
    relay.restore()
    await eventually(async () => (await h.request('GET', '/ready')).status === 200, 10_000)
    expect((await notify('$after')).status).toBe(200)
    expect(h.pnm.bodies().map((b) => b.Id)).toEqual(['$before', '$after'])
  })

  test('guesses sent to both instances at once: no more than five reach the homeservers', async () => {
    const [a, b] = await twoInstances({ AUTH_MODE: 'matrix' })
    const results = await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        (i % 2 === 0 ? a : b).report({ selector: `${SELECTOR.slice(0, -2)}${String(i).padStart(2, '0')}`, app_id_msgs: APP_ID, username: 'alice', password: `guess-${i}` }),
      ),
    )
    expect(results.filter((r) => r.status === 401).length).toBeLessThanOrEqual(5)
    expect(a.synapse.calls('/_matrix/client/v3/login').length + b.synapse.calls('/_matrix/client/v3/login').length).toBeLessThanOrEqual(5)
    expect(results.every((r) => r.status === 401 || r.status === 429)).toBe(true)
  })
})

describe.skipIf(pgSkipped())('pusher jobs on a shared database', () => {
  test('two workers racing over the same queue: each job reaches the homeserver exactly once', async () => {
    const s = await schema()
    const synapse = startFakeSynapse()
    cleanups.push(() => synapse.stop())
    // A slow homeserver keeps each job leased while the other worker looks at the queue.
    synapse.override(async () => {
      await Bun.sleep(30)
      return undefined
    })
    const stores = [await openPostgresStore(s.url), await openPostgresStore(s.url)]
    for (const store of stores) cleanups.push(() => store.close())
    const plan = planPusherCalls(true)
    for (let i = 0; i < 20; i++) {
      await stores[0]!.saveRegistration({ selector: `S${i}`, matrixUserId: '@alice:example.org', tokenMsgs: `tok-${i}`, appIdMsgs: APP_ID }, Date.now(), plan)
    }
    const config = { pushGatewayUrl: 'https://push.example.org/_matrix/push/v1/notify', pusherFormat: 'event_id_only' as const, matrixTimeoutMs: 5_000 }
    const workers = stores.map((store) =>
      createPusherWorker({
        store,
        matrix: createMatrixClient({ homeserverUrl: synapse.url, asToken: synapse.asToken, timeoutMs: 5_000 }),
        config,
        log: pino({ level: 'silent' }),
        metrics: createMetrics(),
        now: Date.now,
        pollMs: 20,
      }),
    )
    for (const w of workers) w.start()
    cleanups.push(() => Promise.all(workers.map((w) => w.stop())))
    await eventually(async () => (await stores[1]!.countPendingJobs()) === 0, 20_000)
    const pushkeys = synapse.pusherCalls().map((c) => c.body.pushkey as string)
    expect(pushkeys.sort()).toEqual(Array.from({ length: 20 }, (_, i) => `tok-${i}`).sort())
  })
})

describe.skipIf(pgSkipped())('the shared duplicate filter', () => {
  test('a claim of a dead sender runs out; a delivered one lasts the hour; expired claims are swept', async () => {
    const s = await schema()
    const sql = new SQL(s.url, { max: 2 })
    cleanups.push(() => sql.end())
    await migratePostgres(sql)
    let now = 1_000_000
    const filter = createSharedDuplicateFilter(sql, { now: () => now, sendingMs: 30_000, ttlMs: 3_600_000 })
    expect(await filter.claim('pk', '$e')).toBe('claimed')
    expect(await filter.claim('pk', '$e')).toBe('elsewhere')
    now += 30_001
    expect(await filter.claim('pk', '$e')).toBe('claimed')
    await filter.delivered('pk', '$e')
    now += 3_599_000
    expect(await filter.claim('pk', '$e')).toBe('duplicate')
    await filter.release('pk', '$e') // a delivered claim is not released
    expect(await filter.claim('pk', '$e')).toBe('duplicate')
    // Past the hour, and a minute after the last sweep: the next claim sweeps what expired.
    now += 61_000
    expect(await filter.claim('pk', '$other')).toBe('claimed')
    await eventually(async () => ((await sql`SELECT count(*)::int AS n FROM notify_claims`) as { n: number }[])[0]!.n === 1)
    expect(await filter.claim('pk', '$e')).toBe('claimed')
  })
})
