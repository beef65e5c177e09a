/**
 * Load: a bounded number of PNM requests in flight (PNM_MAX_INFLIGHT) with a fast 503 past it, so
 * memory and sockets stay bounded while the PNM is slow; concurrent reports for one account end
 * in one row and one pusher; two processes share one SQLite file.
 */
import { Database } from 'bun:sqlite'
import { afterAll, afterEach, describe, expect, test } from 'bun:test'
import { readdirSync, readFileSync, readlinkSync } from 'node:fs'
import { join } from 'node:path'
import { startFakePnm } from '../fakes/pnm.ts'
import { APP_ID, SELECTOR, TOKEN, eventually, startHarness, type Harness } from '../harness.ts'
import { removeCreatedDirs, notification, post, spawnService, stateDir, type Proc } from './support.ts'

let h: Harness | undefined
const cleanups: Array<() => unknown> = []
afterAll(() => removeCreatedDirs())
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
  await h?.close()
  h = undefined
})

const selector = (n: number) => `${n.toString(16).toUpperCase().padStart(40, '0')}:7C3A0D14`

async function kill(service: Proc) {
  service.proc.kill('SIGKILL')
  await service.exited
}

describe('PNM_MAX_INFLIGHT', () => {
  test('past the cap, notifies are answered 503 at once while the PNM hangs; /health still answers', async () => {
    h = await startHarness({ env: { PNM_MAX_INFLIGHT: '4', PNM_TIMEOUT_MS: '60000' } })
    await h.report({ selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, username: 'alice', password: 'alice-password' })
    h.pnm.behave(TOKEN, { kind: 'hang' })
    const settled: Array<{ status: number; headers: Headers; json: any }> = []
    const all = Array.from({ length: 40 }, (_, i) => h!.notify(notification(`$burst${i}`, APP_ID, TOKEN)).then((r) => (settled.push(r), r)))
    await eventually(() => settled.length === 36)
    // The four admitted requests may still be on their way to the PNM when the refusals settle.
    await eventually(() => h!.pnm.requests.length >= 4)
    await Bun.sleep(50)
    expect(h.pnm.requests).toHaveLength(4)
    for (const r of settled) {
      expect(r.status).toBe(503)
      expect(r.headers.get('retry-after')).toBe('1')
      expect(r.json.errcode).toBe('M_UNAVAILABLE')
    }
    expect((await h.request('GET', '/health')).status).toBe(200)
    h.pnm.release()
    const results = await Promise.all(all)
    expect(results.filter((r) => r.status === 200)).toHaveLength(4)
  })
})

function rssKiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1])
}

function openSockets(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).filter((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')
    } catch {
      return false
    }
  }).length
}

describe('a burst against a PNM that never answers (the executable)', () => {
  test('memory and sockets stay bounded and /health answers', async () => {
    const MAX_INFLIGHT = 8
    const pnm = startFakePnm()
    cleanups.push(() => pnm.stop())
    pnm.behaveByDefault({ kind: 'hang' })
    const dir = stateDir()
    const service = await spawnService({
      PUSH_TOKEN_DB_PATH: join(dir, 'push_tokens.db'),
      PNM_URL: pnm.url,
      PNM_MAX_INFLIGHT: String(MAX_INFLIGHT),
      PNM_TIMEOUT_MS: '60000',
      AUTH_MODE: 'none',
      MATRIX_SERVER_NAME: 'example.org',
      // One user reports 100 accounts here, past the default caps on purpose.
      MAX_DEVICES_PER_USER: '1000',
      REPORTS_PER_MINUTE: '1000',
    })
    cleanups.push(() => kill(service))
    expect((await post(`${service.url}/api/client/push_token_report`, { selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, username: 'alice' })).status).toBe(200)

    const send = (i: number) =>
      fetch(`${service.url}/_matrix/push/v1/notify`, {
        method: 'POST',
        // Synapse's own connections come and go; closing them keeps the count about the proxy.
        headers: { 'content-type': 'application/json', connection: 'close' },
        body: JSON.stringify({ notification: notification(`$load${i}`, APP_ID, TOKEN) }),
      }).then(async (r) => (await r.arrayBuffer(), r.status))
    // Warm up, so that the first-use allocations do not count as growth. MAX_INFLIGHT of these
    // stay with the PNM until the end (they are cut when the service is killed).
    const warm: number[] = []
    for (let i = 0; i < 200; i++) void send(i).then((s) => warm.push(s), () => {})
    await eventually(() => warm.length === 200 - MAX_INFLIGHT, 10_000)
    expect(warm.every((s) => s === 503)).toBe(true)
    const before = rssKiB(service.pid)

    const statuses: number[] = []
    for (let round = 0; round < 10; round++) {
      statuses.push(...(await Promise.all(Array.from({ length: 200 }, (_, i) => send(1000 + round * 200 + i)))))
    }
    expect(statuses.every((s) => s === 503)).toBe(true)
    expect(pnm.requests).toHaveLength(MAX_INFLIGHT)
    const health = await fetch(`${service.url}/health`, { headers: { connection: 'close' } })
    expect(health.status).toBe(200)

    const grownKiB = rssKiB(service.pid) - before
    const sockets = openSockets(service.pid)
    console.log(`burst of 2000 notifies: RSS grew ${grownKiB} KiB, ${sockets} sockets open`)
    // Stated bounds: under 64 MiB of growth for 2,000 refused notifies, and no more sockets than
    // the PNM requests allowed in flight, their callers' connections and a few listeners.
    expect(grownKiB).toBeLessThan(64 * 1024)
    expect(sockets).toBeLessThanOrEqual(2 * MAX_INFLIGHT + 8)
  }, 30_000)
})

