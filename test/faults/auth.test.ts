/**
 * Credential guessing on AUTH_MODE=matrix is limited per username and per client address (429
 * with Retry-After); the address is the socket's, and X-Forwarded-For counts only from a proxy
 * named in TRUST_PROXY. NOTIFY_ALLOWED_IPS keeps other addresses off the push gateway (403).
 * These run on a real listener: without a socket there is no client address.
 */
import { afterEach, describe, expect, test } from 'bun:test'
import { APP_ID, TOKEN, startHarness, type Harness, type HarnessOptions } from '../harness.ts'
import { notification, post } from './support.ts'

let h: Harness | undefined
let base = ''
afterEach(async () => {
  h?.app.server?.stop(true)
  await h?.close()
  h = undefined
})

async function listening(options: HarnessOptions = {}) {
  h = await startHarness(options)
  h.app.listen({ hostname: '127.0.0.1', port: 0 })
  base = `http://127.0.0.1:${h.app.server!.port}`
  return h
}

const selector = (n: number) => `${n.toString(16).toUpperCase().padStart(40, '0')}:7C3A0D14`
const attempt = (username: string, password: string, headers: Record<string, string> = {}, n = 1) =>
  post(`${base}/api/client/push_token_report`, { selector: selector(n), token_msgs: `${TOKEN}-${n}`, app_id_msgs: APP_ID, username, password }, headers)
const logins = () => h!.synapse.calls('/_matrix/client/v3/login').length

describe('AUTH_MODE=matrix: failed attempts', () => {
  test('per username and address: the 6th attempt in a minute gets 429 with Retry-After, even with the right password', async () => {
    await listening()
    for (let i = 0; i < 5; i++) {
      const res = await attempt('alice', `guess-${i}`, {}, i)
      expect(res.status).toBe(401)
    }
    const limited = await attempt('alice', 'alice-password')
    expect(limited.status).toBe(429)
    const retryAfter = Number(limited.headers.get('retry-after'))
    expect(retryAfter).toBeGreaterThanOrEqual(1)
    expect(retryAfter).toBeLessThanOrEqual(60)
    expect(limited.json.error).toMatch(/Too many failed attempts/)
    // The guesses past the limit never reach the homeserver; nothing was stored.
    expect(logins()).toBe(5)
    expect(await h!.store.listRegistrations()).toHaveLength(0)
    // Another user behind the same address is not affected.
    expect((await attempt('bob', 'bob-password')).status).toBe(200)
  })

  test('six users behind one address with one typo each: none is locked out', async () => {
    await listening({ synapse: { users: Object.fromEntries(Array.from({ length: 6 }, (_, i) => [`user${i}`, `pw-${i}`])) } })
    for (let i = 0; i < 6; i++) expect((await attempt(`user${i}`, 'typo', {}, i)).status).toBe(401)
    for (let i = 0; i < 6; i++) expect((await attempt(`user${i}`, `pw-${i}`, {}, i)).status).toBe(200)
  })

  test('@alice:<server name>, alice and ALICE are one user for the limit', async () => {
    await listening()
    for (const name of ['alice', '@alice:example.org', 'ALICE', '@Alice:Example.org', 'alice']) expect((await attempt(name, 'wrong')).status).toBe(401)
    expect((await attempt('@alice:example.org', 'alice-password')).status).toBe(429)
    expect(logins()).toBe(5)
  })

  test('X-Forwarded-For from an untrusted peer is ignored: rotating it does not escape the limit', async () => {
    await listening()
    for (let i = 0; i < 5; i++) {
      expect((await attempt('alice', 'wrong', { 'x-forwarded-for': `203.0.113.${i + 1}` }, i)).status).toBe(401)
    }
    expect((await attempt('alice', 'wrong', { 'x-forwarded-for': '198.51.100.7' })).status).toBe(429)
  })

  test('X-Forwarded-For from a loopback peer without TRUST_PROXY: one warning, not one per request', async () => {
    await listening()
    for (let i = 0; i < 3; i++) await attempt('alice', 'alice-password', { 'x-forwarded-for': '203.0.113.1' })
    const warnings = h!.logs.parsed().filter((l) => l.level === 'warn' && /TRUST_PROXY is not set/.test(l.msg))
    expect(warnings).toHaveLength(1)
    expect(warnings[0]!.peer).toBe('127.0.0.1')
  })

  test('TRUST_PROXY names the proxy: each forwarded client has its own bucket, and no warning', async () => {
    await listening({ env: { TRUST_PROXY: '127.0.0.1' } })
    for (let i = 0; i < 5; i++) {
      expect((await attempt('alice', 'wrong', { 'x-forwarded-for': '203.0.113.9' }, i)).status).toBe(401)
    }
    expect((await attempt('alice', 'alice-password', { 'x-forwarded-for': '203.0.113.9' })).status).toBe(429)
    // The same user from a different client behind the same proxy is still served.
    const other = await attempt('alice', 'alice-password', { 'x-forwarded-for': '198.51.100.7' })
    expect(other.status).toBe(200)
    expect((await h!.store.getRegistration(selector(1)))?.matrixUserId).toBe('@alice:example.org')
    expect(h!.logs.parsed().filter((l) => /TRUST_PROXY is not set/.test(l.msg ?? ''))).toHaveLength(0)
  })

  test('AUTH_FAILURES_PER_MINUTE sets the limit', async () => {
    await listening({ env: { AUTH_FAILURES_PER_MINUTE: '2' } })
    expect((await attempt('alice', 'a')).status).toBe(401)
    expect((await attempt('alice', 'b')).status).toBe(401)
    expect((await attempt('alice', 'c')).status).toBe(429)
  })
})

