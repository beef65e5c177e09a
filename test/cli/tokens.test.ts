/**
 * `tokens list | show | delete` and `pushers sync` on the built executable, against the fake
 * Synapse, on a database seeded the way the service writes it.
 */
import { afterAll, beforeEach, describe, expect, test } from 'bun:test'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { planPusherCalls } from '../../src/report/plan.ts'
import { tokenHash } from '../../src/secrets.ts'
import { openSqliteStore } from '../../src/store/sqlite.ts'
import { startFakeSynapse } from '../fakes/synapse.ts'
import { APP_ID, SELECTOR, TOKEN, tempDir } from '../harness.ts'
import { runCommand } from './run.ts'

const synapse = startFakeSynapse()
const dir = tempDir('m2a-tokens-')
afterAll(() => {
  synapse.stop()
  rmSync(dir, { recursive: true, force: true })
})

const BOB_SELECTOR = 'AAAA0E0E6E553673C54F29105A0647204C416A2A:00000001'
const BOB_TOKEN = 'bob-device-token-0123456789abcdef'
const CALLS_TOKEN = 'voip-token-of-alice-fedcba9876543210'
const NO_TOKEN_SELECTOR = 'BBBB0E0E6E553673C54F29105A0647204C416A2A:00000002'
const SECRETS = [TOKEN, BOB_TOKEN, CALLS_TOKEN, synapse.asToken]

let dbPath = ''
const env = (extra: Record<string, string> = {}) => ({
  MATRIX_HOMESERVER_URL: synapse.url,
  MATRIX_AS_TOKEN: synapse.asToken,
  MATRIX_SERVER_NAME: synapse.serverName,
  PROXY_URL: 'https://push.example.org',
  PUSH_TOKEN_DB_PATH: dbPath,
  MATRIX_TIMEOUT_MS: '2000',
  ...extra,
})

/** A fresh database with alice (messages and calls tokens), bob, and an account without a token; no pusher calls queued. */
async function seed() {
  dbPath = join(mkdtempSync(join(dir, 'db-')), 'push_tokens.db')
  const store = openSqliteStore(dbPath)
  const none = planPusherCalls(false)
  await store.saveRegistration(
    { selector: SELECTOR, username: 'alice', matrixUserId: '@alice:example.org', tokenMsgs: TOKEN, appIdMsgs: APP_ID, tokenCalls: CALLS_TOKEN, appIdCalls: `${APP_ID}.voip` },
    1_700_000_000_000,
    none,
  )
  await store.saveRegistration({ selector: BOB_SELECTOR, username: 'bob', matrixUserId: '@bob:example.org', tokenMsgs: BOB_TOKEN, appIdMsgs: APP_ID }, 1_700_000_100_000, none)
  await store.saveRegistration({ selector: NO_TOKEN_SELECTOR, username: 'alice', matrixUserId: '@alice:example.org' }, 1_700_000_200_000, none)
  await store.close()
}

async function withStore<T>(fn: (store: ReturnType<typeof openSqliteStore>) => Promise<T>): Promise<T> {
  const store = openSqliteStore(dbPath)
  try {
    return await fn(store)
  } finally {
    await store.close()
  }
}

const noSecrets = (r: { stdout: string; stderr: string }) => {
  for (const secret of SECRETS) expect(r.stdout + r.stderr).not.toContain(secret)
}

beforeEach(async () => {
  await seed()
  synapse.override(undefined)
})

