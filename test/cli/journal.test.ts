/**
 * "Why did my phone get nothing?" on the built executable: the delivery journal written by the
 * serving binary and printed by `tokens show`, and `push-test` against the fake PNM.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { planPusherCalls } from '../../src/report/plan.ts'
import { openSqliteStore } from '../../src/store/sqlite.ts'
import { startBinary } from '../e2e/binary.ts'
import { startFakePnm } from '../fakes/pnm.ts'
import { APP_ID, SELECTOR, TOKEN, tempDir } from '../harness.ts'
import { runCommand } from './run.ts'

const pnm = startFakePnm()
const dir = tempDir('m2a-journal-')
const dbPath = join(dir, 'tokens.db')
const env = (extra: Record<string, string> = {}) => ({ PNM_URL: pnm.url, PUSH_TOKEN_DB_PATH: dbPath, MATRIX_SERVER_NAME: 'example.org', ...extra })
const NO_TOKEN = 'NOTOKEN0E6E553673C54F29105A0647204C416A2A:00000009'

beforeAll(async () => {
  const store = openSqliteStore(dbPath)
  const plan = planPusherCalls(false)
  await store.saveRegistration({ selector: SELECTOR, matrixUserId: '@alice:example.org', username: 'alice', tokenMsgs: TOKEN, appIdMsgs: APP_ID }, Date.now(), plan)
  await store.saveRegistration({ selector: NO_TOKEN, matrixUserId: '@carol:example.org' }, Date.now(), plan)
  await store.close()
})
afterAll(() => {
  pnm.stop()
  rmSync(dir, { recursive: true, force: true })
})

describe('the delivery journal on the executable', () => {
  test('the service journals each outcome; tokens show prints it under the account, --json for scripts, no text, no token', async () => {
    const b = await startBinary(env({ AUTH_MODE: 'none' }))
    try {
      pnm.behave(TOKEN, { kind: 'sequence', steps: [{ kind: 'ok' }, { kind: 'status', status: 400 }] })
      const notify = (eventId: string) =>
        fetch(`${b.url}/_matrix/push/v1/notify`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ notification: { event_id: eventId, room_id: '!r:example.org', content: { body: 'secret words' }, counts: { unread: 1 }, devices: [{ app_id: APP_ID, pushkey: TOKEN, data: { selector: SELECTOR } }] } }),
        })
      expect((await notify('$first')).status).toBe(200)
      expect((await notify('$second')).status).toBe(200)
    } finally {
      // Written within a second, and at the latest at shutdown.
      expect(await b.stop()).toBe(0)
    }
    const text = await runCommand(['tokens', 'show', SELECTOR], env())
    expect(text.exitCode).toBe(0)
    expect(text.stdout).toContain('deliveries (last 2, newest first):')
    const lines = text.stdout.split('\n')
    const at = lines.findIndex((l) => l.startsWith('deliveries'))
    expect(lines[at + 1]).toMatch(/TIME\s+EVENT\s+OUTCOME\s+PNM\s+LATENCY/)
    expect(lines[at + 2]).toMatch(/\$second\s+dropped\s+400\s+\d+ ms\s+HTTP 400/)
    expect(lines[at + 3]).toMatch(/\$first\s+delivered\s+200\s+\d+ ms/)

    const json = await runCommand(['tokens', 'show', SELECTOR, '--json'], env())
    expect(json.exitCode).toBe(0)
    const parsed = JSON.parse(json.stdout)
    expect(parsed.deliveries.map((d: any) => [d.event_id, d.outcome, d.pnm_status])).toEqual([
      ['$second', 'dropped', 400],
      ['$first', 'delivered', 200],
    ])
    expect(Object.keys(parsed.deliveries[0]).sort()).toEqual(['detail', 'event_id', 'latency_ms', 'outcome', 'pnm_status', 'time'])
    expect(typeof parsed.deliveries[0].latency_ms).toBe('number')
    for (const out of [text.stdout, json.stdout]) {
      expect(out).not.toContain(TOKEN)
      expect(out).not.toContain('secret words')
    }
  }, 60_000)
})

describe('push-test', () => {
  test('PNM 200: one NotifyGenericTextMessage with the stored token and selector, exit 0', async () => {
    pnm.behave(TOKEN, { kind: 'ok' })
    const before = pnm.requests.length
    const r = await runCommand(['push-test', SELECTOR], env())
    expect(r.exitCode).toBe(0)
    expect(pnm.bodies().slice(before)).toEqual([
      { verb: 'NotifyGenericTextMessage', AppId: APP_ID, DeviceToken: TOKEN, Selector: SELECTOR, Message: 'Test from matrix2acrobits', ContentType: 'text/plain' },
    ])
    expect(r.stdout).toContain('PNM answered HTTP 200')
    expect(r.stdout).toContain('"code":200')
    expect(r.stdout).toContain('outcome: delivered')
    expect(r.stdout + r.stderr).not.toContain(TOKEN)
  })

  test('PNM 404, 400 and 500 exit 1 after one request each, saying what the answer means; nothing is changed', async () => {
    const cases = [
      [{ kind: 'gone' }, 'no longer knows this device token'],
      [{ kind: 'status', status: 400 }, 'refused the request (400)'],
      [{ kind: 'status', status: 500 }, 'could not be reached or failed'],
    ] as const
    for (const [behaviour, meaning] of cases) {
      pnm.behave(TOKEN, behaviour)
      const before = pnm.requests.length
      const r = await runCommand(['push-test', SELECTOR], env())
      expect(r.exitCode).toBe(1)
      expect(pnm.requests.length - before).toBe(1)
      expect(r.stdout).toContain(meaning)
    }
    const store = openSqliteStore(dbPath)
    try {
      expect((await store.getRegistration(SELECTOR))!.tokenMsgs).toBe(TOKEN)
    } finally {
      await store.close()
    }
    pnm.behave(TOKEN, { kind: 'ok' })
  })

  test('a PNM that does not answer within PNM_TIMEOUT_MS: exit 1', async () => {
    pnm.behave(TOKEN, { kind: 'hang' })
    const r = await runCommand(['push-test', SELECTOR], env({ PNM_TIMEOUT_MS: '300' }))
    pnm.release()
    pnm.behave(TOKEN, { kind: 'ok' })
    expect(r.exitCode).toBe(1)
    expect(r.stdout).toContain('did not answer within 300 ms')
  })

  test('no such account, or no messages token: exit 1 without a request', async () => {
    const before = pnm.requests.length
    const unknown = await runCommand(['push-test', 'NOPE:1'], env())
    expect(unknown.exitCode).toBe(1)
    expect(unknown.stderr).toContain('no registration with selector NOPE:1')
    const tokenless = await runCommand(['push-test', NO_TOKEN], env())
    expect(tokenless.exitCode).toBe(1)
    expect(tokenless.stderr).toContain('has no messages token')
    expect(pnm.requests.length).toBe(before)
  })
})