describe('NOTIFY_ALLOWED_IPS', () => {
  async function withToken(env: Record<string, string>) {
    await listening({ env })
    const res = await attempt('alice', 'alice-password')
    expect(res.status).toBe(200)
  }
  const notify = (headers: Record<string, string> = {}, body: unknown = { notification: notification('$ip', APP_ID, `${TOKEN}-1`) }) =>
    post(`${base}/_matrix/push/v1/notify`, body, headers)

  test('calls from elsewhere get 403, whatever they send; nothing reaches the PNM', async () => {
    await withToken({ NOTIFY_ALLOWED_IPS: '10.0.0.0/8, 192.0.2.1' })
    const res = await notify()
    expect(res.status).toBe(403)
    expect(res.json.errcode).toBe('M_FORBIDDEN')
    expect(res.json.error).toMatch(/NOTIFY_ALLOWED_IPS/)
    // A forged X-Forwarded-For does not help without TRUST_PROXY.
    expect((await notify({ 'x-forwarded-for': '10.1.2.3' })).status).toBe(403)
    // Refused before the body is looked at: an outsider learns nothing from validation errors.
    expect((await notify({}, '{not json')).status).toBe(403)
    expect(h!.pnm.requests).toHaveLength(0)
  })

  test('calls from a listed address (or CIDR) are served', async () => {
    await withToken({ NOTIFY_ALLOWED_IPS: '127.0.0.0/8' })
    const res = await notify()
    expect(res.status).toBe(200)
    expect(res.json).toEqual({ rejected: [] })
  })

  test('behind a trusted proxy, the forwarded address decides', async () => {
    await withToken({ NOTIFY_ALLOWED_IPS: '10.0.0.0/8', TRUST_PROXY: '127.0.0.1' })
    expect((await notify({ 'x-forwarded-for': '10.1.2.3' })).status).toBe(200)
    expect((await notify({ 'x-forwarded-for': '192.0.2.50' })).status).toBe(403)
  })

  test('unset: any address may call', async () => {
    await withToken({})
    expect((await notify()).status).toBe(200)
  })
})
