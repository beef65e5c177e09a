/**
 * The PNM misbehaving on purpose: every answer class of FIELD-GUIDE §4 gets the outcome the push
 * integration promises (200 delivered; 404 rejected and forgotten; 400 dropped; anything else
 * retried, then 502 so that Synapse retries), within the notify deadline, and one slow token
 * never holds up another.
 */
import { afterEach, describe, expect, test } from 'bun:test'
import { startDroppingServer } from '../fakes/pnm.ts'
import { APP_ID, SELECTOR, TOKEN, startHarness, type Harness, type HarnessOptions } from '../harness.ts'
import { notification } from './support.ts'

let h: Harness | undefined
const cleanups: Array<() => void> = []
afterEach(async () => {
  await h?.close()
  h = undefined
  for (const c of cleanups.splice(0)) c()
})

const creds = { username: 'alice', password: 'alice-password' }
const SELECTOR_2 = 'AAAA0E6E553673C54F29105A0647204C416A2A00:7C3A0D15'
const TOKEN_2 = 'APA91bG9aqWvmnxnYBZWG9hxvtkgzTXSopfiufzmc6tP3Kb-token-two'

async function withToken(options: HarnessOptions = {}) {
  h = await startHarness({ ...options, env: { PNM_TIMEOUT_MS: '2000', ...options.env } })
  const res = await h.report({ selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, ...creds })
  expect(res.status).toBe(200)
  return h
}

const errors = (h: Harness) => h.logs.parsed().filter((l) => l.level === 'error' || l.level === 'fatal')

describe('PNM answers', () => {
  test('200: delivered once, empty rejected list', async () => {
    const h = await withToken()
    const res = await h.notify(notification('$ok', APP_ID, TOKEN))
    expect(res.status).toBe(200)
    expect(res.json).toEqual({ rejected: [] })
    expect(h.pnm.requests).toHaveLength(1)
  })

  test('404: the pushkey is rejected, the stored token forgotten, no retry', async () => {
    const h = await withToken()
    h.pnm.forget(TOKEN)
    const res = await h.notify(notification('$gone', APP_ID, TOKEN))
    expect(res.status).toBe(200)
    expect(res.json).toEqual({ rejected: [TOKEN] })
    expect(h.pnm.requests).toHaveLength(1)
    expect(await h.store.findByPushkey(APP_ID, TOKEN)).toBeUndefined()
    // The account itself stays: the next report brings a fresh token.
    expect((await h.store.getRegistration(SELECTOR))?.matrixUserId).toBe('@alice:example.org')
  })

  test('HTTP 200 with code 404 in the body counts as 404', async () => {
    const h = await withToken()
    h.pnm.behave(TOKEN, { kind: 'status', status: 200, body: JSON.stringify({ code: 404, response: 'unknown token' }) })
    const res = await h.notify(notification('$gone2', APP_ID, TOKEN))
    expect(res.json).toEqual({ rejected: [TOKEN] })
    expect(await h.store.findByPushkey(APP_ID, TOKEN)).toBeUndefined()
  })

  test('400: logged, not rejected, not retried, answered 200; the token is kept', async () => {
    const h = await withToken()
    h.pnm.behave(TOKEN, { kind: 'status', status: 400 })
    const res = await h.notify(notification('$bad', APP_ID, TOKEN))
    expect(res.status).toBe(200)
    expect(res.json).toEqual({ rejected: [] })
    expect(h.pnm.requests).toHaveLength(1)
    expect((await h.store.findByPushkey(APP_ID, TOKEN))?.selector).toBe(SELECTOR)
    expect(errors(h).some((l) => /PNM refused/.test(l.msg))).toBe(true)
  })

  const transient: Array<[string, Parameters<Harness['pnm']['behave']>[1]]> = [
    ['HTTP 500', { kind: 'status', status: 500 }],
    ['HTTP 502', { kind: 'status', status: 502, body: '<html>Bad Gateway</html>' }],
    ['HTTP 503', { kind: 'status', status: 503 }],
    ['HTTP 200 with code 500', { kind: 'status', status: 200, body: JSON.stringify({ code: 500, response: 'try later' }) }],
    ['HTTP 200 with status 500', { kind: 'status', status: 200, body: JSON.stringify({ status: 500, response: 'try later' }) }],
    ['HTTP 200 with a non-JSON body', { kind: 'status', status: 200, body: 'OK' }],
    ['HTTP 200 with a 2 MiB body', { kind: 'status', status: 200, body: JSON.stringify({ code: 200, response: 'x'.repeat(2 * 1024 * 1024) }) }],
    ['HTTP 302', { kind: 'status', status: 302 }],
  ]
  for (const [name, behaviour] of transient) {
    test(`${name}: retried twice, then 502 so that Synapse retries; nothing rejected`, async () => {
      const h = await withToken()
      h.pnm.behave(TOKEN, behaviour)
      const res = await h.notify(notification('$transient', APP_ID, TOKEN))
      expect(res.status).toBe(502)
      expect(res.json.errcode).toBe('M_UNKNOWN')
      expect(typeof res.json.error).toBe('string')
      expect(h.pnm.requests).toHaveLength(3)
      expect((await h.store.findByPushkey(APP_ID, TOKEN))?.selector).toBe(SELECTOR)
    })
  }

  test('a failure followed by success is retried once and delivered', async () => {
    const h = await withToken()
    h.pnm.behave(TOKEN, { kind: 'sequence', steps: [{ kind: 'status', status: 503 }, { kind: 'ok' }] })
    const res = await h.notify(notification('$flaky', APP_ID, TOKEN))
    expect(res.status).toBe(200)
    expect(res.json).toEqual({ rejected: [] })
    expect(h.pnm.requests).toHaveLength(2)
  })

  test('hang: each attempt times out (PNM_TIMEOUT_MS), then 502', async () => {
    const h = await withToken({ env: { PNM_TIMEOUT_MS: '150' } })
    h.pnm.behave(TOKEN, { kind: 'hang' })
    const res = await h.notify(notification('$hang', APP_ID, TOKEN))
    expect(res.status).toBe(502)
    expect(h.pnm.requests).toHaveLength(3)
    expect(h.logs.parsed().some((l) => /no answer within 150 ms/.test(l.detail ?? ''))).toBe(true)
  })

  test('connection closed without an answer: retried, then 502', async () => {
    const dropping = startDroppingServer()
    cleanups.push(() => dropping.stop())
    const h = await withToken({ env: { PNM_URL: dropping.url } })
    const res = await h.notify(notification('$drop', APP_ID, TOKEN))
    expect(res.status).toBe(502)
    expect(h.logs.parsed().filter((l) => l.msg === 'PNM attempt failed')).toHaveLength(3)
    expect((await h.store.findByPushkey(APP_ID, TOKEN))?.selector).toBe(SELECTOR)
  })

  test('PNM unreachable (nothing listens): retried, then 502', async () => {
    const dropping = startDroppingServer()
    const url = dropping.url
    dropping.stop()
    const h = await withToken({ env: { PNM_URL: url } })
    const res = await h.notify(notification('$refused', APP_ID, TOKEN))
    expect(res.status).toBe(502)
  })
})