describe('tokens', () => {
  test('list: every registration, tokens as the short hashes the logs use, never the tokens', async () => {
    const r = await runCommand(['tokens', 'list'], env())
    expect(r.exitCode).toBe(0)
    noSecrets(r)
    const alice = r.stdout.split('\n').find((l) => l.startsWith(SELECTOR))!
    expect(alice).toContain('@alice:example.org')
    expect(alice).toContain(tokenHash(TOKEN))
    expect(alice).toContain(tokenHash(CALLS_TOKEN))
    expect(alice).toContain('2023-11-14T22:13:20Z')
    expect(r.stdout).toContain(BOB_SELECTOR)
    expect(r.stdout).toContain(NO_TOKEN_SELECTOR)
    expect(r.stdout).toContain('3 registrations')

    const json = await runCommand(['tokens', 'list', '--json'], env())
    expect(json.exitCode).toBe(0)
    noSecrets(json)
    const rows = JSON.parse(json.stdout) as { selector: string; token_msgs_hash: string | null; token_calls_hash: string | null }[]
    expect(rows.map((row) => row.selector).sort()).toEqual([SELECTOR, BOB_SELECTOR, NO_TOKEN_SELECTOR].sort())
    expect(rows.find((row) => row.selector === SELECTOR)!.token_msgs_hash).toBe(tokenHash(TOKEN))
    expect(rows.find((row) => row.selector === NO_TOKEN_SELECTOR)!.token_msgs_hash).toBeNull()
  })

  test('show: one registration; an unknown selector is exit 1', async () => {
    const r = await runCommand(['tokens', 'show', SELECTOR], env())
    expect(r.exitCode).toBe(0)
    noSecrets(r)
    expect(r.stdout).toContain(`${APP_ID} token ${tokenHash(TOKEN)}`)
    expect(r.stdout).toContain('@alice:example.org')
    const json = JSON.parse((await runCommand(['tokens', 'show', SELECTOR, '--json'], env())).stdout) as { pending_pusher_calls: unknown[] }
    expect(json.pending_pusher_calls).toEqual([])

    const unknown = await runCommand(['tokens', 'show', 'NOPE:00000000'], env())
    expect(unknown.exitCode).toBe(1)
    expect(unknown.stderr).toContain('no registration with selector NOPE:00000000')
  })

  test('a missing database is exit 1 and is not created', async () => {
    const missing = join(dir, 'nowhere', 'push_tokens.db')
    for (const args of [['tokens', 'list'], ['tokens', 'show', SELECTOR], ['tokens', 'delete', SELECTOR], ['pushers', 'sync']]) {
      const r = await runCommand(args, env({ PUSH_TOKEN_DB_PATH: missing }))
      expect({ args, exitCode: r.exitCode }).toEqual({ args, exitCode: 1 })
      expect(r.stderr).toContain('no token database')
    }
    expect(existsSync(join(dir, 'nowhere'))).toBe(false)
  })

  test('the database defaults to $STATE_DIRECTORY/push_tokens.db, as under systemd', async () => {
    const r = await runCommand(['tokens', 'list'], { ...env(), PUSH_TOKEN_DB_PATH: '', STATE_DIRECTORY: join(dbPath, '..') })
    expect(r.exitCode).toBe(0)
    expect(r.stdout).toContain('3 registrations')
  })

  test('delete: removes the row and the pusher on Synapse (kind null, as the app id and pushkey)', async () => {
    expect((await runCommand(['pushers', 'sync'], env())).exitCode).toBe(0)
    expect(synapse.pushers().some((p) => p.pushkey === TOKEN)).toBe(true)
    const before = synapse.pusherCalls().length

    const r = await runCommand(['tokens', 'delete', SELECTOR], env())
    expect(r.stderr).toBe('')
    expect(r.exitCode).toBe(0)
    noSecrets(r)
    expect(r.stdout).toContain(`deleted ${SELECTOR}`)
    expect(r.stdout).toContain(`pusher ${APP_ID} token ${tokenHash(TOKEN)} of @alice:example.org deleted on the homeserver`)
    const calls = synapse.pusherCalls().slice(before)
    expect(calls).toHaveLength(1)
    expect(calls[0]!.body).toEqual({ kind: null, app_id: APP_ID, pushkey: TOKEN })
    expect(calls[0]!.query.user_id).toBe('@alice:example.org')
    expect(synapse.pushers().some((p) => p.pushkey === TOKEN)).toBe(false)
    expect(synapse.pushers().some((p) => p.pushkey === BOB_TOKEN)).toBe(true)
    await withStore(async (store) => {
      expect(await store.getRegistration(SELECTOR)).toBeUndefined()
      expect(await store.pendingJobs()).toEqual([])
    })
    expect((await runCommand(['tokens', 'delete', SELECTOR], env())).exitCode).toBe(1)
  })

  test('delete refused by the homeserver: exit 1 with the reason, the deletion stays queued for the service', async () => {
    synapse.override((req) =>
      req.path === '/_matrix/client/v3/pushers/set'
        ? Response.json({ errcode: 'M_FORBIDDEN', error: 'Application service cannot masquerade as this user (@alice:example.org).' }, { status: 403 })
        : undefined,
    )
    const r = await runCommand(['tokens', 'delete', SELECTOR], env())
    expect(r.exitCode).toBe(1)
    noSecrets(r)
    expect(r.stderr).toContain('cannot masquerade')
    expect(r.stderr).toContain('users namespace')
    expect(r.stderr).toContain('stays queued')
    await withStore(async (store) => {
      expect(await store.getRegistration(SELECTOR)).toBeUndefined()
      const jobs = await store.pendingJobs()
      expect(jobs.map((j) => [j.action, j.selector, j.pushkey, j.attempts])).toEqual([['delete', SELECTOR, TOKEN, 1]])
    })
    // `show` tells the operator what is still owed for a selector that is gone.
    const show = await runCommand(['tokens', 'show', SELECTOR], env())
    expect(show.stderr).toContain('1 pusher calls still queued')
  })

  test('delete with PROXY_URL set but no appservice token changes nothing and exits 2', async () => {
    const r = await runCommand(['tokens', 'delete', SELECTOR], env({ MATRIX_AS_TOKEN: '' }))
    expect(r.exitCode).toBe(2)
    expect(r.stderr).toContain('MATRIX_AS_TOKEN is not set')
    await withStore(async (store) => expect(await store.getRegistration(SELECTOR)).toBeDefined())
  })
})

