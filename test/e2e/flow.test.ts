/**
 * The operator's view: the compiled executable, configured by environment variables only, talking
 * HTTP to a fake Synapse and a fake PNM; stopped and started again on the same database.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { statSync } from 'node:fs'
import { join } from 'node:path'
import type { FakePnm } from '../fakes/pnm.ts'
import type { FakeSynapse } from '../fakes/synapse.ts'
import { APP_ID, SELECTOR, TOKEN, expectedPusherBody, fullNotification } from '../harness.ts'
import { runBinary, startBinary, startExecutableFakes, stopExecutableFakes, type RunningBinary } from './binary.ts'
import { runCommand } from '../cli/run.ts'

let synapse: FakeSynapse
let pnm: FakePnm
let dir: string
let env: Record<string, string>
const running: RunningBinary[] = []

beforeAll(() => {
  ;({ synapse, pnm, dir } = startExecutableFakes())
  env = {
    MATRIX_HOMESERVER_URL: synapse.url,
    MATRIX_AS_TOKEN: synapse.asToken,
    PROXY_URL: 'https://push.example.org/',
    PNM_URL: pnm.url,
    PUSH_TOKEN_DB_PATH: join(dir, 'state', 'tokens.db'),
    LOGLEVEL: 'debug',
  }
})

afterAll(() => stopExecutableFakes({ synapse, pnm, dir }, running))

async function start(extra: Record<string, string> = {}) {
  const b = await startBinary({ ...env, ...extra })
  running.push(b)
  return b
}

const post = (url: string, body: unknown, headers: Record<string, string> = { 'content-type': 'application/json' }) =>
  fetch(url, { method: 'POST', headers, body: typeof body === 'string' ? body : JSON.stringify(body) })

describe('the executable', () => {
  test('--version and --help answer without configuration', () => {
    const version = runBinary(['--version'])
    expect(version.exitCode).toBe(0)
    expect(version.stdout.trim()).toMatch(/^matrix2acrobits \d+\.\d+\.\d+/)
    const help = runBinary(['--help'])
    expect(help.exitCode).toBe(0)
    for (const name of ['MATRIX_HOMESERVER_URL', 'PROXY_URL', 'PNM_URL', 'AUTH_MODE', 'PUSH_TOKEN_DB_PATH']) expect(help.stdout).toContain(name)
  })

  test('invalid values stop the start with exit code 2 and one line per variable', () => {
    const r = runBinary([], { PROXY_PORT: 'http', MATRIX_HOMESERVER_URL: 'nope', AUTH_MODE: 'ldap', PNM_TIMEOUT_MS: '-3', MAPPING_FILE: join(dir, 'missing.json') })
    expect(r.exitCode).toBe(2)
    const lines = r.stderr.trim().split('\n')
    expect(lines).toHaveLength(5)
    for (const name of ['PROXY_PORT', 'MATRIX_HOMESERVER_URL', 'AUTH_MODE', 'PNM_TIMEOUT_MS', 'MAPPING_FILE']) {
      expect(lines.filter((l) => l.includes(name))).toHaveLength(1)
    }
  })

  test('starts with nothing configured, says what it cannot do, answers 503 naming the variable', async () => {
    const b = await startBinary({ PUSH_TOKEN_DB_PATH: join(dir, 'bare.db') })
    running.push(b)
    expect((await fetch(`${b.url}/health`)).status).toBe(200)
    const res = await post(`${b.url}/api/client/push_token_report`, { selector: SELECTOR, username: 'alice', password: 'x' })
    expect(res.status).toBe(503)
    expect(((await res.json()) as { error: string }).error).toContain('MATRIX_HOMESERVER_URL')
    expect(b.lines.filter((l) => l.includes('PROXY_URL is not set'))).toHaveLength(1)
    // Oversized bodies get the Matrix JSON error from the proxy, not an empty answer from the server.
    const huge = await post(`${b.url}/_matrix/push/v1/notify`, JSON.stringify({ notification: { devices: [], pad: 'x'.repeat(2 * 1024 * 1024) } }))
    expect(huge.status).toBe(413)
    expect(await huge.json()).toMatchObject({ errcode: 'M_TOO_LARGE' })
    expect(await b.stop()).toBe(0)
  })

  test('report -> pusher on Synapse -> notify -> PNM, then restart on the same database', async () => {
    const first = await start()
    const report = await post(`${first.url}/api/client/push_token_report`, {
      selector: SELECTOR,
      token_msgs: TOKEN,
      app_id_msgs: APP_ID,
      token_calls: '',
      app_id_calls: '',
      username: 'alice ',
      password: 'alice-password',
    })
    expect(report.status).toBe(200)
    expect(await report.json()).toEqual({})

    const login = synapse.calls('/_matrix/client/v3/login')
    expect(login).toHaveLength(1)
    expect(login[0]!.body.identifier).toEqual({ type: 'm.id.user', user: 'alice' })
    expect(synapse.calls('/_matrix/client/v3/logout')).toHaveLength(1)
    const set = synapse.pusherCalls()
    expect(set).toHaveLength(1)
    expect(set[0]!.query).toEqual({ user_id: '@alice:example.org' })
    expect(set[0]!.authorization).toBe(`Bearer ${synapse.asToken}`)
    expect(set[0]!.body).toEqual(expectedPusherBody(TOKEN))

    const notification = fullNotification('$e2e-1', TOKEN, { content: { msgtype: 'm.text', body: 'Grüße 👋' }, counts: { unread: 3 } })
    const notify = await post(`${first.url}/_matrix/push/v1/notify`, { notification })
    expect(notify.status).toBe(200)
    expect(await notify.json()).toEqual({ rejected: [] })
    expect(pnm.bodies()).toEqual([
      {
        verb: 'NotifyTextMessage',
        AppId: APP_ID,
        DeviceToken: TOKEN,
        Selector: SELECTOR,
        Badge: 3,
        Sound: 'default',
        UserName: '@bob:example.org',
        UserDisplayName: 'Bob',
        Message: 'Grüße 👋',
        ContentType: 'text/plain',
        Id: '$e2e-1',
        ThreadId: '!room:example.org',
      },
    ])

    // Secrets never reach the log, even at DEBUG.
    const log = first.lines.join('\n')
    for (const secret of ['alice-password', synapse.asToken, TOKEN]) expect(log).not.toContain(secret)

    expect(await first.stop()).toBe(0)
    expect(statSync(env.PUSH_TOKEN_DB_PATH!).mode & 0o777).toBe(0o600)

    // Same database, new process: the token is still there, and so is what was delivered in the
    // last hour (the journal): Synapse's retry of the first push is not sent again.
    const second = await start()
    const retried = await post(`${second.url}/_matrix/push/v1/notify`, { notification })
    expect([retried.status, await retried.json()]).toEqual([200, { rejected: [] }])
    expect(pnm.bodies()).toHaveLength(1)
    expect(second.lines.some((l) => l.includes('duplicate filter restored from the delivery journal'))).toBe(true)
    const again = await post(`${second.url}/_matrix/push/v1/notify`, {
      notification: { event_id: '$e2e-2', room_id: '!room:example.org', prio: 'high', counts: { unread: 4 }, devices: [{ app_id: APP_ID, pushkey: TOKEN }] },
    })
    expect(again.status).toBe(200)
    expect(await again.json()).toEqual({ rejected: [] })
    expect(pnm.bodies()[1]).toEqual({
      verb: 'NotifyTextMessage',
      AppId: APP_ID,
      DeviceToken: TOKEN,
      Selector: SELECTOR,
      Badge: 4,
      Sound: 'default',
      Id: '$e2e-2',
      ThreadId: '!room:example.org',
    })

    // The device token goes away at the PNM: rejected, forgotten, and after a restart still unknown.
    pnm.forget(TOKEN)
    const gone = await post(`${second.url}/_matrix/push/v1/notify`, {
      notification: { event_id: '$e2e-3', room_id: '!room:example.org', counts: { unread: 5 }, devices: [{ app_id: APP_ID, pushkey: TOKEN }] },
    })
    const goneAnswer = (await gone.json()) as { rejected: string[] }
    expect(goneAnswer).toEqual({ rejected: [TOKEN] })
    synapse.applyRejections('@alice:example.org', APP_ID, goneAnswer.rejected)

    // A new token and a removal report: old pusher deleted, new one set, then all removed.
    const newToken = 'fresh-device-token-2'
    const changed = await post(
      `${second.url}/api/client/push_token_report`,
      `selector=${encodeURIComponent(SELECTOR)}&token_msgs=${newToken}&appid_msgs=${APP_ID}&username=alice&password=alice-password`,
      { 'content-type': 'application/x-www-form-urlencoded' },
    )
    expect(changed.status).toBe(200)
    expect(synapse.pushers().map((p) => [p.user_id, p.pushkey])).toEqual([['@alice:example.org', newToken]])
    expect(await second.stop()).toBe(0)

    const third = await start()
    const removal = await post(`${third.url}/api/client/account_removal_report`, { selector: SELECTOR, username: 'alice', password: 'alice-password' })
    expect(removal.status).toBe(200)
    expect(synapse.pusherCalls().at(-1)!.body).toEqual({ kind: null, app_id: APP_ID, pushkey: newToken })
    expect(synapse.pushers()).toEqual([])
    const afterRemoval = await post(`${third.url}/_matrix/push/v1/notify`, {
      notification: { event_id: '$e2e-4', devices: [{ app_id: APP_ID, pushkey: newToken }] },
    })
    expect(await afterRemoval.json()).toEqual({ rejected: [newToken] })
    expect(await third.stop()).toBe(0)
  })

  test('changes made by another process on the same database reach the next notification (tokens delete, a second instance)', async () => {
    const shared = { ...env, PUSH_TOKEN_DB_PATH: join(dir, 'shared', 'tokens.db') }
    const a = await startBinary(shared)
    running.push(a)
    const b = await startBinary(shared)
    running.push(b)
    const selector = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA:00000001'
    const token = 'token-of-another-process'
    const notify = (eventId: string) =>
      post(`${a.url}/_matrix/push/v1/notify`, { notification: { event_id: eventId, room_id: '!room:example.org', counts: { unread: 1 }, devices: [{ app_id: APP_ID, pushkey: token }] } }).then((r) => r.json())

    // Unknown to A; then reported to B: A's next notification finds it.
    expect(await notify('$other-1')).toEqual({ rejected: [token] })
    const report = await post(`${b.url}/api/client/push_token_report`, { selector, token_msgs: token, app_id_msgs: APP_ID, username: 'alice', password: 'alice-password' })
    expect(report.status).toBe(200)
    expect(await notify('$other-2')).toEqual({ rejected: [] })
    expect(await notify('$other-3')).toEqual({ rejected: [] })
    expect(pnm.bodies().filter((p) => p.DeviceToken === token).map((p) => p.Id)).toEqual(['$other-2', '$other-3'])

    // Deleted by the operator's command while A runs: A's next notification rejects the pushkey.
    const deleted = await runCommand(['tokens', 'delete', selector], shared)
    expect(deleted.exitCode).toBe(0)
    expect(await notify('$other-4')).toEqual({ rejected: [token] })
    expect(pnm.bodies().filter((p) => p.DeviceToken === token)).toHaveLength(2)
    expect(await a.stop()).toBe(0)
    expect(await b.stop()).toBe(0)
  })
})
