/**
 * Moving a NethVoice installation from the Go proxy, on the built executable: its
 * env file as it is, its push_tokens database, its pushers on Synapse; the fake CTI checks the
 * passwords.
 */
import { Database } from 'bun:sqlite'
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { runCommand } from '../cli/run.ts'
import { startFakeCti, type FakeCti } from '../fakes/cti.ts'
import type { FakePnm } from '../fakes/pnm.ts'
import type { FakeSynapse } from '../fakes/synapse.ts'
import { APP_ID } from '../harness.ts'
import { binaryPath, startBinary, startExecutableFakes, stopExecutableFakes, type RunningBinary } from './binary.ts'

const G_SELECTOR = '6A6A0E0E6E553673C54F29105A0647204C416A2A:0000A001'
const M_SELECTOR = '6B6B0E0E6E553673C54F29105A0647204C416A2A:0000A002'
const E_SELECTOR = '6C6C0E0E6E553673C54F29105A0647204C416A2A:0000A003'
const G_TOKEN = 'go-era-token-of-giacomo-0123456789'
const M_TOKEN = 'go-era-token-of-mario-9876543210'
const PROXY_URL = 'https://nethvoice.example.org'

let synapse: FakeSynapse
let pnm: FakePnm
let cti: FakeCti
let dir: string
let dbPath: string
let envFile: string
const running: RunningBinary[] = []

/** The Go proxy's schema and rows, as db/push_tokens.go wrote them. */
function goDatabase(path: string) {
  const db = new Database(path, { create: true })
  db.run(`CREATE TABLE IF NOT EXISTS push_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    selector TEXT NOT NULL UNIQUE,
    token_msgs TEXT, appid_msgs TEXT, token_calls TEXT, appid_calls TEXT,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP)`)
  const insert = db.prepare('INSERT INTO push_tokens (selector, token_msgs, appid_msgs, token_calls, appid_calls, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)')
  insert.run(G_SELECTOR, G_TOKEN, APP_ID, 'voip-giacomo', APP_ID, '2025-03-01 10:00:00.123456789+00:00', '2025-03-02 11:00:00.5+00:00')
  insert.run(M_SELECTOR, M_TOKEN, APP_ID, '', '', '2025-03-01 09:00:00', '2025-03-01 09:30:00')
  insert.run(E_SELECTOR, '', '', '', '', '2025-03-01 08:00:00', '2025-03-01 08:00:00')
  db.close()
}
const goRows = () => {
  const db = new Database(dbPath, { readonly: true })
  try {
    return db.query('SELECT * FROM push_tokens ORDER BY id').all()
  } finally {
    db.close()
  }
}

