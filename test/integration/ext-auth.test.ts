/**
 * AUTH_MODE=ext against the fake CTI server: login, the chat claim, the users list
 * as mapping entries, the shared limits and cache, and a CTI that cannot answer.
 */
import { afterEach, describe, expect, test } from 'bun:test'
import { loadConfig } from '../../src/config.ts'
import { startFakeCti, type FakeCti } from '../fakes/cti.ts'
import { APP_ID, SELECTOR, TOKEN, startHarness, type Harness } from '../harness.ts'

let h: Harness | undefined
let cti: FakeCti | undefined
afterEach(async () => {
  await h?.close()
  cti?.stop()
  h = cti = undefined
})

async function start(env: Record<string, string> = {}) {
  cti = startFakeCti()
  h = await startHarness({ env: { EXT_AUTH_URL: cti.url, ...env }, synapse: { users: { giacomo: 'matrix-pw', mario: 'matrix-pw' } } })
  return { h, cti }
}
const report = (username: string, password: string, selector = SELECTOR) =>
  h!.report({ selector, token_msgs: TOKEN, app_id_msgs: APP_ID, username, password })

describe('AUTH_MODE=ext', () => {
  test('is chosen when EXT_AUTH_URL is set and AUTH_MODE is not', () => {
    const env = { EXT_AUTH_URL: 'https://cti.example.org/' }
    const auto = loadConfig(env)
    expect(auto.ok && auto.config.authMode).toBe('ext')
    expect(auto.ok && auto.config.extAuthUrl).toBe('https://cti.example.org')
    const explicit = loadConfig({ ...env, AUTH_MODE: 'matrix' })
    expect(explicit.ok && explicit.config.authMode).toBe('matrix')
  })

  test('login without the @domain, the chat claim, the users list with the JWT: the account is @<user_name>:<server name>', async () => {
    const { h, cti } = await start()
    const res = await report('Giacomo@nethvoice.example.org', 'Giacomo,1234')
    // The CTI knows "giacomo"; the username is sent as the app gave it, minus the domain.
    expect(cti.calls('/api/login').map((r) => r.body)).toEqual([{ username: 'Giacomo', password: 'Giacomo,1234' }])
    expect(res.status).toBe(401)

    const ok = await report('giacomo@nethvoice.example.org', 'Giacomo,1234')
    expect(ok.status).toBe(200)
    const login = cti.calls('/api/login').at(-1)!
    expect(login.body).toEqual({ username: 'giacomo', password: 'Giacomo,1234' })
    const chat = cti.calls('/api/chat')
    expect(chat).toHaveLength(1)
    expect(chat[0]!.query).toEqual({ users: '1' })
    expect(chat[0]!.authorization).toMatch(/^Bearer [\w-]+\.[\w-]+\.[\w-]+$/)
    expect((await h.store.getRegistration(SELECTOR))!.matrixUserId).toBe('@giacomo:example.org')
    expect(h.synapse.pushers().map((p) => p.user_id)).toEqual(['@giacomo:example.org'])
    // The users list is kept in MAPPING_FILE's shape: numbers and sub-numbers name users.
    const entries = h.directory.entries()
    expect(entries.map((e) => [e.matrixId, [...e.usernames], [...e.numbers]])).toEqual([
      ['@giacomo:example.org', ['giacomo'], ['201', '91201']],
      ['@mario:example.org', ['mario'], ['202']],
      ['@nochat:example.org', ['nochat'], ['203']],
    ])
    // No password, no JWT in any log line.
    const text = h.logs.lines.join('\n')
    expect(text).not.toContain('Giacomo,1234')
    expect(text).not.toContain(chat[0]!.authorization!.slice(7))
  })

  test('`extensions` is read as well as `sub_extensions`', async () => {
    const { h, cti } = await start()
    cti.useExtensionsKey('extensions')
    expect((await report('giacomo', 'Giacomo,1234')).status).toBe(200)
    expect([...h.directory.entries()[0]!.numbers]).toEqual(['201', '91201'])
  })

  test('an account without "nethvoice_cti.chat": true is refused with 403 and nothing stored', async () => {
    const { h, cti } = await start()
    cti.setUser('nochat', { password: 'Nochat,1234', chat: false, main_extension: '203', sub_extensions: [] })
    cti.setUser('noclaim', { password: 'x', chat: undefined, main_extension: '204', sub_extensions: [] })
    expect((await report('nochat', 'Nochat,1234')).status).toBe(403)
    expect((await report('noclaim', 'x')).status).toBe(403)
    expect(cti.calls('/api/chat')).toHaveLength(0)
    expect(await h.store.listRegistrations()).toEqual([])
  })

  test('a good check is cached keyed by the password: another password asks the CTI again', async () => {
    const { cti } = await start()
    expect((await report('giacomo', 'Giacomo,1234')).status).toBe(200)
    expect((await report('giacomo', 'Giacomo,1234')).status).toBe(200)
    expect(cti.calls('/api/login')).toHaveLength(1)
    expect((await report('giacomo', 'wrong')).status).toBe(401)
    expect(cti.calls('/api/login')).toHaveLength(2)
  })

  test('wrong passwords go through the same limits: past AUTH_FAILURES_PER_MINUTE, 429 without asking the CTI', async () => {
    const { cti } = await start({ AUTH_FAILURES_PER_MINUTE: '2' })
    expect((await report('giacomo', 'bad-1')).status).toBe(401)
    expect((await report('giacomo', 'bad-2')).status).toBe(401)
    const limited = await report('giacomo', 'bad-3')
    expect(limited.status).toBe(429)
    expect(limited.headers.get('retry-after')).toMatch(/^\d+$/)
    expect(cti.calls('/api/login')).toHaveLength(2)
  })

  test('a CTI that is down, fails or hangs is a 503, never a 401', async () => {
    const { cti } = await start({ EXT_AUTH_TIMEOUT_S: '1' })
    cti.override((r) => (r.path === '/api/login' ? new Response('oops', { status: 500 }) : undefined))
    expect((await report('giacomo', 'Giacomo,1234')).status).toBe(503)
    cti.override((r) => (r.path === '/api/chat' ? new Response('oops', { status: 502 }) : undefined))
    expect((await report('giacomo', 'Giacomo,1234')).status).toBe(503)
    cti.override((r) => (r.path === '/api/login' ? Response.json({ token: 'not-a-jwt' }) : undefined))
    expect((await report('giacomo', 'Giacomo,1234')).status).toBe(503)
    cti.override(() => new Promise<Response>(() => {}))
    const started = Date.now()
    const hung = await report('giacomo', 'Giacomo,1234')
    expect(hung.status).toBe(503)
    // EXT_AUTH_TIMEOUT_S=1, the Go proxy's name, is the timeout.
    expect(Date.now() - started).toBeLessThan(5_000)
    cti.stop()
    expect((await report('giacomo', 'Giacomo,1234')).status).toBe(503)
    expect(h!.logs.parsed().filter((l) => l.msg === 'CTI server could not check the password').length).toBeGreaterThanOrEqual(5)
  })

  test('AUTH_MODE=ext without EXT_AUTH_URL: 503 naming it', async () => {
    h = await startHarness({ env: { AUTH_MODE: 'ext' } })
    const res = await h.report({ selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, username: 'giacomo', password: 'x' })
    expect(res.status).toBe(503)
    expect(res.json.error).toContain('EXT_AUTH_URL')
  })
})

