/**
 * The database failing under the service: locked by another process, full, read-only. A report
 * that cannot be stored is answered 503, never 200; a notification is never rejected because of a
 * database error; the service keeps answering and recovers once the fault ends.
 */
import { Database } from 'bun:sqlite'
import { afterAll, afterEach, describe, expect, test } from 'bun:test'
import { chmodSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { openSqliteStore } from '../../src/store/sqlite.ts'
import type { TokenStore } from '../../src/store/types.ts'
import { startFakePnm } from '../fakes/pnm.ts'
import { APP_ID, SELECTOR, TOKEN, startHarness, tempDir, type Harness } from '../harness.ts'
import { removeCreatedDirs, fileModesApply, giveToServiceUser, notification, post, spawnService, stateDir, type Proc } from './support.ts'

let h: Harness | undefined
const cleanups: Array<() => unknown> = []
afterAll(() => removeCreatedDirs())
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
  await h?.close()
  h = undefined
})

const selector = (n: number) => `${n.toString(16).toUpperCase().padStart(40, '0')}:7C3A0D14`
const noAuth = { AUTH_MODE: 'none' }
const reportOf = (n: number, token = `${TOKEN}-${n}`) => ({ selector: selector(n), token_msgs: token, app_id_msgs: APP_ID, username: 'alice' })

/** The store's own connection, for faults only a connection can cause (max_page_count). */
function openStoreKeepingConnection(path: string, busyTimeoutMs: number): { store: TokenStore; db: Database } {
  const prepare = Database.prototype.prepare
  let db: Database | undefined
  Database.prototype.prepare = function (this: Database, ...args: Parameters<typeof prepare>) {
    db ??= this
    return prepare.apply(this, args)
  } as typeof prepare
  try {
    return { store: openSqliteStore(path, { busyTimeoutMs }), db: db! }
  } finally {
    Database.prototype.prepare = prepare
  }
}

async function harnessOnFile(busyTimeoutMs = 50, storeBusyWaitMs = 300) {
  const dir = tempDir()
  cleanups.push(() => require('node:fs').rmSync(dir, { recursive: true, force: true }))
  const path = join(dir, 'tokens.db')
  const { store, db } = openStoreKeepingConnection(path, busyTimeoutMs)
  h = await startHarness({ env: { ...noAuth, PUSH_TOKEN_DB_PATH: path }, compose: { store, storeBusyWaitMs } })
  return { h, path, db }
}

describe('locked by another process', () => {
  test('reports get 503 with Retry-After, notifications are still delivered, and it recovers', async () => {
    const { h, path } = await harnessOnFile()
    expect((await h.report(reportOf(1))).status).toBe(200)
    const before = await h.store.listRegistrations()

    // Another process holds the write lock longer than the busy timeout.
    const other = new Database(path)
    cleanups.push(() => other.close())
    other.run('BEGIN IMMEDIATE')
    const refused = await h.report(reportOf(2))
    expect(refused.status).toBe(503)
    expect(refused.headers.get('retry-after')).toBe('5')
    expect(refused.json.error).toMatch(/token store/)
    const notified = await h.notify(notification('$while-locked', APP_ID, `${TOKEN}-1`))
    expect(notified.status).toBe(200)
    expect(notified.json).toEqual({ rejected: [] })
    expect((await h.request('GET', '/health')).status).toBe(200)

    other.run('ROLLBACK')
    expect(await h.store.listRegistrations()).toEqual(before)
    expect((await h.report(reportOf(2))).status).toBe(200)
    expect((await h.store.getRegistration(selector(2)))?.tokenMsgs).toBe(`${TOKEN}-2`)
  })

  test('a report waits for a short lock without freezing the process, then is stored', async () => {
    const { h, path } = await harnessOnFile(50, 10_000)
    await h.report(reportOf(1))
    const other = new Database(path)
    cleanups.push(() => other.close())
    other.run('BEGIN IMMEDIATE')
    let reportDone = false
    const waiting = h.report(reportOf(2)).finally(() => {
      reportDone = true
    })
    await Bun.sleep(100)
    // Meanwhile everything else is answered: bun:sqlite is synchronous, so a long busy_timeout
    // would have held these until the report gave up.
    expect((await h.request('GET', '/health')).status).toBe(200)
    expect((await h.notify(notification('$meanwhile', APP_ID, `${TOKEN}-1`))).json).toEqual({ rejected: [] })
    expect(reportDone).toBe(false)
    other.run('COMMIT')
    expect((await waiting).status).toBe(200)
    expect((await h.store.getRegistration(selector(2)))?.tokenMsgs).toBe(`${TOKEN}-2`)
  })

  test('the service waits for locks in short steps (SERVICE_BUSY_TIMEOUT_MS)', async () => {
    const { SERVICE_BUSY_TIMEOUT_MS } = await import('../../src/compose.ts')
    expect(SERVICE_BUSY_TIMEOUT_MS).toBeLessThanOrEqual(100)
  })

  test('a token the PNM dropped is still rejected when it cannot be forgotten; nothing else is', async () => {
    const { h, path } = await harnessOnFile()
    await h.report(reportOf(1))
    const other = new Database(path)
    cleanups.push(() => other.close())
    other.run('BEGIN IMMEDIATE')
    h.pnm.forget(`${TOKEN}-1`)
    const res = await h.notify(notification('$gone', APP_ID, `${TOKEN}-1`))
    expect(res.json).toEqual({ rejected: [`${TOKEN}-1`] })
    expect(h.logs.parsed().some((l) => l.msg === 'could not forget the invalid token')).toBe(true)
    other.run('ROLLBACK')
  })
})