describe('pushers sync', () => {
  test('registers every stored messages token again, as a token report would, and keeps the rows as they were', async () => {
    const before = synapse.pusherCalls().length
    const rowsBefore = await withStore((store) => store.listRegistrations())
    const r = await runCommand(['pushers', 'sync', '--verbose'], env())
    expect(r.stderr).toBe('')
    expect(r.exitCode).toBe(0)
    noSecrets(r)
    expect(r.stdout).toContain('2 pushers registered on the homeserver')
    expect(r.stdout).toContain('1 accounts without a messages token')
    const calls = synapse.pusherCalls().slice(before)
    expect(calls.map((c) => [c.query.user_id, c.body.pushkey]).sort()).toEqual([
      ['@alice:example.org', TOKEN],
      ['@bob:example.org', BOB_TOKEN],
    ])
    for (const call of calls) {
      expect(call.body).toMatchObject({ kind: 'http', app_id: APP_ID, append: true, data: { url: 'https://push.example.org/_matrix/push/v1/notify', format: 'event_id_only' } })
      expect(call.body.data.selector).toBe(call.query.user_id === '@alice:example.org' ? SELECTOR : BOB_SELECTOR)
    }
    await withStore(async (store) => {
      expect(await store.listRegistrations()).toEqual(rowsBefore)
      expect(await store.pendingJobs()).toEqual([])
    })
  })

  test('a refusal for one account: exit 1, that account named with the reason, the others registered, the refused one queued', async () => {
    synapse.override((req) =>
      req.path === '/_matrix/client/v3/pushers/set' && req.query.user_id === '@bob:example.org'
        ? Response.json({ errcode: 'M_FORBIDDEN', error: 'Application service has not registered this user (@bob:example.org)' }, { status: 403 })
        : undefined,
    )
    const r = await runCommand(['pushers', 'sync'], env())
    expect(r.exitCode).toBe(1)
    noSecrets(r)
    expect(r.stdout).toMatch(new RegExp(`FAIL  ${BOB_SELECTOR} @bob:example.org .*has not registered this user`))
    expect(r.stdout).toContain('1 pushers registered on the homeserver, 1 failed')
    expect(synapse.pushers().filter((p) => p.pushkey === TOKEN)).toHaveLength(1)
    await withStore(async (store) => expect((await store.pendingJobs()).map((j) => [j.selector, j.action])).toEqual([[BOB_SELECTOR, 'set']]))
    // `check` reports the call that keeps failing.
    const check = await runCommand(['check'], env({ PNM_URL: 'http://127.0.0.1:1/pnm2/send' }))
    expect(check.exitCode).toBe(1)
    expect(check.stdout).toMatch(/FAIL .*1 pusher calls keep failing.*@bob:example\.org/)
  })

  test('an unreachable homeserver: exit 1, every account queued for the service', async () => {
    const r = await runCommand(['pushers', 'sync'], env({ MATRIX_HOMESERVER_URL: 'http://127.0.0.1:9' }))
    expect(r.exitCode).toBe(1)
    expect(r.stdout).toContain('0 pushers registered on the homeserver, 2 failed')
    await withStore(async (store) => expect(await store.pendingJobs()).toHaveLength(2))
  })

  test('without PROXY_URL there is nothing to register: exit 2', async () => {
    const r = await runCommand(['pushers', 'sync'], env({ PROXY_URL: '' }))
    expect(r.exitCode).toBe(2)
    expect(r.stderr).toContain('PROXY_URL is not set')
  })
})