describe("the Go proxy's variable names", () => {
  test('aliases where they mean the same, ignored with a note where they do not', () => {
    const r = loadConfig({ EXT_AUTH_URL: 'http://cti', EXT_AUTH_TIMEOUT_S: '7', CACHE_TTL_SECONDS: '3600', AS_USER_ID: '@_acrobits_proxy:example.org', SUPER_ADMIN_TOKEN: 'as' })
    expect(r.ok).toBe(true)
    if (!r.ok) return
    expect(r.config.extAuthTimeoutMs).toBe(7000)
    expect(r.config.authCacheTtlMs).toBe(3_600_000)
    expect(r.config.asToken).toBe('as')
    expect(r.config.notes).toEqual([
      "EXT_AUTH_TIMEOUT_S (the Go proxy's name) is read as EXT_AUTH_TIMEOUT_MS",
      "CACHE_TTL_SECONDS (the Go proxy's name) is read as AUTH_CACHE_TTL_SECONDS",
      "SUPER_ADMIN_TOKEN (the Go proxy's name) is read as MATRIX_AS_TOKEN",
      "AS_USER_ID is ignored: the appservice's own user is the one its MATRIX_AS_TOKEN belongs to (`check` shows it)",
    ])
    const ours = loadConfig({ EXT_AUTH_TIMEOUT_S: '7', EXT_AUTH_TIMEOUT_MS: '1500' })
    expect(ours.ok && ours.config.extAuthTimeoutMs).toBe(1500)
    expect(ours.ok && ours.config.notes).toEqual(['EXT_AUTH_TIMEOUT_S is ignored: EXT_AUTH_TIMEOUT_MS is set too'])
    const bad = loadConfig({ EXT_AUTH_TIMEOUT_S: 'five', CACHE_TTL_SECONDS: '-1' })
    expect(bad.ok).toBe(false)
    expect(!bad.ok && bad.errors).toEqual(['EXT_AUTH_TIMEOUT_S: "five" is not a whole number of seconds', 'AUTH_CACHE_TTL_SECONDS: "-1" is not a whole number from 0 to 86400'])
  })
})