beforeAll(async () => {
  // The Go proxy built Matrix IDs on the homeserver URL's hostname: so does this service when
  // MATRIX_SERVER_NAME is not set, as in a NethVoice env file.
  ;({ synapse, pnm, dir } = startExecutableFakes({ serverName: '127.0.0.1', users: { giacomo: 'unused', mario: 'unused' } }, 'm2a-nethvoice-'))
  cti = startFakeCti()
  dbPath = join(dir, 'push_tokens.db')
  goDatabase(dbPath)
  // The Go proxy's pusher for giacomo's phone: append false, no selector in data.
  const url = new URL('/_matrix/client/v3/pushers/set', synapse.url)
  url.searchParams.set('user_id', '@giacomo:127.0.0.1')
  const set = await fetch(url, {
    method: 'POST',
    headers: { authorization: `Bearer ${synapse.asToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ kind: 'http', app_id: APP_ID, pushkey: G_TOKEN, app_display_name: APP_ID, device_display_name: 'Acrobits Softphone', lang: 'en', append: false, data: { url: `${PROXY_URL}/_matrix/push/v1/notify`, format: 'event_id_only' } }),
  })
  expect(set.status).toBe(200)
  envFile = join(dir, 'matrix2acrobits.env')
  writeFileSync(
    envFile,
    [
      `MATRIX_HOMESERVER_URL=${synapse.url}`,
      `MATRIX_AS_TOKEN=${synapse.asToken}`,
      'AS_USER_ID=@_acrobits_proxy:127.0.0.1',
      `PROXY_URL=${PROXY_URL}`,
      'PROXY_PORT=0',
      `PUSH_TOKEN_DB_PATH=${dbPath}`,
      `EXT_AUTH_URL=${cti.url}`,
      'EXT_AUTH_TIMEOUT_S=5',
      'CACHE_TTL_SECONDS=3600',
      'LOGLEVEL=INFO',
      '',
    ].join('\n'),
  )
})

afterAll(async () => {
  cti.stop()
  await stopExecutableFakes({ synapse, pnm, dir }, running)
})

/** Starts the executable with the env file, as `EnvironmentFile=` would (plus the fake PNM's URL). */
async function start() {
  const b = await startBinary({ PNM_URL: pnm.url }, dir, ['sh', '-c', `set -a; . '${envFile}'; set +a; exec '${binaryPath()}'`])
  running.push(b)
  return b
}

describe("a NethVoice installation moving from the Go proxy", () => {
  test('the same env file starts it; the Go rows are imported once, unchanged; the phones keep their pushes', async () => {
    const before = goRows()
    const b = await start()
    const logged = b.lines.map((l) => JSON.parse(l) as Record<string, any>)
    const msgs = logged.map((l) => l.msg)
    expect(msgs).toContain("imported 3 of 3 rows of the Go proxy's push_tokens table (left unchanged); they have no Matrix user until the app reports again")
    expect(msgs).toContain("AS_USER_ID is ignored: the appservice's own user is the one its MATRIX_AS_TOKEN belongs to (`check` shows it)")
    expect(msgs).toContain("EXT_AUTH_TIMEOUT_S (the Go proxy's name) is read as EXT_AUTH_TIMEOUT_MS")
    expect(msgs).toContain("CACHE_TTL_SECONDS (the Go proxy's name) is read as AUTH_CACHE_TTL_SECONDS")
    expect(msgs).toContain('AUTH_MODE=ext: passwords are checked by the NethVoice CTI server')

    // Synapse keeps calling the Go pusher's URL: the imported token is found at once.
    const pushed = await synapse.push('@giacomo:127.0.0.1', { event_id: '$go-era' }, { gateway: b.url })
    expect(pushed.map((p) => [p.status, p.body])).toEqual([[200, { rejected: [] }]])
    expect(pnm.bodies().at(-1)).toMatchObject({ verb: 'NotifyTextMessage', AppId: APP_ID, DeviceToken: G_TOKEN, Selector: G_SELECTOR, Id: '$go-era' })
    // Without a Matrix user the row cannot be registered again: the Go pusher stays as it was.
    await Bun.sleep(200)
    expect(synapse.pushers().map((p) => [p.user_id, p.data.selector])).toEqual([['@giacomo:127.0.0.1', undefined]])

    // tokens show tells the operator what an imported row is.
    const shown = await runCommand(['tokens', 'show', M_SELECTOR], { PUSH_TOKEN_DB_PATH: dbPath })
    expect(shown.exitCode).toBe(0)
    expect(shown.stdout).toContain('imported from the Go proxy; Matrix user unknown until the next report')
    expect(shown.stdout).not.toContain(M_TOKEN)

    // The app's next report (same token) fills the Matrix user in, through the CTI.
    const res = await fetch(`${b.url}/api/client/push_token_report`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ selector: G_SELECTOR, token_msgs: G_TOKEN, appid_msgs: APP_ID, username: 'giacomo@nethvoice.example.org', password: 'Giacomo,1234' }),
    })
    expect(res.status).toBe(200)
    expect(cti.calls('/api/login').at(-1)!.body).toEqual({ username: 'giacomo', password: 'Giacomo,1234' })
    expect(synapse.pushers().map((p) => [p.user_id, p.pushkey, p.data.selector])).toEqual([['@giacomo:127.0.0.1', G_TOKEN, G_SELECTOR]])
    const pushedAgain = await synapse.push('@giacomo:127.0.0.1', { event_id: '$after-report' }, { gateway: b.url })
    expect(pushedAgain[0]!.body).toEqual({ rejected: [] })
    expect(pnm.bodies().at(-1)).toMatchObject({ DeviceToken: G_TOKEN, Selector: G_SELECTOR, Id: '$after-report' })
    expect(await b.stop()).toBe(0)

    const list = await runCommand(['tokens', 'list', '--json'], { PUSH_TOKEN_DB_PATH: dbPath })
    const rows = JSON.parse(list.stdout) as any[]
    expect(rows.map((r) => [r.selector, r.matrix_user_id]).sort()).toEqual([
      [G_SELECTOR, '@giacomo:127.0.0.1'],
      [M_SELECTOR, null],
      [E_SELECTOR, null],
    ].sort())
    const mario = rows.find((r) => r.selector === M_SELECTOR)
    expect(mario.created_at).toBe('2025-03-01T09:00:00Z')
    expect(mario.updated_at).toBe('2025-03-01T09:30:00Z')
    expect(rows.find((r) => r.selector === E_SELECTOR).token_msgs_hash).toBeNull()

    // The Go table is exactly as it was; a restart imports nothing again.
    expect(goRows()).toEqual(before)
    const db = new Database(dbPath)
    db.run("INSERT INTO push_tokens (selector, token_msgs, appid_msgs) VALUES ('LATE:1', 'late-token', 'x')")
    db.close()
    const again = await start()
    expect(again.lines.some((l) => l.includes('push_tokens table'))).toBe(false)
    expect(await again.stop()).toBe(0)
    const after = await runCommand(['tokens', 'show', 'LATE:1'], { PUSH_TOKEN_DB_PATH: dbPath })
    expect(after.exitCode).toBe(1)
  }, 90_000)

  test('AUTH_MODE=ext on the executable: a wrong password is 401, no chat claim 403, a CTI that cannot answer 503', async () => {
    const fresh = join(dir, 'fresh')
    const report = (b: RunningBinary, username: string, password: string) =>
      fetch(`${b.url}/api/client/push_token_report`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ selector: 'EXT:1', token_msgs: 'ext-token-0123456789', appid_msgs: APP_ID, username, password }),
      })
    const base = { MATRIX_HOMESERVER_URL: synapse.url, MATRIX_AS_TOKEN: synapse.asToken, PROXY_URL, PNM_URL: pnm.url, PUSH_TOKEN_DB_PATH: join(fresh, 'tokens.db') }
    const b = await startBinary({ ...base, EXT_AUTH_URL: cti.url })
    running.push(b)
    try {
      expect((await report(b, 'giacomo', 'not-his-password')).status).toBe(401)
      expect((await report(b, 'nochat', 'Nochat,1234')).status).toBe(403)
      expect((await report(b, 'mario@nethvoice.example.org', 'Mario,1234')).status).toBe(200)
      expect(synapse.pushers().some((p) => p.user_id === '@mario:127.0.0.1' && p.data.selector === 'EXT:1')).toBe(true)
    } finally {
      expect(await b.stop()).toBe(0)
    }
    // Nothing listens on port 9: unreachable is 503, never 401.
    const down = await startBinary({ ...base, EXT_AUTH_URL: 'http://127.0.0.1:9', EXT_AUTH_TIMEOUT_S: '2' })
    running.push(down)
    try {
      const res = await report(down, 'mario', 'Mario,1234')
      expect(res.status).toBe(503)
      expect(((await res.json()) as { error: string }).error).toContain('CTI server could not check the credentials')
    } finally {
      expect(await down.stop()).toBe(0)
    }
  }, 60_000)
})
