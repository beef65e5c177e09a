/**
 * What a request logs: one access line at INFO (method, route, status, duration, req_id and, for a
 * notify, the outcome per device; for a refusal, why), lines of their own only for what needs
 * acting on, every one of them with the request's req_id; probes and scrapes at DEBUG; unknown
 * pushkeys one by one at DEBUG only.
 */
import { afterEach, describe, expect, test } from 'bun:test'
import { DeviceLog, LOGGED_DEVICES, notifyAccessFields, type DeviceOutcome } from '../../src/gateway/notify.ts'
import { tokenHash } from '../../src/secrets.ts'
import { APP_ID, SELECTOR, TOKEN, fullNotification, startHarness, type Harness } from '../harness.ts'

const NOTIFY_PATH = '/_matrix/push/v1/notify'
const REPORT_PATH = '/api/client/push_token_report'

let h: Harness | undefined
afterEach(async () => {
  await h?.close()
  h = undefined
})

async function registered(logLevel: string, env: Record<string, string> = {}) {
  h = await startHarness({ env: { AUTH_MODE: 'none', LOGLEVEL: logLevel, ...env } })
  expect((await h.report({ selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, username: 'alice' })).status).toBe(200)
  return h
}

/** Sends one request and returns its answer and every line logged while it was handled. */
async function logged(harness: Harness, method: string, path: string, body?: unknown) {
  const from = harness.logs.lines.length
  const answer = await harness.request(method, path, body)
  const lines = harness.logs.lines.slice(from).map((l) => JSON.parse(l) as Record<string, any>)
  return { answer, lines, id: answer.headers.get('x-request-id')! }
}

/** A device as Synapse sends it; this release's pusher for TOKEN names its account (data.selector). */
const device = (pushkey: string) => ({ app_id: APP_ID, pushkey, pushkey_ts: 1, data: pushkey === TOKEN ? { selector: SELECTOR } : {} })

describe('the access line of a notify', () => {
  test('a delivered notify writes one line: the access line with the outcome of each device', async () => {
    const harness = await registered('INFO')
    const { answer, lines, id } = await logged(harness, 'POST', NOTIFY_PATH, { notification: fullNotification('$ev1') })
    expect(answer.status).toBe(200)
    expect(id).toBeTruthy()
    expect(lines).toHaveLength(1)
    const line = lines[0]!
    expect(line).toMatchObject({
      level: 'info',
      msg: 'request',
      req_id: id,
      method: 'POST',
      route: NOTIFY_PATH,
      status: 200,
      event_id: '$ev1',
      devices: [{ app_id: APP_ID, pushkey: tokenHash(TOKEN), selector: SELECTOR, outcome: 'delivered' }],
    })
    expect(typeof line.duration_ms).toBe('number')
    expect(JSON.stringify(line)).not.toContain(TOKEN)

    // The retry Synapse sends after its timeout: still one line, saying what became of it.
    const again = await logged(harness, 'POST', NOTIFY_PATH, { notification: fullNotification('$ev1') })
    expect(again.lines).toHaveLength(1)
    expect(again.lines[0]!.devices).toEqual([{ app_id: APP_ID, pushkey: tokenHash(TOKEN), selector: SELECTOR, outcome: 'duplicate' }])
  })

  test('unknown pushkeys: one INFO line for the request that counts them, each named at DEBUG only', async () => {
    const unknown = ['unknown-1', 'unknown-2', 'unknown-3', 'unknown-4', 'unknown-5']
    const notification = fullNotification('$ev2', TOKEN, { devices: [...unknown.map(device), device(TOKEN)] })

    const info = await registered('INFO')
    const quiet = await logged(info, 'POST', NOTIFY_PATH, { notification })
    expect(quiet.answer.json).toEqual({ rejected: unknown })
    expect(quiet.lines).toHaveLength(1)
    expect(quiet.lines[0]).toMatchObject({ msg: 'request', req_id: quiet.id, status: 200, unknown_pushkeys: 5 })
    expect(quiet.lines[0]!.devices.map((d: any) => d.outcome)).toEqual(['rejected', 'rejected', 'rejected', 'rejected', 'rejected', 'delivered'])
    expect(quiet.lines[0]!.devices.map((d: any) => d.pushkey)).toEqual([...unknown, TOKEN].map(tokenHash))
    await info.close()

    const debug = await registered('DEBUG')
    const loud = await logged(debug, 'POST', NOTIFY_PATH, { notification: { ...notification, event_id: '$ev3' } })
    const each = loud.lines.filter((l) => l.msg === 'pushkey not registered here; rejecting it')
    expect(each.map((l) => [l.level, l.req_id, l.pushkey])).toEqual(unknown.map((k) => ['debug', loud.id, tokenHash(k)]))
    expect(loud.lines.filter((l) => l.level !== 'debug')).toHaveLength(1)
  })

  test('a failed delivery: the 502 access line carries the outcome and the reason; the error lines carry req_id', async () => {
    const harness = await registered('INFO')
    harness.pnm.behave(TOKEN, { kind: 'status', status: 503 })
    const { answer, lines, id } = await logged(harness, 'POST', NOTIFY_PATH, { notification: fullNotification('$ev4') })
    expect(answer.status).toBe(502)
    const access = lines.filter((l) => l.msg === 'request')
    expect(access).toHaveLength(1)
    expect(access[0]).toMatchObject({
      req_id: id,
      status: 502,
      errcode: 'M_UNKNOWN',
      error: answer.json.error,
      devices: [{ pushkey: tokenHash(TOKEN), selector: SELECTOR, outcome: 'failed' }],
    })
    const others = lines.filter((l) => l.msg !== 'request')
    expect(others.map((l) => l.msg)).toEqual(['PNM attempt failed', 'PNM attempt failed', 'PNM attempt failed', 'PNM delivery failed; Synapse will retry'])
    for (const l of others) expect(l).toMatchObject({ req_id: id, pushkey: tokenHash(TOKEN), event_id: '$ev4', selector: SELECTOR })
  })

  test('a refused body: one line, with the reason', async () => {
    const harness = await registered('INFO')
    const { answer, lines, id } = await logged(harness, 'POST', NOTIFY_PATH, { notification: { devices: 'nope' } })
    expect(answer.status).toBe(400)
    expect(lines).toEqual([expect.objectContaining({ msg: 'request', req_id: id, status: 400, errcode: 'M_BAD_JSON', error: answer.json.error })])
  })

  test(`past ${LOGGED_DEVICES} devices the line lists the first ones and counts the rest by outcome`, () => {
    const devices = Array.from({ length: 40 }, (_, i) => new DeviceLog('req', device(`key-${i}`), '$e'))
    for (const d of devices.slice(0, 30)) d.unknown = true
    const outcomes: DeviceOutcome[] = devices.map((_, i) => (i < 30 ? 'rejected' : 'delivered'))
    const fields = notifyAccessFields('$e', devices, outcomes)
    expect(fields.devices).toHaveLength(LOGGED_DEVICES)
    expect(fields).toMatchObject({ event_id: '$e', outcomes: { rejected: 30, delivered: 10 }, devices_not_listed: 40 - LOGGED_DEVICES, unknown_pushkeys: 30 })
  })
})

