/**
 * Shutdown and crash, on the built executable: SIGTERM stops accepting, lets the request in flight
 * finish, closes the database and exits 0; kill -9 in the middle of a burst of reports loses none
 * that was answered 200.
 */
import { Database } from 'bun:sqlite'
import { afterAll, afterEach, describe, expect, test } from 'bun:test'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { startFakePnm } from '../fakes/pnm.ts'
import { APP_ID, SELECTOR, TOKEN } from '../harness.ts'
import { removeCreatedDirs, notification, post, spawnService, stateDir, type Proc } from './support.ts'

const cleanups: Array<() => unknown> = []
afterAll(() => removeCreatedDirs())
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

const selector = (n: number) => `${n.toString(16).toUpperCase().padStart(40, '0')}:7C3A0D14`

function killOnCleanup(service: Proc) {
  cleanups.push(async () => {
    if (service.proc.exitCode === null) service.proc.kill('SIGKILL')
    await service.exited
  })
}

describe('SIGTERM', () => {
  test('the request in flight still gets its answer; new connections are refused; the database is closed; exit 0', async () => {
    const pnm = startFakePnm()
    cleanups.push(() => pnm.stop())
    pnm.behave(TOKEN, { kind: 'slow', ms: 1500 })
    const dir = stateDir()
    const path = join(dir, 'push_tokens.db')
    const service = await spawnService({ PUSH_TOKEN_DB_PATH: path, PNM_URL: pnm.url, AUTH_MODE: 'none', MATRIX_SERVER_NAME: 'example.org' })
    killOnCleanup(service)
    const report = { selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, username: 'alice' }
    expect((await post(`${service.url}/api/client/push_token_report`, report)).status).toBe(200)

    const inFlight = post(`${service.url}/_matrix/push/v1/notify`, { notification: notification('$term', APP_ID, TOKEN) })
    while (pnm.requests.length === 0) await Bun.sleep(5)
    service.proc.kill('SIGTERM')
    while (!service.lines.some((l) => l.includes('shutting down'))) await Bun.sleep(5)

    // The listener is closed while the slow request is still with the PNM.
    let refused = false
    try {
      await fetch(`${service.url}/health`, { headers: { connection: 'close' } })
    } catch {
      refused = true
    }
    expect(refused).toBe(true)

    const answer = await inFlight
    expect(answer.status).toBe(200)
    expect(answer.json).toEqual({ rejected: [] })
    expect(await service.exited).toBe(0)
    expect(service.lines.some((l) => l.includes('"msg":"stopped"'))).toBe(true)
    // A closed database has merged its write-ahead log: nothing is left beside the file.
    expect(existsSync(`${path}-wal`)).toBe(false)
    const db = new Database(path, { readonly: true })
    cleanups.push(() => db.close())
    expect(db.query('SELECT token_msgs FROM registrations WHERE selector = ?').get(SELECTOR)).toEqual({ token_msgs: TOKEN })
  }, 20_000)

  test('an idle service exits 0 at once', async () => {
    const dir = stateDir()
    const service = await spawnService({ PUSH_TOKEN_DB_PATH: join(dir, 'push_tokens.db'), AUTH_MODE: 'none', MATRIX_SERVER_NAME: 'example.org' })
    killOnCleanup(service)
    // A keep-alive connection left open by a client must not hold the exit for the grace period.
    expect((await fetch(`${service.url}/health`)).status).toBe(200)
    service.proc.kill('SIGTERM')
    expect(await service.exited).toBe(0)
  }, 20_000)
})

describe('kill -9 during a burst of reports', () => {
  test('after a restart, every report that got a 200 is in the database', async () => {
    const dir = stateDir()
    const path = join(dir, 'push_tokens.db')
    // One user reports hundreds of accounts here, past the per-user caps on purpose.
    const env = { PUSH_TOKEN_DB_PATH: path, AUTH_MODE: 'none', MATRIX_SERVER_NAME: 'example.org', MAX_DEVICES_PER_USER: '100000', REPORTS_PER_MINUTE: '100000' }
    const service = await spawnService(env)
    killOnCleanup(service)

    const acknowledged = new Map<string, string>()
    let next = 0
    let dead = false
    const worker = async () => {
      while (!dead) {
        const n = next++
        const token = `${TOKEN}-${n}`
        try {
          const res = await post(`${service.url}/api/client/push_token_report`, { selector: selector(n), token_msgs: token, app_id_msgs: APP_ID, username: 'alice' })
          if (res.status === 200) acknowledged.set(selector(n), token)
        } catch {
          return
        }
      }
    }
    const workers = Array.from({ length: 16 }, worker)
    while (acknowledged.size < 300) await Bun.sleep(2)
    service.proc.kill('SIGKILL')
    dead = true
    await Promise.all(workers)
    expect(await service.exited).not.toBe(0)

    const restarted = await spawnService(env)
    killOnCleanup(restarted)
    expect((await fetch(`${restarted.url}/ready`)).status).toBe(200)
    const db = new Database(path, { readonly: true })
    cleanups.push(() => db.close())
    const stored = new Map(
      (db.query('SELECT selector, token_msgs FROM registrations').all() as Array<{ selector: string; token_msgs: string }>).map((r) => [r.selector, r.token_msgs]),
    )
    const lost = [...acknowledged].filter(([s, token]) => stored.get(s) !== token)
    expect(acknowledged.size).toBeGreaterThanOrEqual(300)
    expect(lost).toEqual([])
  }, 30_000)
})