describe('the answer deadline', () => {
  test('a PNM slower than the deadline still gets Synapse its answer before the deadline', async () => {
    // PNM_TIMEOUT_MS is far beyond the deadline: the deadline, not the PNM timeout, bounds the answer.
    const h = await withToken({ env: { PNM_TIMEOUT_MS: '60000' }, compose: { notifyDeadlineMs: 400, pnmRetryDelaysMs: [10, 20] } })
    h.pnm.behave(TOKEN, { kind: 'hang' })
    const started = Date.now()
    const res = await h.notify(notification('$deadline', APP_ID, TOKEN))
    expect(res.status).toBe(502)
    // Generous: the deadline is 400 ms, the PNM timeout 60 s.
    expect(Date.now() - started).toBeLessThan(10_000)
    h.pnm.release()
  })

  test('retries are not started when their pause would cross the deadline', async () => {
    const h = await withToken({ env: { PNM_TIMEOUT_MS: '100' }, compose: { notifyDeadlineMs: 300, pnmRetryDelaysMs: [5_000, 5_000] } })
    h.pnm.behave(TOKEN, { kind: 'hang' })
    const started = Date.now()
    const res = await h.notify(notification('$nopause', APP_ID, TOKEN))
    expect(res.status).toBe(502)
    expect(h.pnm.requests).toHaveLength(1)
    expect(Date.now() - started).toBeLessThan(5_000)
    h.pnm.release()
  })

  test('the default budget fits in the 30 s Synapse is promised', async () => {
    const { NOTIFY_DEADLINE_MS } = await import('../../src/gateway/notify.ts')
    expect(NOTIFY_DEADLINE_MS).toBeLessThanOrEqual(30_000)
  })
})

describe('one slow token', () => {
  async function twoAccounts() {
    const h = await withToken({ env: { PNM_TIMEOUT_MS: '60000' } })
    const res = await h.report({ selector: SELECTOR_2, token_msgs: TOKEN_2, app_id_msgs: APP_ID, username: 'bob', password: 'bob-password' })
    expect(res.status).toBe(200)
    return h
  }

  test('never delays the notifications of other tokens', async () => {
    const h = await twoAccounts()
    h.pnm.behave(TOKEN, { kind: 'hang' })
    let slowDone = false
    const slow = h.notify(notification('$slow', APP_ID, TOKEN)).finally(() => {
      slowDone = true
    })
    while (!h.pnm.bodies().some((b) => b.DeviceToken === TOKEN)) await Bun.sleep(5)
    const fast = await h.notify(notification('$fast', APP_ID, TOKEN_2))
    expect(fast.status).toBe(200)
    expect(fast.json).toEqual({ rejected: [] })
    expect(slowDone).toBe(false)
    h.pnm.release()
    expect((await slow).status).toBe(200)
  })

  test('in one request with several devices, the good one is sent once even when Synapse retries', async () => {
    const h = await twoAccounts()
    h.pnm.behave(TOKEN, { kind: 'sequence', steps: [{ kind: 'status', status: 500 }] })
    const body = notification('$multi', APP_ID, TOKEN)
    body.devices.push({ ...body.devices[0]!, pushkey: TOKEN_2, data: { selector: SELECTOR_2 } })
    const first = await h.notify(body)
    expect(first.status).toBe(502)
    h.pnm.behave(TOKEN, { kind: 'ok' })
    const retry = await h.notify(body)
    expect(retry.status).toBe(200)
    expect(h.pnm.bodies().filter((b) => b.DeviceToken === TOKEN_2)).toHaveLength(1)
  })
})