describe('probes and scrapes', () => {
  test('/health, /ready and /metrics are logged at DEBUG, other requests at INFO', async () => {
    h = await startHarness({ env: { AUTH_MODE: 'none', LOGLEVEL: 'INFO' } })
    for (const path of ['/health', '/ready', '/metrics']) {
      const { answer, lines } = await logged(h, 'GET', path)
      expect(answer.status).toBe(200)
      expect(lines).toEqual([])
    }
    expect((await logged(h, 'GET', '/openapi.json')).lines).toEqual([expect.objectContaining({ level: 'info', route: '/openapi.json', status: 200 })])
    await h.close()

    h = await startHarness({ env: { AUTH_MODE: 'none', LOGLEVEL: 'DEBUG' } })
    for (const path of ['/health', '/ready', '/metrics']) {
      const { lines, id } = await logged(h, 'GET', path)
      expect(lines).toEqual([expect.objectContaining({ level: 'debug', msg: 'request', req_id: id, route: path, status: 200 })])
    }
  })

  test('a /ready that fails is logged at INFO, saying why', async () => {
    h = await startHarness({ env: { AUTH_MODE: 'none', LOGLEVEL: 'INFO' } })
    h.startDraining()
    const { answer, lines } = await logged(h, 'GET', '/ready')
    expect(answer.status).toBe(503)
    expect(lines).toEqual([expect.objectContaining({ level: 'info', route: '/ready', status: 503, error: 'draining' })])
  })
})

describe('reports', () => {
  test('every line of a report carries its req_id: the password check, the stored row, the pusher call', async () => {
    h = await startHarness({ env: { LOGLEVEL: 'INFO' } })
    const refused = await logged(h, 'POST', REPORT_PATH, { selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, username: 'alice', password: 'wrong' })
    expect(refused.answer.status).toBe(401)
    expect(refused.lines.map((l) => l.msg)).toEqual(['login refused by the homeserver', 'request'])
    for (const l of refused.lines) expect(l.req_id).toBe(refused.id)
    expect(refused.lines[1]).toMatchObject({ status: 401, errcode: 'M_FORBIDDEN', error: refused.answer.json.error })

    const stored = await logged(h, 'POST', REPORT_PATH, { selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, username: 'alice', password: 'alice-password' })
    expect(stored.answer.status).toBe(200)
    expect(stored.lines.map((l) => l.msg)).toEqual(['token report stored', 'pusher registered', 'request'])
    for (const l of stored.lines) expect(l.req_id).toBe(stored.id)
  })
})
