/**
 * Synapse misbehaving while pushers are registered: the report is stored and answered, the pusher
 * call waits in the database outbox and is retried with backoff (honouring 429 retry_after_ms,
 * slowly after a 403 that a retry cannot fix), across a restart, until a newer report replaces it.
 */
import { afterEach, describe, expect, test } from 'bun:test'
import { compose } from '../../src/compose.ts'
import { retryDelay } from '../../src/pusher/worker.ts'
import { MatrixError } from '../../src/matrix/client.ts'
import { APP_ID, SELECTOR, TOKEN, eventually, startHarness, type Harness, type HarnessOptions } from '../harness.ts'
import { startSwitchableFront } from './support.ts'

let h: Harness | undefined
const cleanups: Array<() => unknown> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
  await h?.close()
  h = undefined
})

const TOKEN_B = 'APA91bG9aqWvmnxnYBZWG9hxvtkgzTXSopfiufzmc6tP3Kb-token-bee'
const SET = '/_matrix/client/v3/pushers/set'
const noAuth = { AUTH_MODE: 'none' }
const report = (h: Harness, token = TOKEN, username = 'alice') =>
  h.report({ selector: SELECTOR, token_msgs: token, app_id_msgs: APP_ID, username })

const failing = (status: number, body: Record<string, unknown> = { errcode: 'M_UNKNOWN', error: 'Internal server error' }) =>
  (req: { path: string }) => (req.path === SET ? Response.json(body, { status }) : undefined)

async function harness(options: HarnessOptions = {}) {
  h = await startHarness({ ...options, env: { ...noAuth, ...options.env } })
  return h
}

describe('Synapse answers 5xx', () => {
  test('the report is still stored and answered 200; the pusher call is retried until it succeeds', async () => {
    const h = await harness()
    let calls = 0
    h.synapse.override((req) => (req.path === SET && ++calls <= 2 ? Response.json({ errcode: 'M_UNKNOWN', error: 'boom' }, { status: 500 }) : undefined))
    const res = await report(h)
    expect(res.status).toBe(200)
    expect((await h.store.getRegistration(SELECTOR))?.tokenMsgs).toBe(TOKEN)
    await eventually(() => h.synapse.pushers().length === 1)
    expect(h.synapse.pusherCalls()).toHaveLength(3)
    await eventually(async () => (await h.store.pendingJobs()).length === 0)
  })

  test('retries back off and are bounded by the maximum delay', async () => {
    const h = await harness({ compose: { pusherRetryBaseMs: 40, pusherRetryMaxMs: 160 } })
    h.synapse.override(failing(503))
    await report(h)
    await eventually(() => h.synapse.pusherCalls().length >= 5, 5000)
    const at = h.synapse.pusherCalls().length
    const job = (await h.store.pendingJobs())[0]!
    expect(job.attempts).toBeGreaterThanOrEqual(4)
    expect(job.lastError).toContain('503')
    // In 500 ms a 160 ms cap allows at most a handful more calls: no tight loop.
    await Bun.sleep(500)
    expect(h.synapse.pusherCalls().length - at).toBeLessThanOrEqual(5)
  })

  test('the delay doubles and is capped', () => {
    const delays = [0, 1, 2, 3, 4, 5, 40].map((n) => retryDelay(n, new MatrixError('http', 'x', 500), 5_000, 600_000))
    expect(delays).toEqual([5_000, 10_000, 20_000, 40_000, 80_000, 160_000, 600_000])
  })
})

describe('Synapse answers 429', () => {
  test('retry_after_ms is honoured', async () => {
    const h = await harness()
    let first = 0
    let second = 0
    h.synapse.override((req) => {
      if (req.path !== SET) return undefined
      if (first === 0) {
        first = Date.now()
        return Response.json({ errcode: 'M_LIMIT_EXCEEDED', error: 'Too Many Requests', retry_after_ms: 700 }, { status: 429 })
      }
      second ||= Date.now()
      return undefined
    })
    expect((await report(h)).status).toBe(200)
    await eventually(async () => (await h.store.pendingJobs())[0]?.attempts === 1)
    expect((await h.store.pendingJobs())[0]!.nextAttemptAt - first).toBeGreaterThanOrEqual(700)
    await eventually(() => h.synapse.pushers().length === 1, 5000)
    expect(second - first).toBeGreaterThanOrEqual(650)
  })
})

