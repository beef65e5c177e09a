/** `check` on the built executable, against the fake Synapse: exit 0 / 1 / 2 and what it says. */
import { afterAll, describe, expect, test } from 'bun:test'
import { existsSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { startFakePnm } from '../fakes/pnm.ts'
import { startFakeSynapse } from '../fakes/synapse.ts'
import { tempDir } from '../harness.ts'
import { runCommand } from './run.ts'

const synapse = startFakeSynapse()
const narrow = startFakeSynapse({ namespace: /^@bridge_.*:example\.org$/ })
const pnm = startFakePnm()
const dir = tempDir('m2a-check-')
afterAll(() => {
  synapse.stop()
  narrow.stop()
  pnm.stop()
  rmSync(dir, { recursive: true, force: true })
})

const env = (extra: Record<string, string> = {}) => ({
  MATRIX_HOMESERVER_URL: synapse.url,
  MATRIX_AS_TOKEN: synapse.asToken,
  MATRIX_SERVER_NAME: synapse.serverName,
  PROXY_URL: 'https://push.example.org',
  PNM_URL: pnm.url,
  PUSH_TOKEN_DB_PATH: join(dir, 'state', 'push_tokens.db'),
  ...extra,
})

const whoamis = (s: typeof synapse) => s.calls('/_matrix/client/v3/account/whoami')

describe('check', () => {
  test('all well: exit 0, each probe reported, the sample user acted for, nothing created, no secret printed', async () => {
    const before = whoamis(synapse).length
    const r = await runCommand(['check'], env())
    expect(r.stdout).toContain('check passed')
    expect(r.exitCode).toBe(0)
    expect(r.stdout).not.toContain('FAIL')
    expect(r.stdout).toContain('accepts MATRIX_AS_TOKEN')
    expect(r.stdout).toContain('the users namespace covers @matrix2acrobits-check:example.org')
    expect(r.stdout).toContain('127.0.0.1 is an IP address')
    expect(r.stdout).toContain('it will be created')
    expect(existsSync(join(dir, 'state'))).toBe(false)
    const calls = whoamis(synapse).slice(before)
    expect(calls.map((c) => c.query.user_id)).toEqual([undefined, '@matrix2acrobits-check:example.org'])
    expect(calls.every((c) => c.authorization === `Bearer ${synapse.asToken}`)).toBe(true)
    expect(r.stdout + r.stderr).not.toContain(synapse.asToken)
  })

  test('PUSH_TOKEN_DB_PATH=:memory: is warned about, and no file of that name is made', async () => {
    const r = await runCommand(['check'], env({ PUSH_TOKEN_DB_PATH: ':memory:' }), dir)
    expect(r.exitCode).toBe(0)
    expect(r.stdout).toContain('  warn  PUSH_TOKEN_DB_PATH is :memory: the service keeps the tokens in memory only')
    expect(existsSync(join(dir, ':memory:'))).toBe(false)
  })

  test('--user names a real user: exit 0 when it exists, 1 when it does not', async () => {
    const alice = await runCommand(['check', '--user', '@alice:example.org'], env())
    expect(alice.exitCode).toBe(0)
    expect(alice.stdout).toContain('lets the appservice act for @alice:example.org')
    const ghost = await runCommand(['check', '--user', '@ghost:example.org'], env())
    expect(ghost.exitCode).toBe(1)
    expect(ghost.stdout).toContain('has no such user')
  })

  test('every configuration problem at once, probes skipped, exit 2', async () => {
    const r = await runCommand(['check'], { PROXY_PORT: 'http', LOGLEVEL: 'LOUD', PNM_URL: 'ftp://x', PUSH_TOKEN_DB_PATH: join(dir, 'x.db') })
    expect(r.exitCode).toBe(2)
    for (const name of ['PROXY_PORT', 'LOGLEVEL', 'PNM_URL', 'MATRIX_HOMESERVER_URL', 'MATRIX_AS_TOKEN', 'PROXY_URL']) {
      expect(r.stdout.split('\n').filter((l) => l.includes('FAIL') && l.includes(name)).length).toBeGreaterThanOrEqual(1)
    }
    expect(r.stdout).toContain('probes not run')
  })

  test('an incomplete configuration is exit 2 too', async () => {
    const before = synapse.requests.length
    const r = await runCommand(['check'], env({ MATRIX_AS_TOKEN: '', PROXY_URL: '' }))
    expect(r.exitCode).toBe(2)
    expect(r.stdout).toContain('MATRIX_AS_TOKEN is not set')
    expect(r.stdout).toContain('PROXY_URL is not set')
    expect(synapse.requests.length).toBe(before)
  })

  test('AUTH_MODE=ext without EXT_AUTH_URL is incomplete: exit 2, naming it', async () => {
    const r = await runCommand(['check'], env({ AUTH_MODE: 'ext' }))
    expect(r.exitCode).toBe(2)
    expect(r.stdout).toContain('EXT_AUTH_URL is not set (AUTH_MODE=ext)')
  })

  test('a token the homeserver does not know: exit 1, pointing at app_service_config_files', async () => {
    const r = await runCommand(['check'], env({ MATRIX_AS_TOKEN: 'not-the-token' }))
    expect(r.exitCode).toBe(1)
    expect(r.stdout).toContain('does not know MATRIX_AS_TOKEN')
    expect(r.stdout).toContain('app_service_config_files')
    expect(r.stdout).not.toContain('not-the-token')
  })

  test('a users namespace that does not cover the users: exit 1, naming the fix', async () => {
    const r = await runCommand(['check'], env({ MATRIX_HOMESERVER_URL: narrow.url, MATRIX_AS_TOKEN: narrow.asToken }))
    expect(r.exitCode).toBe(1)
    expect(r.stdout).toMatch(/FAIL .*users namespace does not cover @matrix2acrobits-check:example\.org.*exclusive: false/)
  })

  test('a server name other than the homeserver\'s: exit 1, naming the right one', async () => {
    const r = await runCommand(['check'], env({ MATRIX_SERVER_NAME: 'matrix.example.org' }))
    expect(r.exitCode).toBe(1)
    expect(r.stdout).toContain('set MATRIX_SERVER_NAME=example.org')
  })

  test('an unreachable homeserver and a PNM host that does not resolve: exit 1, both reported', async () => {
    const r = await runCommand(['check'], env({ MATRIX_HOMESERVER_URL: 'http://127.0.0.1:9', PNM_URL: 'https://pnm.invalid/pnm2/send' }))
    expect(r.exitCode).toBe(1)
    expect(r.stdout).toContain('cannot reach the homeserver')
    expect(r.stdout).toMatch(/FAIL .*pnm\.invalid \(PNM_URL\) does not resolve/)
    expect(r.stdout).toContain('check failed: 2 problems')
  })

  test('a push gateway on a loopback address warns about ip_range_whitelist without failing', async () => {
    const r = await runCommand(['check'], env({ PROXY_URL: 'http://127.0.0.1:8080' }))
    expect(r.exitCode).toBe(0)
    expect(r.stdout).toMatch(/warn .*ip_range_whitelist/)
  })
})

describe('check: the appservice link (messaging)', () => {
  test('ok when Synapse reaches the proxy with the hs_token; FAIL saying which when the token differs or the url is unset', async () => {
    const { startMessaging } = await import('../messaging/support.ts')
    const h = await startMessaging()
    try {
      const messagingEnv = env({ MATRIX_HOMESERVER_URL: h.synapse.url, MATRIX_AS_TOKEN: h.synapse.asToken, MATRIX_HS_TOKEN: h.synapse.hsToken })
      const good = await runCommand(['check'], messagingEnv)
      expect(good.stdout).toContain("Synapse reached this proxy's appservice routes with the hs_token")
      expect(h.synapse.pings.length).toBeGreaterThan(0)
      // The proxy runs with another hs_token than the registration's.
      const other = await startMessaging({ env: { MATRIX_HS_TOKEN: 'some-other-token' } })
      try {
        const bad = await runCommand(['check'], { ...messagingEnv, MATRIX_HOMESERVER_URL: other.synapse.url })
        expect(bad.exitCode).toBe(1)
        expect(bad.stdout).toContain('the hs_token does not match')
        other.synapse.connectAppservice(undefined)
        const unset = await runCommand(['check'], { ...messagingEnv, MATRIX_HOMESERVER_URL: other.synapse.url })
        expect(unset.stdout).toMatch(/url is null|cannot reach/)
        expect(unset.stdout + unset.stderr).not.toContain(h.synapse.hsToken)
      } finally {
        await other.close()
      }
    } finally {
      await h.close()
    }
  }, 60_000)
})
