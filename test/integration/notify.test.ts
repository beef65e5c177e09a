import { afterEach, describe, expect, test } from 'bun:test'
import { tokenHash } from '../../src/secrets.ts'
import { APP_ID, SELECTOR, TOKEN, startHarness, type Harness } from '../harness.ts'

let h: Harness
afterEach(async () => h?.close())

const device = (pushkey = TOKEN) => ({ app_id: APP_ID, pushkey, pushkey_ts: 1732000000, data: { format: 'event_id_only' } })

/** What Synapse sends for a pusher with format event_id_only. */
const eventIdOnly = (eventId = '$ev1', pushkey = TOKEN) => ({
  event_id: eventId,
  room_id: '!room:example.org',
  prio: 'high',
  counts: { unread: 1 },
  devices: [device(pushkey)],
})

async function registered(env: Record<string, string> = {}) {
  h = await startHarness({ env: { AUTH_MODE: 'none', ...env } })
  const res = await h.report({ selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, username: 'alice' })
  expect(res.status).toBe(200)
  return h
}

describe('POST /_matrix/push/v1/notify', () => {
  test('event_id_only: Id, ThreadId, Badge and Sound default reach the PNM', async () => {
    await registered()
    const res = await h.notify(eventIdOnly())
    expect(res.status).toBe(200)
    expect(res.json).toEqual({ rejected: [] })
    expect(h.pnm.bodies()).toEqual([
      { verb: 'NotifyTextMessage', AppId: APP_ID, DeviceToken: TOKEN, Selector: SELECTOR, Badge: 1, Sound: 'default', Id: '$ev1', ThreadId: '!room:example.org' },
    ])
  })

  test('an unknown pushkey, or a known one under another app id, is rejected', async () => {
    await registered()
    const res = await h.notify({ ...eventIdOnly(), devices: [device('unknown-key'), { ...device(), app_id: 'com.other' }] })
    expect(res.status).toBe(200)
    expect(res.json).toEqual({ rejected: ['unknown-key', TOKEN] })
    expect(h.pnm.requests).toHaveLength(0)
  })

  test('a pushkey that is a stored one with a selector glued on is unknown, also after that account was notified', async () => {
    await registered()
    const named = { ...device(), data: { format: 'event_id_only', selector: SELECTOR } }
    expect((await h.notify({ ...eventIdOnly('$named'), devices: [named] })).json).toEqual({ rejected: [] })
    const glued = `${TOKEN}\u0000${SELECTOR}`
    const res = await h.notify(eventIdOnly('$glued', glued))
    expect(res.json).toEqual({ rejected: [glued] })
    expect(h.pnm.bodies().map((b) => b.Id)).toEqual(['$named'])
  })

  test('badge-only updates never reach the phone', async () => {
    await registered()
    const res = await h.notify({ id: '', type: null, sender: '', counts: { unread: 0 }, devices: [device()] })
    expect(res.status).toBe(200)
    expect(res.json).toEqual({ rejected: [] })
    expect(h.pnm.requests).toHaveLength(0)
  })

  test('an event already delivered to the same pushkey is not sent again', async () => {
    await registered()
    expect((await h.notify(eventIdOnly('$dup'))).status).toBe(200)
    expect((await h.notify(eventIdOnly('$dup'))).json).toEqual({ rejected: [] })
    expect((await h.notify(eventIdOnly('$other'))).status).toBe(200)
    expect(h.pnm.bodies().map((b) => b.Id)).toEqual(['$dup', '$other'])
  })

  test('a retry that arrives while the first try is still with the PNM is not sent twice', async () => {
    await registered()
    h.pnm.behave(TOKEN, { kind: 'slow', ms: 150 })
    const [a, b] = await Promise.all([h.notify(eventIdOnly('$race')), h.notify(eventIdOnly('$race'))])
    expect([a.status, b.status]).toEqual([200, 200])
    expect(h.pnm.requests).toHaveLength(1)
  })

  test('PNM 404: the pushkey is rejected and the stored token forgotten', async () => {
    await registered()
    h.pnm.forget(TOKEN)
    const res = await h.notify(eventIdOnly())
    expect(res.json).toEqual({ rejected: [TOKEN] })
    expect((await h.store.getRegistration(SELECTOR))!.tokenMsgs).toBeUndefined()
    expect(await h.store.findByPushkey(APP_ID, TOKEN)).toBeUndefined()
  })

  test('PNM 400: logged, not rejected, not retried, 200 to Synapse', async () => {
    await registered()
    h.pnm.behave(TOKEN, { kind: 'status', status: 400, body: '{"code":400,"response":"Bad request"}' })
    const res = await h.notify(eventIdOnly())
    expect(res.status).toBe(200)
    expect(res.json).toEqual({ rejected: [] })
    expect(h.pnm.requests).toHaveLength(1)
    expect(h.logs.parsed().some((l) => l.level === 'error' && /refused the request/.test(l.msg))).toBe(true)
    expect((await h.store.getRegistration(SELECTOR))!.tokenMsgs).toBe(TOKEN)
  })

  test('a PNM that quotes the device token: neither the log nor the delivery journal holds it', async () => {
    await registered()
    h.pnm.behave(TOKEN, { kind: 'status', status: 400, body: JSON.stringify({ code: 400, response: `Invalid DeviceToken ${TOKEN}` }) })
    expect((await h.notify(eventIdOnly())).status).toBe(200)
    const line = h.logs.parsed().find((l) => /refused the request/.test(l.msg))
    expect(line?.detail).toBe(`HTTP 400, code 400: Invalid DeviceToken [token ${tokenHash(TOKEN)}]`)
    expect(h.logs.lines.join('\n')).not.toContain(TOKEN)
    await h.journal.flush()
    const [entry] = await h.store.deliveries(SELECTOR)
    expect(entry).toMatchObject({ outcome: 'dropped', detail: `HTTP 400, code 400: Invalid DeviceToken [token ${tokenHash(TOKEN)}]` })
  })

  test('PNM 5xx: retried, then 502 so that Synapse retries; the token is kept', async () => {
    await registered()
    h.pnm.behave(TOKEN, { kind: 'status', status: 503 })
    const res = await h.notify(eventIdOnly())
    expect(res.status).toBe(502)
    expect(res.json.errcode).toBeString()
    expect(h.pnm.requests).toHaveLength(3)
    expect((await h.store.getRegistration(SELECTOR))!.tokenMsgs).toBe(TOKEN)
  })

  test('PNM recovers on the retry: delivered, 200', async () => {
    await registered()
    h.pnm.behave(TOKEN, { kind: 'sequence', steps: [{ kind: 'status', status: 500 }, { kind: 'ok' }] })
    const res = await h.notify(eventIdOnly())
    expect(res.status).toBe(200)
    expect(h.pnm.requests).toHaveLength(2)
  })

  test('PNM_VERB=NotifyGenericTextMessage with event_id_only sends the fallback text', async () => {
    await registered({ PNM_VERB: 'NotifyGenericTextMessage', NOTIFY_FALLBACK_TEXT: 'Neue Nachricht' })
    await h.notify(eventIdOnly())
    expect(h.pnm.bodies()[0]).toMatchObject({ verb: 'NotifyGenericTextMessage', Message: 'Neue Nachricht', ContentType: 'text/plain' })
  })

  test('devices of one request are sent in parallel: a slow one does not delay the other', async () => {
    await registered()
    await h.report({ selector: 'FAST:1', token_msgs: 'fast-token', app_id_msgs: APP_ID, username: 'bob' })
    h.pnm.behave(TOKEN, { kind: 'slow', ms: 400 })
    const pending = h.notify({ ...eventIdOnly('$par'), devices: [device(), device('fast-token')] })
    await Bun.sleep(150)
    // The fast device has been sent while the slow one is still waiting.
    expect(h.pnm.bodies().map((b) => b.DeviceToken)).toContain('fast-token')
    expect((await pending).status).toBe(200)
  })

  test("Synapse's real bodies are accepted: extra fields, nulls, empty sender, unread 0", async () => {
    await registered()
    const res = await h.notify({
      id: '$full',
      event_id: '$full',
      room_id: '!r:example.org',
      type: 'm.room.message',
      sender: '@bob:example.org',
      sender_display_name: 'Bob',
      room_name: null,
      prio: 'low',
      membership: 'invite',
      user_is_target: true,
      content: { msgtype: 'm.text', body: 'Hi there', 'm.relates_to': { x: 1 } },
      counts: { unread: 0 },
      devices: [{ ...device(), tweaks: { highlight: false } }],
      something_new: { nested: [1, 2] },
    })
    expect(res.status).toBe(200)
    expect(h.pnm.bodies()[0]).toMatchObject({ Badge: 0, Sound: 'default', Message: 'Hi there', UserDisplayName: 'Bob' })
  })

  test('bad bodies: 400 M_NOT_JSON / M_BAD_JSON; 413 over 512 KiB', async () => {
    h = await startHarness()
    const notJson = await h.request('POST', '/_matrix/push/v1/notify', 'hello', { 'content-type': 'application/json' })
    expect([notJson.status, notJson.json.errcode]).toEqual([400, 'M_NOT_JSON'])
    const noDevices = await h.request('POST', '/_matrix/push/v1/notify', { notification: { event_id: '$e' } })
    expect([noDevices.status, noDevices.json.errcode]).toEqual([400, 'M_BAD_JSON'])
    expect(noDevices.json.error).toContain('devices')
    const noNotification = await h.request('POST', '/_matrix/push/v1/notify', { devices: [] })
    expect([noNotification.status, noNotification.json.errcode]).toEqual([400, 'M_BAD_JSON'])
    const big = await h.request('POST', '/_matrix/push/v1/notify', JSON.stringify({ notification: { devices: [], pad: 'x'.repeat(512 * 1024) } }))
    expect([big.status, big.json.errcode]).toEqual([413, 'M_TOO_LARGE'])
    const justUnder = await h.request('POST', '/_matrix/push/v1/notify', JSON.stringify({ notification: { devices: [], pad: 'x'.repeat(500 * 1024) } }))
    expect(justUnder.status).toBe(200)
  })

  test('unknown paths 404 and wrong methods 405, with M_UNRECOGNIZED', async () => {
    h = await startHarness()
    const unknown = await h.request('POST', '/_matrix/push/v1/nope', {})
    expect([unknown.status, unknown.json.errcode]).toEqual([404, 'M_UNRECOGNIZED'])
    const wrong = await h.request('GET', '/_matrix/push/v1/notify')
    expect([wrong.status, wrong.json.errcode]).toEqual([405, 'M_UNRECOGNIZED'])
    const wrongReport = await h.request('GET', '/api/client/push_token_report')
    expect(wrongReport.status).toBe(405)
  })

  test('GET /health answers 200', async () => {
    h = await startHarness()
    const res = await h.request('GET', '/health')
    expect(res.status).toBe(200)
  })
})
