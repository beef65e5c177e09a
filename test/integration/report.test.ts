import { afterEach, describe, expect, test } from 'bun:test'
import { rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { APP_ID, SELECTOR, TOKEN, eventually, startHarness, tempDir, type Harness } from '../harness.ts'

let h: Harness
afterEach(async () => h?.close())

const alice = { username: 'alice', password: 'alice-password' }
const report = (extra: Record<string, string> = {}) => ({ selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, ...alice, ...extra })

describe('POST /api/client/push_token_report', () => {
  test('stores the report keyed by selector with times, username and Matrix user', async () => {
    h = await startHarness()
    expect((await h.report(report({ token_calls: 'voip-token', app_id_calls: 'com.acrobits.voip' }))).status).toBe(200)
    const row = (await h.store.getRegistration(SELECTOR))!
    expect(row).toMatchObject({
      selector: SELECTOR,
      username: 'alice',
      matrixUserId: '@alice:example.org',
      tokenMsgs: TOKEN,
      appIdMsgs: APP_ID,
      tokenCalls: 'voip-token',
      appIdCalls: 'com.acrobits.voip',
    })
    expect(row.createdAt).toBeGreaterThan(0)
    await Bun.sleep(5)
    await h.report(report())
    const again = (await h.store.getRegistration(SELECTOR))!
    expect(again.createdAt).toBe(row.createdAt)
    expect(again.updatedAt).toBeGreaterThan(row.updatedAt)
    expect(await h.store.countRegistrations()).toBe(1)
  })

  test('form-encoded reports with the appId spelling and stray whitespace work', async () => {
    h = await startHarness()
    const body = `selector=${encodeURIComponent(SELECTOR)}&token_msgs=${TOKEN}&appId_msgs=${APP_ID}&username=alice%20&password=alice-password`
    const res = await h.request('POST', '/api/client/push_token_report', body, { 'content-type': 'application/x-www-form-urlencoded' })
    expect(res.status).toBe(200)
    expect(h.synapse.pusherCalls()[0]!.body.pushkey).toBe(TOKEN)
  })

  test('400 before any authentication: bad JSON, no selector, token without app id, wrong types', async () => {
    h = await startHarness()
    const cases: [unknown, string][] = [
      ['{"selector":', 'JSON'],
      [{ token_msgs: TOKEN, app_id_msgs: APP_ID, ...alice }, 'selector'],
      [{ selector: SELECTOR, token_msgs: TOKEN, ...alice }, 'app_id_msgs'],
      [{ selector: 42, ...alice }, 'selector'],
      [{ selector: SELECTOR, token_msgs: ['a'], app_id_msgs: APP_ID }, 'token_msgs'],
    ]
    for (const [body, fragment] of cases) {
      const res = await h.request('POST', '/api/client/push_token_report', body, { 'content-type': 'application/json' })
      expect(res.status).toBe(400)
      expect(res.json.error).toContain(fragment)
    }
    expect(h.synapse.requests).toHaveLength(0)
    expect(await h.store.countRegistrations()).toBe(0)
  })

  test('AUTH_MODE=matrix: missing credentials 401, wrong password 401, nothing stored', async () => {
    h = await startHarness()
    expect((await h.report({ selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID })).status).toBe(401)
    const wrong = await h.report(report({ password: 'nope' }))
    expect(wrong.status).toBe(401)
    expect(wrong.json.error).toBeString()
    expect(await h.store.countRegistrations()).toBe(0)
    expect(h.synapse.pusherCalls()).toHaveLength(0)
  })

  test('AUTH_MODE=matrix: the login request is m.login.password with an m.id.user identifier', async () => {
    h = await startHarness()
    await h.report(report())
    expect(h.synapse.calls('/_matrix/client/v3/login')[0]!.body).toMatchObject({
      type: 'm.login.password',
      identifier: { type: 'm.id.user', user: 'alice' },
      password: 'alice-password',
    })
  })

  test('AUTH_MODE=matrix: homeserver down or 5xx is 503, never 401', async () => {
    h = await startHarness()
    h.synapse.override((r) => (r.path.endsWith('/login') ? Response.json({ errcode: 'M_UNKNOWN', error: 'db' }, { status: 502 }) : undefined))
    const res = await h.report(report())
    expect(res.status).toBe(503)
    h.synapse.stop()
    expect((await h.report(report())).status).toBe(503)
    expect(await h.store.countRegistrations()).toBe(0)
  })

  test('identical checks in flight share one login; different passwords do not', async () => {
    h = await startHarness()
    h.synapse.override(async (req) => {
      if (req.path.endsWith('/login')) await Bun.sleep(100)
      return undefined
    })
    const same = await Promise.all(Array.from({ length: 12 }, (_, i) => h.report(report({ token_msgs: `${TOKEN}-${i}` }))))
    expect(same.map((r) => r.status)).toEqual(same.map(() => 200))
    expect(h.synapse.calls('/_matrix/client/v3/login')).toHaveLength(1)
    const wrong = await Promise.all([h.report(report({ password: 'bad-1' })), h.report(report({ password: 'bad-1' })), h.report(report({ password: 'bad-2' }))])
    expect(wrong.map((r) => r.status)).toEqual([401, 401, 401])
    expect(h.synapse.calls('/_matrix/client/v3/login')).toHaveLength(3)
  })

  test('a good password check is cached briefly, keyed by the password too', async () => {
    h = await startHarness()
    await h.report(report())
    await h.report(report())
    expect(h.synapse.calls('/_matrix/client/v3/login')).toHaveLength(1)
    // A wrong password is checked again, not served from the cache of the right one.
    expect((await h.report(report({ password: 'guess' }))).status).toBe(401)
    expect(h.synapse.calls('/_matrix/client/v3/login')).toHaveLength(2)
  })

  test('AUTH_MODE=none resolves Matrix IDs, mappings and derived IDs without asking the homeserver', async () => {
    const dir = tempDir()
    const mapping = join(dir, 'mapping.json')
    writeFileSync(mapping, JSON.stringify([{ matrix_id: '@bob:example.org', number: '201', selectors: ['BOBSEL:1'] }]))
    h = await startHarness({ env: { AUTH_MODE: 'none', MAPPING_FILE: mapping } })
    await h.report({ selector: 'A:1', token_msgs: 't-a', app_id_msgs: APP_ID, username: '@alice:example.org' })
    await h.report({ selector: 'B:1', token_msgs: 't-b', app_id_msgs: APP_ID, username: '201' })
    await h.report({ selector: 'BOBSEL:1', token_msgs: 't-c', app_id_msgs: APP_ID })
    await h.report({ selector: 'D:1', token_msgs: 't-d', app_id_msgs: APP_ID, username: 'Alice@pbx.example.com' })
    expect((await h.store.listRegistrations()).map((r) => [r.selector, r.matrixUserId])).toEqual([
      ['A:1', '@alice:example.org'],
      ['B:1', '@bob:example.org'],
      ['BOBSEL:1', '@bob:example.org'],
      ['D:1', '@alice:example.org'],
    ])
    expect(h.synapse.calls('/_matrix/client/v3/login')).toHaveLength(0)
    const none = await h.report({ selector: 'NOBODY:1', token_msgs: 't', app_id_msgs: APP_ID })
    expect(none.status).toBe(400)
    expect(none.json.error).toContain('username')
    rmSync(dir, { recursive: true, force: true })
  })

  test('a changed token deletes the old pusher (kind: null) and registers the new one', async () => {
    h = await startHarness()
    await h.report(report())
    await h.report(report({ token_msgs: 'new-token' }))
    const bodies = h.synapse.pusherCalls().map((c) => c.body)
    expect(bodies[1]).toEqual({ kind: null, app_id: APP_ID, pushkey: TOKEN })
    expect(bodies[2]).toMatchObject({ kind: 'http', pushkey: 'new-token' })
    expect(h.synapse.pushers().map((p) => p.pushkey)).toEqual(['new-token'])
  })

  test('a changed app id deletes the pusher of the old app id', async () => {
    h = await startHarness()
    await h.report(report())
    await h.report(report({ app_id_msgs: 'com.other.app' }))
    expect(h.synapse.pusherCalls()[1]!.body).toEqual({ kind: null, app_id: APP_ID, pushkey: TOKEN })
    expect(h.synapse.pushers().map((p) => p.app_id)).toEqual(['com.other.app'])
  })

  test('an empty token deletes the pusher and forgets the token', async () => {
    h = await startHarness()
    await h.report(report())
    expect((await h.report(report({ token_msgs: '' }))).status).toBe(200)
    expect(h.synapse.pusherCalls()[1]!.body).toEqual({ kind: null, app_id: APP_ID, pushkey: TOKEN })
    expect(h.synapse.pushers()).toEqual([])
    expect((await h.store.getRegistration(SELECTOR))!.tokenMsgs).toBeUndefined()
    // The empty token is never used as one.
    expect(h.synapse.pusherCalls()).toHaveLength(2)
  })

  test('account_removal_report deletes the pusher and the row', async () => {
    h = await startHarness()
    await h.report(report())
    const res = await h.request('POST', '/api/client/account_removal_report', report())
    expect(res.status).toBe(200)
    expect(res.json).toEqual({})
    expect(await h.store.getRegistration(SELECTOR)).toBeUndefined()
    expect(h.synapse.pusherCalls().at(-1)!.body).toEqual({ kind: null, app_id: APP_ID, pushkey: TOKEN })
    expect(h.synapse.pushers()).toEqual([])
  })

  test('account_removal_report needs the same authentication', async () => {
    h = await startHarness()
    await h.report(report())
    expect((await h.request('POST', '/api/client/account_removal_report', report({ password: 'x' }))).status).toBe(401)
    expect(await h.store.getRegistration(SELECTOR)).toBeDefined()
  })

  test('PROXY_URL unset: tokens stored, no pusher call at all', async () => {
    h = await startHarness({ env: { PROXY_URL: '' } })
    await h.report(report())
    await h.report(report({ token_msgs: 'other' }))
    await h.request('POST', '/api/client/account_removal_report', report())
    expect(h.synapse.pusherCalls()).toHaveLength(0)
    expect(h.synapse.calls('/_matrix/client/v3/login').length).toBeGreaterThan(0)
  })

  test('PUSHER_FORMAT=full sends no format key', async () => {
    h = await startHarness({ env: { PUSHER_FORMAT: 'full' } })
    await h.report(report())
    expect(h.synapse.pusherCalls()[0]!.body.data).toEqual({ url: 'https://push.example.org/_matrix/push/v1/notify', selector: SELECTOR })
  })

  test('a failed pusher registration keeps the token, answers 200, logs the errcode and retries', async () => {
    h = await startHarness()
    let failures = 2
    h.synapse.override((r) =>
      r.path.endsWith('/pushers/set') && failures-- > 0
        ? Response.json({ errcode: 'M_UNKNOWN', error: 'Internal server error' }, { status: 500 })
        : undefined,
    )
    const res = await h.report(report())
    expect(res.status).toBe(200)
    expect((await h.store.getRegistration(SELECTOR))!.tokenMsgs).toBe(TOKEN)
    expect(h.logs.parsed().some((l) => l.msg === 'pusher set failed; will retry' && l.errcode === 'M_UNKNOWN')).toBe(true)
    await eventually(async () => h.synapse.pushers().length === 1 && (await h.store.pendingJobs()).length === 0)
    expect(h.synapse.pusherCalls()).toHaveLength(3)
  })

  test('a newer report replaces a pending retry', async () => {
    h = await startHarness({ compose: { pusherRetryBaseMs: 300, pusherRetryMaxMs: 300 } })
    let down = true
    h.synapse.override((r) => (r.path.endsWith('/pushers/set') && down ? new Response('bad gateway', { status: 502 }) : undefined))
    await h.report(report())
    expect((await h.store.pendingJobs()).map((j) => j.pushkey)).toEqual([TOKEN])
    down = false
    await h.report(report({ token_msgs: 'newer' }))
    await eventually(async () => (await h.store.pendingJobs()).length === 0)
    // The pending set of the old token was dropped; the old pusher is deleted, the new one set.
    const sets = h.synapse.pusherCalls().filter((c) => c.body.kind === 'http').map((c) => c.body.pushkey)
    expect(sets).toEqual([TOKEN, 'newer'])
    expect(h.synapse.pushers().map((p) => p.pushkey)).toEqual(['newer'])
  })

  test('PROXY_URL set but no appservice token: 503 naming MATRIX_AS_TOKEN', async () => {
    h = await startHarness({ env: { MATRIX_AS_TOKEN: '', AUTH_MODE: 'none' } })
    const res = await h.report(report())
    expect(res.status).toBe(503)
    expect(res.json.error).toContain('MATRIX_AS_TOKEN')
  })

  test('no homeserver configured: 503 naming MATRIX_HOMESERVER_URL', async () => {
    h = await startHarness({ env: { MATRIX_HOMESERVER_URL: '', PROXY_URL: '' } })
    const res = await h.report(report())
    expect(res.status).toBe(503)
    expect(res.json.error).toContain('MATRIX_HOMESERVER_URL')
  })

  test('two accounts of two users on one device token keep a pusher each (append: true, selector in data)', async () => {
    h = await startHarness()
    await h.report(report())
    await h.report({ selector: 'BOBSEL:1', token_msgs: TOKEN, app_id_msgs: APP_ID, username: 'bob', password: 'bob-password' })
    expect(h.synapse.pusherCalls().map((c) => c.body.append)).toEqual([true, true])
    expect(h.synapse.pushers().map((p) => [p.user_id, p.pushkey, p.data.selector])).toEqual([
      ['@alice:example.org', TOKEN, SELECTOR],
      ['@bob:example.org', TOKEN, 'BOBSEL:1'],
    ])
  })
})

describe('homeserver login rate limits', () => {
  test('a short retry_after_ms on login is waited out once', async () => {
    h = await startHarness()
    let limited = 1
    h.synapse.override((r) =>
      r.path.endsWith('/login') && limited-- > 0
        ? Response.json({ errcode: 'M_LIMIT_EXCEEDED', error: 'Too Many Requests', retry_after_ms: 120 }, { status: 429 })
        : undefined,
    )
    const res = await h.report(report())
    expect(res.status).toBe(200)
    expect(h.synapse.calls('/_matrix/client/v3/login')).toHaveLength(2)
  })

  test('a long one is a 503 with Retry-After, never a 401', async () => {
    h = await startHarness()
    h.synapse.override((r) =>
      r.path.endsWith('/login') ? Response.json({ errcode: 'M_LIMIT_EXCEEDED', error: 'Too Many Requests', retry_after_ms: 60_000 }, { status: 429 }) : undefined,
    )
    const res = await h.report(report())
    expect(res.status).toBe(503)
    expect(res.headers.get('retry-after')).toBe('60')
    expect(h.synapse.calls('/_matrix/client/v3/login')).toHaveLength(1)
  })
})

describe('homeserver answers outside the common path', () => {
  test('a login answer without access_token still names the user; no logout is attempted', async () => {
    h = await startHarness()
    h.synapse.override((r) => (r.path.endsWith('/login') ? Response.json({ user_id: '@alice:example.org' }) : undefined))
    const res = await h.report(report())
    expect(res.status).toBe(200)
    expect((await h.store.getRegistration(SELECTOR))!.matrixUserId).toBe('@alice:example.org')
    expect(h.synapse.calls('/_matrix/client/v3/logout')).toHaveLength(0)
  })

  test('a failing logout does not fail the report', async () => {
    h = await startHarness()
    h.synapse.override((r) => (r.path.endsWith('/logout') ? new Response('nope', { status: 500 }) : undefined))
    expect((await h.report(report())).status).toBe(200)
    expect(h.logs.parsed().some((l) => l.msg === 'logout of the password-check session failed')).toBe(true)
  })
})

describe('the first pusher attempt', () => {
  test('a homeserver that hangs does not hold the app: 200 after the short wait, the call stays queued', async () => {
    h = await startHarness({ env: { MATRIX_TIMEOUT_MS: '20000' }, compose: { reportPusherWaitMs: 100 } })
    let release = () => {}
    const hang = new Promise<Response>((resolve) => {
      release = () => resolve(Response.json({}))
    })
    h.synapse.override((r) => (r.path.endsWith('/pushers/set') ? hang : undefined))
    const started = performance.now()
    const res = await h.report(report())
    expect(res.status).toBe(200)
    // Without the bound the answer would wait for the 20 s homeserver timeout.
    expect(performance.now() - started).toBeLessThan(5000)
    expect((await h.store.getRegistration(SELECTOR))!.tokenMsgs).toBe(TOKEN)
    expect((await h.store.pendingJobs()).map((j) => j.action)).toEqual(['set'])
    release()
  })
})