describe('concurrent reports for one account', () => {
  test('end in one consistent row and one pusher on Synapse', async () => {
    h = await startHarness()
    const tokens = Array.from({ length: 12 }, (_, i) => `${TOKEN}-${i}`)
    const results = await Promise.all(
      tokens.map((token) => h!.report({ selector: SELECTOR, token_msgs: token, app_id_msgs: APP_ID, username: 'alice', password: 'alice-password' })),
    )
    expect(results.map((r) => r.status)).toEqual(tokens.map(() => 200))
    await eventually(async () => (await h!.store.pendingJobs()).length === 0, 5000)
    const rows = await h.store.listRegistrations()
    expect(rows).toHaveLength(1)
    const pushers = h.synapse.pushers()
    expect(pushers).toHaveLength(1)
    expect(pushers[0]!.pushkey).toBe(rows[0]!.tokenMsgs!)
    expect(pushers[0]!.user_id).toBe('@alice:example.org')
  })
})

describe('two processes on one SQLite file (the executable)', () => {
  test('both store reports concurrently, and each serves what the other stored', async () => {
    const pnm = startFakePnm()
    cleanups.push(() => pnm.stop())
    const dir = stateDir()
    const env = {
      PUSH_TOKEN_DB_PATH: join(dir, 'push_tokens.db'),
      PNM_URL: pnm.url,
      AUTH_MODE: 'none',
      MATRIX_SERVER_NAME: 'example.org',
      // One user reports 100 accounts here, past the default caps on purpose.
      MAX_DEVICES_PER_USER: '1000',
      REPORTS_PER_MINUTE: '1000',
    }
    const a = await spawnService(env)
    cleanups.push(() => kill(a))
    const b = await spawnService(env)
    cleanups.push(() => kill(b))

    const N = 120
    const results = await Promise.all(
      Array.from({ length: N }, (_, n) =>
        post(`${(n % 2 ? a : b).url}/api/client/push_token_report`, {
          selector: selector(n % 100),
          token_msgs: `${TOKEN}-${n}`,
          app_id_msgs: APP_ID,
          username: 'alice',
        }),
      ),
    )
    expect(results.map((r) => r.status)).toEqual(results.map(() => 200))

    const db = new Database(env.PUSH_TOKEN_DB_PATH, { readonly: true })
    cleanups.push(() => db.close())
    expect(db.query('PRAGMA journal_mode').get()).toEqual({ journal_mode: 'wal' })
    expect(db.query('SELECT count(*) AS n FROM registrations').get()).toEqual({ n: 100 })

    // Stored through A, delivered through B.
    const notified = await post(`${b.url}/_matrix/push/v1/notify`, { notification: notification('$shared', APP_ID, `${TOKEN}-51`) })
    expect(notified.json).toEqual({ rejected: [] })
    expect(pnm.bodies().map((x) => x.DeviceToken)).toEqual([`${TOKEN}-51`])
  })
})
