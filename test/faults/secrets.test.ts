/**
 * Secrets never leave: every log line of a whole flow at DEBUG, failures included, is searched
 * for passwords, the appservice token, session tokens and full push tokens (a short hash stands
 * in for a push token). Secret comparisons are constant-time; the database is private to its owner.
 */
import { afterEach, describe, expect, test } from 'bun:test'
import { readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { constantTimeEqual, tokenHash } from '../../src/secrets.ts'
import { openSqliteStore } from '../../src/store/sqlite.ts'
import { APP_ID, SELECTOR, eventually, startHarness, tempDir, type Harness } from '../harness.ts'
import { notification } from './support.ts'

let h: Harness | undefined
afterEach(async () => {
  await h?.close()
  h = undefined
})

const PASSWORD = 'correct-horse-battery-staple-41'
const WRONG_PASSWORD = 'wrong-guess-password-7319'
/** Ends in a space, which is part of it: passwords are never trimmed. */
const BOB_PASSWORD = 'bob-password-xyz-5521 '
const AS_TOKEN = 'as_token_5f0c8e2b9d7a4c1e8f3b6a2d'
const TOKEN_MSGS = 'fcm:APA91bHPRgkF3JUikC4ENAHEeMrd41Zxv3hVZjC9KtT8OvPVGJ-hQMRKRrZuJAEcl7B338qju59zJMjw2DELjzEvxwYv7hH5Ynpc1ODQ0aT4U4OFEeco8ohsN5PjL1iC2dNtk2BAokeMCg2ZXKqpc8FXKmhX94kIxQ'
const TOKEN_MSGS_2 = 'fcm:APA91bNEXTtokenNEXTtokenNEXTtoken0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH'
const TOKEN_CALLS = 'voip:8f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff'
const SECOND_SELECTOR = 'BBBB0E6E553673C54F29105A0647204C416A2A00:7C3A0D16'

describe('logs at DEBUG across the whole flow', () => {
  test('contain no password, no appservice token, no session token and no full push token', async () => {
    h = await startHarness({
      synapse: { asToken: AS_TOKEN, users: { alice: PASSWORD, bob: BOB_PASSWORD } },
      env: { LOGLEVEL: 'DEBUG' },
    })
    expect(h.config.logLevel).toBe('debug')
    const creds = { username: 'alice', password: PASSWORD }
    const full = { selector: SELECTOR, token_msgs: TOKEN_MSGS, app_id_msgs: APP_ID, token_calls: TOKEN_CALLS, app_id_calls: `${APP_ID}.voip`, ...creds }

    // A wrong password, then the right one (report stored, pusher registered).
    expect((await h.report({ ...full, password: WRONG_PASSWORD })).status).toBe(401)
    expect((await h.report(full)).status).toBe(200)
    await eventually(() => h!.synapse.pushers().length === 1)
    // A form-encoded report too, with a password that ends in a space.
    const form = new URLSearchParams({ ...full, selector: SECOND_SELECTOR, username: 'bob', password: BOB_PASSWORD }).toString()
    expect((await h.request('POST', '/api/client/push_token_report', form, { 'content-type': 'application/x-www-form-urlencoded' })).status).toBe(200)
    // A body that fails validation while carrying the secrets.
    expect((await h.report({ ...full, selector: '' })).status).toBe(400)
    expect((await h.request('POST', '/api/client/push_token_report', `{"password":"${PASSWORD}", "token_msgs": [1]`)).status).toBe(400)

    // Notifications: delivered, failing (retries, 502), then the token gone (404, forgotten).
    expect((await h.notify(notification('$one', APP_ID, TOKEN_MSGS))).status).toBe(200)
    const badge = { id: '', type: null, sender: '', counts: { unread: 0 }, devices: notification('$x', APP_ID, TOKEN_MSGS).devices }
    expect((await h.notify(badge)).status).toBe(200)
    h.pnm.behave(TOKEN_MSGS, { kind: 'status', status: 500 })
    expect((await h.notify(notification('$two', APP_ID, TOKEN_MSGS))).status).toBe(502)
    h.pnm.behave(TOKEN_MSGS, { kind: 'status', status: 400 })
    expect((await h.notify(notification('$three', APP_ID, TOKEN_MSGS))).status).toBe(200)
    h.pnm.forget(TOKEN_MSGS)
    expect((await h.notify(notification('$four', APP_ID, TOKEN_MSGS))).json).toEqual({ rejected: [TOKEN_MSGS] })
    expect((await h.notify(notification('$five', APP_ID, 'unknown-token-abcdef0123456789'))).json.rejected).toHaveLength(1)

    // The homeserver failing pusher calls (the error text goes to the log), then a new token and removal.
    h.synapse.override((req) => (req.path.endsWith('/pushers/set') ? Response.json({ errcode: 'M_UNKNOWN', error: `bad pushkey ${String(req.body?.pushkey).length}` }, { status: 500 }) : undefined))
    expect((await h.report({ ...full, token_msgs: TOKEN_MSGS_2 })).status).toBe(200)
    await eventually(() => h!.logs.parsed().some((l) => l.msg === 'pusher set failed; will retry'))
    h.synapse.override(undefined)
    expect((await h.request('POST', '/api/client/account_removal_report', full)).status).toBe(200)
    await eventually(async () => (await h!.store.pendingJobs()).length === 0, 5000)

    const text = h.logs.lines.join('\n')
    expect(h.logs.lines.length).toBeGreaterThan(20)
    expect(h.logs.parsed().some((l) => l.level === 'debug')).toBe(true)
    const sessions = h.synapse.calls('/_matrix/client/v3/logout').map((c) => c.authorization!.replace('Bearer ', ''))
    expect(sessions.length).toBeGreaterThan(0)
    for (const secret of [PASSWORD, WRONG_PASSWORD, BOB_PASSWORD, AS_TOKEN, TOKEN_MSGS, TOKEN_MSGS_2, TOKEN_CALLS, 'alice-password', ...sessions]) {
      expect(text).not.toContain(secret)
      // Not even a long piece of it.
      expect(text).not.toContain(secret.slice(0, 24))
    }
    // What stands in for a push token is its short hash.
    expect(text).toContain(tokenHash(TOKEN_MSGS))
  })
})

describe('secret comparisons', () => {
  test('constantTimeEqual is right for equal, different and differently long values', () => {
    expect(constantTimeEqual('s3cret-token', 's3cret-token')).toBe(true)
    expect(constantTimeEqual('s3cret-token', 's3cret-tokeN')).toBe(false)
    expect(constantTimeEqual('s3cret-token', 's3cret-token-longer')).toBe(false)
    expect(constantTimeEqual('', '')).toBe(true)
  })

  // A timing oracle needs an attacker who submits guesses to a running service: the offline
  // commands in src/cli (which compare stored rows with each other) are not in scope.
  test('no source file on a request path compares a secret with === or !==', () => {
    const files: string[] = []
    const walk = (dir: string) => {
      for (const name of readdirSync(dir)) {
        const path = join(dir, name)
        if (statSync(path).isDirectory()) {
          if (name !== 'cli') walk(path)
        }
        else if (path.endsWith('.ts')) files.push(path)
      }
    }
    walk(join(import.meta.dir, '../../src'))
    const offenders: string[] = []
    // A secret-named operand compared with anything but undefined, null or a typeof string.
    const compare = /(?:token|password|secret|authorization)\w*(?:\.\w+)*\s*[!=]==\s*(?!undefined\b|null\b|')|[!=]==\s*\w*(?:\.\w+)*(?:token|password|secret|authorization)\w*\b(?!\s*[!=]==)/i
    for (const file of files) {
      readFileSync(file, 'utf8')
        .split('\n')
        .forEach((line, i) => {
          if (/^\s*(\/\/|\*)/.test(line) || /typeof /.test(line)) return
          if (compare.test(line) && !/[!=]==\s*(undefined|null)\b/.test(line)) offenders.push(`${file}:${i + 1}: ${line.trim()}`)
        })
    }
    expect(offenders).toEqual([])
  })
})

describe('file modes', () => {
  test('the database, its WAL and shared-memory files are 0600 in a 0700 folder, whatever the umask', async () => {
    const previous = process.umask(0o022)
    const root = tempDir()
    try {
      const dir = join(root, 'state', 'nested')
      const path = join(dir, 'push_tokens.db')
      const store = openSqliteStore(path)
      await store.saveRegistration({ selector: SELECTOR, matrixUserId: '@alice:example.org', tokenMsgs: TOKEN_MSGS, appIdMsgs: APP_ID }, 1, () => [])
      const modes = Object.fromEntries(readdirSync(dir).map((f) => [f, (statSync(join(dir, f)).mode & 0o777).toString(8)]))
      await store.close()
      expect(modes).toEqual({ 'push_tokens.db': '600', 'push_tokens.db-wal': '600', 'push_tokens.db-shm': '600' })
      expect((statSync(dir).mode & 0o777).toString(8)).toBe('700')
    } finally {
      process.umask(previous)
      rmSync(root, { recursive: true, force: true })
    }
  })
})