describe('unusable store', () => {
  test('a notification is answered 503 (Synapse retries), never with a rejection', async () => {
    // A closed connection fails every read, as a store that cannot be read at all would.
    h = await startHarness()
    await h.report({ selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, username: 'alice', password: 'alice-password' })
    await h.store.close()
    const res = await h.notify(notification('$db-gone', APP_ID, TOKEN))
    expect(res.status).toBe(503)
    expect(res.json.errcode).toBe('M_UNAVAILABLE')
    expect(h.pnm.requests).toHaveLength(0)
  })
})

describe('disk full', () => {
  test('reports that do not fit get 503 and are not stored; the ones answered 200 are; it recovers', async () => {
    const { h, db } = await harnessOnFile()
    expect((await h.report(reportOf(0))).status).toBe(200)
    const pages = (db.query('PRAGMA page_count').get() as { page_count: number }).page_count
    db.run(`PRAGMA max_page_count = ${pages}`)

    const ok: number[] = []
    let refused: { n: number; status: number; error: string } | undefined
    for (let n = 1; n < 400 && !refused; n++) {
      const res = await h.report(reportOf(n, `${'x'.repeat(400)}-${n}`))
      if (res.status === 200) ok.push(n)
      else refused = { n, status: res.status, error: res.json?.error }
    }
    expect(refused?.status).toBe(503)
    expect(h.logs.parsed().some((l) => /full/.test(l.err ?? ''))).toBe(true)
    expect(await h.store.getRegistration(selector(refused!.n))).toBeUndefined()
    for (const n of ok) expect(await h.store.getRegistration(selector(n))).toBeDefined()
    // Reads go on: the stored token still gets its notification.
    expect((await h.notify(notification('$full', APP_ID, `${TOKEN}-0`))).json).toEqual({ rejected: [] })

    db.run('PRAGMA max_page_count = 1073741823')
    expect((await h.report(reportOf(refused!.n))).status).toBe(200)
    expect(await h.store.getRegistration(selector(refused!.n))).toBeDefined()
  })
})

describe('read-only database file (the executable)', () => {
  let service: Proc | undefined
  afterEach(async () => {
    service?.proc.kill('SIGKILL')
    await service?.exited
    service = undefined
  })

  test.skipIf(!fileModesApply)('starts, delivers notifications, refuses reports with 503, and recovers once the file is writable', async () => {
    const pnm = startFakePnm()
    cleanups.push(() => pnm.stop())
    const dir = stateDir()
    const path = join(dir, 'push_tokens.db')
    const seed = openSqliteStore(path)
    seed.saveRegistration({ selector: SELECTOR, matrixUserId: '@alice:example.org', tokenMsgs: TOKEN, appIdMsgs: APP_ID }, Date.now(), () => [])
    seed.close()
    giveToServiceUser(path)
    chmodSync(path, 0o400)

    service = await spawnService({ PUSH_TOKEN_DB_PATH: path, PNM_URL: pnm.url, AUTH_MODE: 'none', MATRIX_SERVER_NAME: 'example.org' })
    expect((await fetch(`${service.url}/ready`)).status).toBe(503)
    const refused = await post(`${service.url}/api/client/push_token_report`, reportOf(7))
    expect(refused.status).toBe(503)
    const notified = await post(`${service.url}/_matrix/push/v1/notify`, { notification: notification('$ro', APP_ID, TOKEN) })
    expect(notified.status).toBe(200)
    expect(notified.json).toEqual({ rejected: [] })
    expect(pnm.requests).toHaveLength(1)

    // The operator fixes the mode of the file; the running service picks it up without a restart.
    chmodSync(path, 0o600)
    const stored = await post(`${service.url}/api/client/push_token_report`, reportOf(7))
    expect(stored.status).toBe(200)
    expect((await fetch(`${service.url}/ready`)).status).toBe(200)
    expect(service.proc.exitCode).toBeNull()
    service.proc.kill('SIGTERM')
    expect(await service.exited).toBe(0)
    service = undefined
    const check = new Database(path, { readonly: true })
    cleanups.push(() => check.close())
    expect(check.query('SELECT count(*) AS n FROM registrations WHERE selector = ?').get(selector(7))).toEqual({ n: 1 })
    expect(existsSync(path)).toBe(true)
  })
})
