/**
 * Nobody gets in where they don't belong, on the built executable against the fake
 * Synapse and PNM: account ownership, field limits, per-user caps, password-guessing budgets,
 * the notify devices cap, `check`'s warnings and what `tokens` prints. TRUST_PROXY lets a test
 * choose the client address with X-Forwarded-For, as a reverse proxy would.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'bun:test'
import { Database } from 'bun:sqlite'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { planPusherCalls } from '../../src/report/plan.ts'
import { openSqliteStore } from '../../src/store/sqlite.ts'
import { runCommand } from '../cli/run.ts'
import { startFakePnm, type FakePnm } from '../fakes/pnm.ts'
import { startFakeSynapse, type FakeSynapse } from '../fakes/synapse.ts'
import { APP_ID, SELECTOR, TOKEN, eventually, readAnswer, tempDir } from '../harness.ts'
import { binaryPath, runBinary, startBinary, type RunningBinary } from './binary.ts'

const CAROL_PASSWORD = ' carol pw '
let synapse: FakeSynapse
let pnm: FakePnm
let dir: string
const running: RunningBinary[] = []
let databases = 0

beforeAll(() => {
  binaryPath()
  synapse = startFakeSynapse({ users: { alice: 'alice-password', bob: 'bob-password', carol: CAROL_PASSWORD } })
  for (let i = 0; i < 60; i++) synapse.addUser(`user${i}`, `pw-${i}`)
  pnm = startFakePnm()
  dir = tempDir('m2a-security-')
})

afterEach(async () => {
  synapse.override(undefined)
  for (const b of running.splice(0)) if (b.proc.exitCode === null) await b.stop()
})

afterAll(() => {
  synapse.stop()
  pnm.stop()
  rmSync(dir, { recursive: true, force: true })
})

async function start(extra: Record<string, string> = {}) {
  const dbPath = join(dir, `tokens-${++databases}.db`)
  const b = await startBinary({
    MATRIX_HOMESERVER_URL: synapse.url,
    MATRIX_AS_TOKEN: synapse.asToken,
    MATRIX_SERVER_NAME: synapse.serverName,
    PROXY_URL: 'https://push.example.org',
    PNM_URL: pnm.url,
    PUSH_TOKEN_DB_PATH: dbPath,
    TRUST_PROXY: '127.0.0.1',
    ...extra,
  })
  running.push(b)
  return { ...b, dbPath }
}
type Service = Awaited<ReturnType<typeof start>>

const selector = (n: number) => `${n.toString(16).toUpperCase().padStart(40, '0')}:7C3A0D14`

async function send(b: Service, path: string, body: Record<string, string>, from?: string) {
  const headers: Record<string, string> = { 'content-type': 'application/json' }
  if (from !== undefined) headers['x-forwarded-for'] = from
  return readAnswer(await fetch(`${b.url}${path}`, { method: 'POST', headers, body: JSON.stringify(body) }))
}
const report = (b: Service, body: Record<string, string>, from?: string) => send(b, '/api/client/push_token_report', body, from)
const removal = (b: Service, body: Record<string, string>, from?: string) => send(b, '/api/client/account_removal_report', body, from)

function rows(b: Service) {
  const db = new Database(b.dbPath, { readonly: true })
  try {
    return db.query('SELECT selector, matrix_user_id, token_msgs, updated_at FROM registrations ORDER BY selector').all() as Array<{
      selector: string
      matrix_user_id: string
      token_msgs: string | null
    }>
  } finally {
    db.close()
  }
}
const logins = () => synapse.calls('/_matrix/client/v3/login').length
const logLines = (b: Service) =>
  b.lines.flatMap((l) => {
    try {
      return [JSON.parse(l) as Record<string, any>]
    } catch {
      return []
    }
  })
const pushersOf = (user: string) => synapse.pushers().filter((p) => p.user_id === user).map((p) => p.pushkey).sort()

describe('account ownership', () => {
  test("another user's report for a stored selector is 403 and changes nothing; a removal is 200 and changes nothing; both logged with the two users", async () => {
    const b = await start()
    const aliceToken = `${TOKEN}-alice-own`
    expect((await report(b, { selector: SELECTOR, token_msgs: aliceToken, app_id_msgs: APP_ID, username: 'alice', password: 'alice-password' })).status).toBe(200)
    expect(pushersOf('@alice:example.org')).toEqual([aliceToken])
    const before = rows(b)
    const pusherCalls = synapse.pusherCalls().length

    const takeover = await report(b, { selector: SELECTOR, token_msgs: `${TOKEN}-bob`, app_id_msgs: APP_ID, username: 'bob', password: 'bob-password' })
    expect(takeover.status).toBe(403)
    expect(takeover.json.error).toMatch(/another Matrix user/)
    const remove = await removal(b, { selector: SELECTOR, username: 'bob', password: 'bob-password' })
    expect(remove.status).toBe(200)
    expect(remove.json).toEqual({})
    // A removal without a token, then with another token: neither touches alice.
    expect((await removal(b, { selector: SELECTOR, token_msgs: `${TOKEN}-bob`, app_id_msgs: APP_ID, username: 'bob', password: 'bob-password' })).status).toBe(200)

    expect(rows(b)).toEqual(before)
    expect(synapse.pusherCalls().length).toBe(pusherCalls)
    expect(pushersOf('@alice:example.org')).toEqual([aliceToken])

    // The executable writes its log in batches: the last line may arrive after the answer.
    const ownershipWarnings = () => logLines(b).filter((l) => l.level === 'warn' && l.selector === SELECTOR)
    await eventually(() => ownershipWarnings().length >= 3)
    const warnings = ownershipWarnings()
    expect(warnings.map((w) => w.msg)).toEqual([
      'report for a selector stored for another Matrix user refused',
      'removal of a selector stored for another Matrix user ignored',
      'removal of a selector stored for another Matrix user ignored',
    ])
    for (const w of warnings) {
      expect(w).toMatchObject({ user_id: '@bob:example.org', owner_user_id: '@alice:example.org' })
      expect(JSON.stringify(w)).not.toContain(TOKEN)
      expect(JSON.stringify(w)).not.toContain('password')
    }
  })

  test("a report carrying the row's current message token moves it: the same device switching accounts", async () => {
    const b = await start()
    const deviceToken = `${TOKEN}-shared-device`
    expect((await report(b, { selector: SELECTOR, token_msgs: deviceToken, app_id_msgs: APP_ID, username: 'alice', password: 'alice-password' })).status).toBe(200)
    expect((await report(b, { selector: SELECTOR, token_msgs: deviceToken, app_id_msgs: APP_ID, username: 'bob', password: 'bob-password' })).status).toBe(200)
    expect(rows(b).map((r) => [r.selector, r.matrix_user_id, r.token_msgs])).toEqual([[SELECTOR, '@bob:example.org', deviceToken]])
    expect(pushersOf('@bob:example.org')).toContain(deviceToken)
    expect(pushersOf('@alice:example.org')).not.toContain(deviceToken)
    // Now alice is the other user.
    expect((await report(b, { selector: SELECTOR, username: 'alice', password: 'alice-password' })).status).toBe(403)
  })
})

describe('field limits', () => {
  test('400 naming the field, before the homeserver is asked', async () => {
    const b = await start()
    const base = { selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, username: 'alice', password: 'alice-password' }
    const before = logins()
    const cases: Array<[Record<string, string>, string]> = [
      [{ selector: 'A'.repeat(129) }, 'selector'],
      [{ selector: `${SELECTOR}\u001b[2J` }, 'selector'],
      [{ selector: 'Zoë:1' }, 'selector'],
      [{ username: 'a'.repeat(256) }, 'username'],
      [{ username: 'al\u0000ice' }, 'username'],
      [{ password: 'pass\u007fword' }, 'password'],
      [{ token_msgs: 'x'.repeat(513) }, 'token_msgs'],
      [{ app_id_msgs: 'a'.repeat(65) }, 'app_id_msgs'],
      [{ app_id_msgs: `${APP_ID}\n` + 'x' }, 'app_id_msgs'],
      [{ token_calls: 'x'.repeat(513), app_id_calls: APP_ID }, 'token_calls'],
      [{ token_calls: 'voip', app_id_calls: 'a'.repeat(65) }, 'app_id_calls'],
      [{ token_calls: 'vo\u009bip', app_id_calls: APP_ID }, 'token_calls'],
    ]
    for (const [change, field] of cases) {
      const res = await report(b, { ...base, ...change })
      expect(res.status, field).toBe(400)
      expect(res.json.error.startsWith(`${field} `), res.json.error).toBe(true)
    }
    expect(logins()).toBe(before)
    expect(rows(b)).toEqual([])
  })

  test('passwords are never trimmed', async () => {
    const b = await start()
    const before = logins()
    expect((await report(b, { selector: SELECTOR, username: 'carol', password: CAROL_PASSWORD })).status).toBe(200)
    expect(synapse.calls('/_matrix/client/v3/login').at(-1)!.body.password).toBe(CAROL_PASSWORD)
    expect((await report(b, { selector: SELECTOR, username: 'carol', password: CAROL_PASSWORD.trim() })).status).toBe(401)
    expect(logins()).toBe(before + 2)
  })
})

describe('per-user caps', () => {
  test('MAX_DEVICES_PER_USER (default 20): a new registration evicts the least recently reported and deletes its pusher; 30 reports a minute, then 429', async () => {
    const b = await start()
    const creds = { username: 'user50', password: 'pw-50' }
    const user = '@user50:example.org'
    const token = (n: number) => `${TOKEN}-cap-${n}`
    for (let n = 1; n <= 20; n++) expect((await report(b, { selector: selector(n), token_msgs: token(n), app_id_msgs: APP_ID, ...creds })).status).toBe(200)
    // Reported again, selector 1 is now the most recent: selector 2 is the least recently reported.
    expect((await report(b, { selector: selector(1), token_msgs: token(1), app_id_msgs: APP_ID, ...creds })).status).toBe(200)
    expect(rows(b)).toHaveLength(20)
    expect((await report(b, { selector: selector(21), token_msgs: token(21), app_id_msgs: APP_ID, ...creds })).status).toBe(200)
    const stored = rows(b).map((r) => r.selector)
    expect(stored).toHaveLength(20)
    expect(stored).not.toContain(selector(2))
    expect(stored).toContain(selector(1))
    expect(stored).toContain(selector(21))
    const deleted = synapse.pusherCalls().filter((c) => c.body.kind === null && c.query.user_id === user)
    expect(deleted.map((c) => c.body.pushkey)).toEqual([token(2)])
    expect(pushersOf(user)).not.toContain(token(2))
    expect(pushersOf(user)).toHaveLength(20)
    // The executable's log is batched: the line may come a moment after the answer.
    const evictions = () => logLines(b).filter((l) => /MAX_DEVICES_PER_USER/.test(l.msg ?? '')).map((l) => l.selector)
    await eventually(() => evictions().length > 0, 5_000)
    expect(evictions()).toEqual([selector(2)])

    // 22 reports so far: 8 more fit in the minute, the next is refused.
    for (let i = 0; i < 8; i++) expect((await report(b, { selector: selector(21), token_msgs: token(21), app_id_msgs: APP_ID, ...creds })).status).toBe(200)
    const limited = await report(b, { selector: selector(21), token_msgs: token(21), app_id_msgs: APP_ID, ...creds })
    expect(limited.status).toBe(429)
    const retryAfter = Number(limited.headers.get('retry-after'))
    expect(retryAfter).toBeGreaterThanOrEqual(1)
    expect(retryAfter).toBeLessThanOrEqual(60)
    // Another user is not held back.
    expect((await report(b, { selector: selector(99), username: 'user51', password: 'pw-51' })).status).toBe(200)
  })

  test('MAX_DEVICES_PER_USER and REPORTS_PER_MINUTE are read from the environment', async () => {
    const b = await start({ MAX_DEVICES_PER_USER: '2', REPORTS_PER_MINUTE: '4' })
    const creds = { username: 'user52', password: 'pw-52' }
    for (let n = 1; n <= 3; n++) expect((await report(b, { selector: selector(n), token_msgs: `${TOKEN}-env-${n}`, app_id_msgs: APP_ID, ...creds })).status).toBe(200)
    expect(rows(b).map((r) => r.selector)).toEqual([selector(2), selector(3)])
    expect((await report(b, { selector: selector(3), ...creds })).status).toBe(200)
    expect((await report(b, { selector: selector(3), ...creds })).status).toBe(429)
  })
})

describe('password guessing', () => {
  test('parallel guesses: a check counts from the moment it starts, so no more than the limit reach the homeserver', async () => {
    const b = await start()
    synapse.override(async (req) => {
      if (req.path.endsWith('/login')) await Bun.sleep(300)
      return undefined
    })
    const before = logins()
    const answers = await Promise.all(
      Array.from({ length: 50 }, (_, i) => report(b, { selector: selector(i), username: 'user1', password: `guess-${i}` }, '198.51.100.10')),
    )
    expect(logins() - before).toBe(5)
    expect(answers.filter((a) => a.status === 401)).toHaveLength(5)
    expect(answers.filter((a) => a.status === 429)).toHaveLength(45)
  })

  test('per client address: 30 checks a minute reach the homeserver, whatever their outcome; IPv6 is grouped by /64', async () => {
    const b = await start()
    const before = logins()
    for (let i = 0; i < 30; i++) expect((await report(b, { selector: selector(i), username: `user${i}`, password: 'typo' }, '203.0.113.30')).status).toBe(401)
    const refused = await report(b, { selector: SELECTOR, username: 'alice', password: 'alice-password' }, '203.0.113.30')
    expect(refused.status).toBe(429)
    expect(refused.json.error).toMatch(/from this address/)
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
    expect(logins() - before).toBe(30)
    // Another address is served.
    expect((await report(b, { selector: SELECTOR, username: 'alice', password: 'alice-password' }, '203.0.113.31')).status).toBe(200)

    // Thirty addresses of one /64 are one budget; the next /64 is another.
    for (let i = 0; i < 30; i++) {
      expect((await report(b, { selector: selector(i), username: `user${i}`, password: `pw-${i}` }, `2001:db8:1:2::${(i + 1).toString(16)}`)).status).toBe(200)
    }
    expect((await report(b, { selector: selector(40), username: 'user40', password: 'pw-40' }, '2001:db8:1:2:ffff:ffff:ffff:fffe')).status).toBe(429)
    expect((await report(b, { selector: selector(40), username: 'user40', password: 'pw-40' }, '2001:db8:1:3::1')).status).toBe(200)
  })

  test("a homeserver 429 counts against the address budget too (AUTH_CHECKS_PER_MINUTE)", async () => {
    const b = await start({ AUTH_CHECKS_PER_MINUTE: '3' })
    synapse.override((req) =>
      req.path.endsWith('/login') ? Response.json({ errcode: 'M_LIMIT_EXCEEDED', error: 'Too Many Requests', retry_after_ms: 120_000 }, { status: 429 }) : undefined,
    )
    const before = logins()
    for (let i = 0; i < 3; i++) expect((await report(b, { selector: SELECTOR, username: `user${i}`, password: `pw-${i}` }, '203.0.113.40')).status).toBe(503)
    const refused = await report(b, { selector: SELECTOR, username: 'user3', password: 'pw-3' }, '203.0.113.40')
    expect(refused.status).toBe(429)
    expect(logins() - before).toBe(3)
    // Other clients still reach the homeserver (and its own limit).
    expect((await report(b, { selector: SELECTOR, username: 'user3', password: 'pw-3' }, '203.0.113.41')).status).toBe(503)
    expect(logins() - before).toBe(4)
  })

  test('AUTH_MAX_INFLIGHT caps the password checks in flight: the rest get 503 with Retry-After at once', async () => {
    const b = await start({ AUTH_MAX_INFLIGHT: '2' })
    synapse.override(async (req) => {
      if (req.path.endsWith('/login')) await Bun.sleep(500)
      return undefined
    })
    const before = logins()
    const answers = await Promise.all(
      Array.from({ length: 6 }, (_, i) => report(b, { selector: selector(i), username: `user${i}`, password: `pw-${i}` }, `192.0.2.${i + 1}`)),
    )
    expect(logins() - before).toBe(2)
    expect(answers.filter((a) => a.status === 200)).toHaveLength(2)
    const busy = answers.filter((a) => a.status === 503)
    expect(busy).toHaveLength(4)
    for (const a of busy) expect(a.headers.get('retry-after')).toBe('1')
    // Once they are done, checks run again.
    expect((await report(b, { selector: selector(9), username: 'user9', password: 'pw-9' }, '192.0.2.9')).status).toBe(200)
  })

  test('@user:<server name>, user and USER are one user for the limit', async () => {
    const b = await start()
    const forms = ['user20', '@user20:example.org', 'USER20', '@User20:Example.org']
    // Twenty failures from twenty addresses, five in each spelling: the per-username threshold.
    for (let i = 0; i < 20; i++) {
      expect((await report(b, { selector: SELECTOR, username: forms[i % 4]!, password: 'wrong' }, `198.51.100.${i + 1}`)).status).toBe(401)
    }
    for (const name of forms) expect((await report(b, { selector: SELECTOR, username: name, password: 'pw-20' }, '198.51.100.99')).status).toBe(429)
  })

  test('failures count per (username, address): a guesser elsewhere does not lock the user out, nor one user his neighbours', async () => {
    const b = await start()
    for (let i = 0; i < 5; i++) expect((await report(b, { selector: SELECTOR, username: 'user30', password: 'wrong' }, '198.51.100.30')).status).toBe(401)
    expect((await report(b, { selector: SELECTOR, username: 'user30', password: 'pw-30' }, '198.51.100.30')).status).toBe(429)
    expect((await report(b, { selector: SELECTOR, username: 'user30', password: 'pw-30' }, '198.51.100.31')).status).toBe(200)
    // Six users behind one address, one typo each: the sixth is not refused.
    for (let i = 31; i < 37; i++) expect((await report(b, { selector: selector(i), username: `user${i}`, password: 'typo' }, '198.51.100.32')).status).toBe(401)
    expect((await report(b, { selector: selector(36), username: 'user36', password: 'pw-36' }, '198.51.100.32')).status).toBe(200)
  })

  test('per username alone: 20 failures a minute from any addresses, then 429 from everywhere', async () => {
    const b = await start()
    const before = logins()
    for (let i = 0; i < 20; i++) expect((await report(b, { selector: SELECTOR, username: 'user40', password: 'wrong' }, `198.18.0.${i + 1}`)).status).toBe(401)
    const refused = await report(b, { selector: SELECTOR, username: 'user40', password: 'pw-40' }, '198.18.1.1')
    expect(refused.status).toBe(429)
    expect(refused.json.error).toMatch(/Too many failed attempts/)
    expect(logins() - before).toBe(20)
  })

  test('X-Forwarded-For from a loopback peer while TRUST_PROXY is unset: warned once', async () => {
    const b = await start({ TRUST_PROXY: '' })
    const warned = () => logLines(b).filter((l) => l.level === 'warn' && /TRUST_PROXY is not set/.test(l.msg))
    // Any request says it, the first one that carries the header.
    expect((await fetch(`${b.url}/health`)).status).toBe(200)
    expect(warned()).toHaveLength(0)
    expect((await fetch(`${b.url}/health`, { headers: { 'x-forwarded-for': '203.0.113.50' } })).status).toBe(200)
    await Bun.sleep(50)
    expect(warned()).toHaveLength(1)
    expect(warned()[0]!.peer).toBe('127.0.0.1')
    for (let i = 0; i < 3; i++) await report(b, { selector: SELECTOR, username: 'alice', password: 'alice-password' }, '203.0.113.50')
    expect(warned()).toHaveLength(1)
    const quiet = await start()
    await report(quiet, { selector: SELECTOR, username: 'alice', password: 'alice-password' }, '203.0.113.50')
    expect(logLines(quiet).filter((l) => /TRUST_PROXY is not set/.test(l.msg ?? ''))).toHaveLength(0)
  })
})

describe('the push gateway', () => {
  test('at most 16 devices per notification; more is 400 M_BAD_JSON', async () => {
    const b = await start()
    const devices = (n: number) => Array.from({ length: n }, (_, i) => ({ app_id: APP_ID, pushkey: `unknown-${i}` }))
    const notify = async (n: number) =>
      readAnswer(
        await fetch(`${b.url}/_matrix/push/v1/notify`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ notification: { event_id: '$e', room_id: '!r:example.org', devices: devices(n) } }),
        }),
      )
    const sixteen = await notify(16)
    expect(sixteen.status).toBe(200)
    expect(sixteen.json.rejected).toHaveLength(16)
    for (const n of [17, 5_000]) {
      const over = await notify(n)
      expect(over.status).toBe(400)
      expect(over.json.errcode).toBe('M_BAD_JSON')
      expect(over.json.error).toMatch(/^notification\.devices: /)
    }
  })
})

describe('documentation', () => {
  test('--help names every limit variable', () => {
    const help = runBinary(['--help'])
    expect(help.exitCode).toBe(0)
    for (const name of ['AUTH_FAILURES_PER_MINUTE', 'AUTH_USER_FAILURES_PER_MINUTE', 'AUTH_CHECKS_PER_MINUTE', 'AUTH_MAX_INFLIGHT', 'MAX_DEVICES_PER_USER', 'REPORTS_PER_MINUTE']) {
      expect(help.stdout).toContain(`  ${name} `)
    }
  })
})

describe('check warnings', () => {
  const env = (extra: Record<string, string> = {}) => ({
    MATRIX_HOMESERVER_URL: synapse.url,
    MATRIX_AS_TOKEN: synapse.asToken,
    MATRIX_SERVER_NAME: 'example.org',
    PROXY_URL: 'https://push.example.org',
    PNM_URL: pnm.url,
    PUSH_TOKEN_DB_PATH: join(dir, 'check', 'tokens.db'),
    ...extra,
  })
  const warnings = (stdout: string) => stdout.split('\n').filter((l) => l.startsWith('  warn'))

  test('NOTIFY_ALLOWED_IPS unset while listening on a non-loopback address', async () => {
    const open = await runCommand(['check'], env())
    expect(open.exitCode).toBe(0)
    expect(warnings(open.stdout).filter((l) => l.includes('NOTIFY_ALLOWED_IPS is not set') && l.includes('0.0.0.0'))).toHaveLength(1)
    const quiet: Record<string, string>[] = [{ PROXY_HOST: '127.0.0.1' }, { PROXY_HOST: '::1' }, { NOTIFY_ALLOWED_IPS: '192.0.2.10' }]
    for (const extra of quiet) {
      const r = await runCommand(['check'], env(extra))
      expect(r.exitCode).toBe(0)
      expect(r.stdout).not.toContain('NOTIFY_ALLOWED_IPS is not set')
    }
  })

  test('a plain http:// homeserver on another host; URL userinfo never printed', async () => {
    const remote = await runCommand(['check'], env({ MATRIX_HOMESERVER_URL: 'http://admin:hunter2-secret@192.0.2.1:9', MATRIX_TIMEOUT_MS: '300' }))
    expect(warnings(remote.stdout).filter((l) => /MATRIX_HOMESERVER_URL is plain http:\/\/ to 192\.0\.2\.1/.test(l))).toHaveLength(1)
    expect(remote.stdout + remote.stderr).not.toContain('hunter2')
    expect(remote.stdout + remote.stderr).not.toContain('admin:')

    const local = await runCommand(['check'], env({ MATRIX_HOMESERVER_URL: synapse.url.replace('http://', 'http://admin:hunter2-secret@') }))
    expect(local.stdout).not.toContain('is plain http://')
    expect(local.stdout + local.stderr).not.toContain('hunter2')
    expect(local.stdout).toContain('***@127.0.0.1')

    const invalid = await runCommand(['check'], env({ MATRIX_HOMESERVER_URL: 'ftp://admin:hunter2-secret@example.org' }))
    expect(invalid.exitCode).toBe(2)
    expect(invalid.stdout + invalid.stderr).not.toContain('hunter2')
  })
})

describe('operator output', () => {
  test('tokens list and tokens show print stored control characters escaped', async () => {
    const dbPath = join(dir, 'evil', 'tokens.db')
    const evil = {
      selector: 'EVIL\u001b]0;owned\u0007\u001b[2J:1',
      username: 'mallory\u009b31m\r',
      matrixUserId: '@mallory:example.org',
      tokenMsgs: 'token-of-mallory',
      appIdMsgs: 'com.evil\u202eppa',
    }
    const store = openSqliteStore(dbPath)
    await store.saveRegistration(evil, Date.now(), planPusherCalls(false))
    await store.close()
    const env = { PUSH_TOKEN_DB_PATH: dbPath, MATRIX_SERVER_NAME: 'example.org' }
    const raw = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/

    const list = await runCommand(['tokens', 'list'], env)
    expect(list.exitCode).toBe(0)
    expect(list.stdout).not.toMatch(raw)
    expect(list.stdout).toContain('EVIL\\x1b]0;owned\\x07\\x1b[2J:1')
    expect(list.stdout).toContain('mallory\\x9b31m\\x0d')
    expect(list.stdout).toContain('com.evil\\u202eppa')

    const show = await runCommand(['tokens', 'show', evil.selector], env)
    expect(show.exitCode).toBe(0)
    expect(show.stdout).not.toMatch(raw)
    expect(show.stdout).toContain('EVIL\\x1b]0;owned\\x07\\x1b[2J:1')

    for (const args of [['tokens', 'list', '--json'], ['tokens', 'show', evil.selector, '--json']]) {
      const json = await runCommand(args, env)
      expect(json.exitCode).toBe(0)
      expect(json.stdout).not.toMatch(raw)
      // Escaped, not altered: the JSON reads back as what is stored.
      const parsed = JSON.parse(json.stdout)
      const row = Array.isArray(parsed) ? parsed[0] : parsed
      expect(row).toMatchObject({ selector: evil.selector, username: evil.username, app_id_msgs: evil.appIdMsgs })
    }

    const missing = await runCommand(['tokens', 'show', 'NO\u001b[2JSUCH'], env)
    expect(missing.exitCode).toBe(1)
    expect(missing.stderr).not.toMatch(raw)
  })
})