describe('Synapse refuses the appservice (403)', () => {
  for (const [name, options] of [
    ['cannot masquerade (namespace does not match)', { synapse: { namespace: /^@bridge_.*:example\.org$/ } }],
    ['has not registered this user', { env: {} }],
  ] as const) {
    test(`${name}: logged with a hint on the namespace, retried only after a minute`, async () => {
      const h = await harness({ ...options, compose: { pusherRetryBaseMs: 50, pusherRetryMaxMs: 600_000 } })
      const username = name.startsWith('has not') ? 'carol' : 'alice'
      const res = await report(h, TOKEN, username)
      expect(res.status).toBe(200)
      await eventually(async () => (await h.store.pendingJobs())[0]?.attempts === 1)
      const failure = h.logs.parsed().find((l) => l.msg === 'pusher set failed; will retry')!
      expect(failure.status).toBe(403)
      expect(failure.hint).toContain('namespace')
      expect((await h.store.pendingJobs())[0]!.nextAttemptAt - Date.now()).toBeGreaterThan(55_000)
      await Bun.sleep(300)
      expect(h.synapse.pusherCalls()).toHaveLength(1)
    })
  }
})

describe('Synapse down', () => {
  test('AUTH_MODE=none: stored, answered 200, registered once Synapse is back', async () => {
    // The front forwards to the fake homeserver, which the harness starts: a second service on
    // the harness's store talks to the homeserver through it.
    h = await startHarness({ env: noAuth })
    await h.worker.stop()
    const switchable = startSwitchableFront(h.synapse.url)
    cleanups.push(() => switchable.stop())
    const service = compose({ ...h.config, homeserverUrl: switchable.url }, { pusherRetryBaseMs: 50, pusherRetryMaxMs: 200, store: h.store, logDestination: h.logs.stream })
    switchable.down()
    service.worker.start()
    cleanups.push(() => service.worker.stop())
    const res = await service.app.handle(
      new Request('http://localhost/api/client/push_token_report', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, username: 'alice' }),
      }),
    )
    expect(res.status).toBe(200)
    await eventually(async () => ((await h!.store.pendingJobs())[0]?.attempts ?? 0) >= 2)
    expect((await h.store.pendingJobs())[0]!.lastError).toMatch(/unreachable/)
    switchable.up()
    await eventually(() => h!.synapse.pushers().length === 1, 5000)
    await eventually(async () => (await h!.store.pendingJobs()).length === 0)
  })

  test('AUTH_MODE=matrix: the password cannot be checked, so 503 (never 401) and nothing stored', async () => {
    h = await startHarness()
    h.synapse.stop()
    const res = await h.report({ selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, username: 'alice', password: 'alice-password' })
    expect(res.status).toBe(503)
    expect(res.json.error).toMatch(/homeserver/)
    expect(await h.store.listRegistrations()).toHaveLength(0)
  })
})

describe('the outbox', () => {
  test('survives a restart: pending pusher calls are in the database and resume', async () => {
    const h = await harness()
    h.synapse.override(failing(500))
    expect((await report(h)).status).toBe(200)
    await eventually(async () => ((await h.store.pendingJobs())[0]?.attempts ?? 0) >= 1)
    // "Crash": the first service goes away; a new one opens the same file.
    await h.worker.stop()
    await h.store.close()
    h.synapse.override(undefined)
    const restarted = compose(h.config, { pusherRetryBaseMs: 50, pusherRetryMaxMs: 200, logDestination: h.logs.stream })
    cleanups.push(async () => {
      await restarted.worker.stop()
      await restarted.store.close()
    })
    expect(await restarted.store.pendingJobs()).toHaveLength(1)
    restarted.worker.start()
    await eventually(() => h.synapse.pushers().length === 1, 5000)
    await eventually(async () => (await restarted.store.pendingJobs()).length === 0)
    expect(h.synapse.pushers()[0]!.pushkey).toBe(TOKEN)
  })

  test('a newer report supersedes the pending call; only the newest token ends up registered', async () => {
    const h = await harness()
    h.synapse.override(failing(500))
    await report(h, TOKEN)
    await eventually(async () => ((await h.store.pendingJobs())[0]?.attempts ?? 0) >= 1)
    await report(h, TOKEN_B)
    const pending = await h.store.pendingJobs()
    expect(pending.some((j) => j.action === 'set' && j.pushkey === TOKEN)).toBe(false)
    expect(pending.some((j) => j.action === 'set' && j.pushkey === TOKEN_B)).toBe(true)
    const before = h.synapse.pusherCalls().length
    h.synapse.override(undefined)
    await eventually(async () => (await h.store.pendingJobs()).length === 0, 5000)
    const after = h.synapse.pusherCalls().slice(before)
    expect(after.some((c) => c.body.kind === 'http' && c.body.pushkey === TOKEN)).toBe(false)
    expect(h.synapse.pushers().map((p) => p.pushkey)).toEqual([TOKEN_B])
  })
})
