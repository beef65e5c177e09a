/**
 * Two accounts on one phone and the delivery journal, through the fake Synapse's
 * own push (data minus url echoed, rejections per user) into the app.
 */
import { afterEach, describe, expect, test } from 'bun:test'
import { JOURNAL_ROWS_PER_ACCOUNT } from '../../src/store/types.ts'
import { APP_ID, SELECTOR, TOKEN, eventually, startHarness, type Harness } from '../harness.ts'

const BOB_SELECTOR = 'B0B00E0E6E553673C54F29105A0647204C416A2A:0000B0B0'
const ALICE = '@alice:example.org'
const BOB = '@bob:example.org'

let h: Harness
afterEach(() => h?.close())

const reportAlice = (token = TOKEN) => h.report({ selector: SELECTOR, token_msgs: token, app_id_msgs: APP_ID, username: 'alice', password: 'alice-password' })
const reportBob = (token = TOKEN) => h.report({ selector: BOB_SELECTOR, token_msgs: token, app_id_msgs: APP_ID, username: 'bob', password: 'bob-password' })
const send = (url: string, body: unknown) =>
  h.app.handle(new Request(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }))
const push = (user: string, eventId: string) => h.synapse.push(user, { event_id: eventId }, { send })

describe('two accounts of two users on one device token', () => {
  test("each user's message reaches the phone with that account's Selector; removing one leaves the other working", async () => {
    h = await startHarness()
    expect((await reportAlice()).status).toBe(200)
    expect((await reportBob()).status).toBe(200)
    expect(h.synapse.pushers().map((p) => [p.user_id, p.data.selector])).toEqual([
      [ALICE, SELECTOR],
      [BOB, BOB_SELECTOR],
    ])

    expect((await push(ALICE, '$for-alice')).map((r) => r.body)).toEqual([{ rejected: [] }])
    expect((await push(BOB, '$for-bob')).map((r) => r.body)).toEqual([{ rejected: [] }])
    expect(h.pnm.bodies().map((b) => [b.Id, b.Selector, b.DeviceToken])).toEqual([
      ['$for-alice', SELECTOR, TOKEN],
      ['$for-bob', BOB_SELECTOR, TOKEN],
    ])

    // One event both users are notified of (a room they share): each account gets its own push.
    await push(ALICE, '$shared')
    await push(BOB, '$shared')
    expect(h.pnm.bodies().filter((b) => b.Id === '$shared').map((b) => b.Selector)).toEqual([SELECTOR, BOB_SELECTOR])

    // Alice removes her account: only her pusher goes (kind: null as alice), bob's keeps working.
    const removed = await h.request('POST', '/api/client/account_removal_report', { selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, username: 'alice', password: 'alice-password' })
    expect(removed.status).toBe(200)
    const deletes = h.synapse.pusherCalls().filter((c) => c.body.kind === null)
    expect(deletes.map((c) => [c.query.user_id, c.body.pushkey])).toEqual([[ALICE, TOKEN]])
    expect(h.synapse.pushers().map((p) => p.user_id)).toEqual([BOB])
    expect((await push(BOB, '$after-removal')).map((r) => r.body)).toEqual([{ rejected: [] }])
    expect(h.pnm.bodies().at(-1)).toMatchObject({ Id: '$after-removal', Selector: BOB_SELECTOR })
  })

  test("a changed token deletes only that account's pusher of the old token", async () => {
    h = await startHarness()
    await reportAlice()
    await reportBob()
    await reportAlice('alice-new-token-0123456789')
    expect(h.synapse.pushers().map((p) => [p.user_id, p.pushkey]).sort()).toEqual([
      [ALICE, 'alice-new-token-0123456789'],
      [BOB, TOKEN],
    ])
    await push(BOB, '$bob-still')
    expect(h.pnm.bodies().at(-1)).toMatchObject({ Id: '$bob-still', Selector: BOB_SELECTOR, DeviceToken: TOKEN })
  })

  test("a pusher naming an account that no longer has this token is rejected, never sent with another account's selector", async () => {
    h = await startHarness()
    await reportAlice()
    await reportBob()
    const res = await h.notify({ event_id: '$stale', room_id: '!r:example.org', devices: [{ app_id: APP_ID, pushkey: TOKEN, data: { selector: 'GONE:1' } }] })
    expect(res.json).toEqual({ rejected: [TOKEN] })
    expect(h.pnm.bodies()).toEqual([])
  })

  test('a PNM 404 rejects the token for every account on the device', async () => {
    h = await startHarness()
    await reportAlice()
    await reportBob()
    h.pnm.forget(TOKEN)
    expect((await push(ALICE, '$gone')).map((r) => r.body)).toEqual([{ rejected: [TOKEN] }])
    expect((await h.store.getRegistration(SELECTOR))!.tokenMsgs).toBeUndefined()
    expect((await h.store.getRegistration(BOB_SELECTOR))!.tokenMsgs).toBeUndefined()
    // Bob's pusher answers rejected at its next push without asking the PNM again.
    const sent = h.pnm.requests.length
    expect((await push(BOB, '$gone-too')).map((r) => r.body)).toEqual([{ rejected: [TOKEN] }])
    expect(h.pnm.requests.length).toBe(sent)
    expect(h.synapse.pushers()).toEqual([])
  })
})

describe('pushers registered before they named their account', () => {
  /** A pusher as this proxy (append: false, no selector) or the Go proxy registered it. */
  async function oldPusher(user: string) {
    const url = new URL('/_matrix/client/v3/pushers/set', h.synapse.url)
    url.searchParams.set('user_id', user)
    const res = await fetch(url, {
      method: 'POST',
      headers: { authorization: `Bearer ${h.synapse.asToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        kind: 'http', app_id: APP_ID, pushkey: TOKEN, app_display_name: APP_ID, device_display_name: 'Acrobits Softphone', lang: 'en', append: false,
        data: { url: 'https://push.example.org/_matrix/push/v1/notify', format: 'event_id_only' },
      }),
    })
    expect(res.status).toBe(200)
  }

  test('are found by pushkey and registered again once, in the background, with their selector', async () => {
    h = await startHarness()
    await reportAlice()
    await reportBob()
    // As before this release: append: false left bob's pusher only, without a selector.
    await oldPusher(BOB)
    expect(h.synapse.pushers().map((p) => [p.user_id, p.data.selector])).toEqual([[BOB, undefined]])
    const calls = h.synapse.pusherCalls().length

    expect((await push(BOB, '$old')).map((r) => r.body)).toEqual([{ rejected: [] }])
    expect(h.pnm.bodies().at(-1)).toMatchObject({ Id: '$old', DeviceToken: TOKEN })
    // Both accounts of the device get a pusher of their own, with their selector.
    await eventually(() => h.synapse.pushers().length === 2 && h.synapse.pushers().every((p) => p.data.selector !== undefined))
    expect(h.synapse.pushers().map((p) => [p.user_id, p.data.selector]).sort()).toEqual([
      [ALICE, SELECTOR],
      [BOB, BOB_SELECTOR],
    ])
    expect(h.synapse.pusherCalls().slice(calls).every((c) => c.body.append === true)).toBe(true)
    expect(h.logs.parsed().some((l) => l.msg === 'pusher registered before pushers named their account; registering it again with its selector')).toBe(true)

    // Once: another old-style notification for the same pushkey queues nothing more.
    const after = h.synapse.pusherCalls().length
    await h.notify({ event_id: '$old-2', room_id: '!r:example.org', devices: [{ app_id: APP_ID, pushkey: TOKEN, data: { format: 'event_id_only' } }] })
    await Bun.sleep(100)
    expect(h.synapse.pusherCalls().length).toBe(after)
  })
})

describe('the delivery journal', () => {
  test('records each outcome off the request path and keeps the last rows per account', async () => {
    h = await startHarness({ compose: { journalFlushMs: 60_000 } })
    await reportAlice()
    await push(ALICE, '$one')
    h.pnm.behave(TOKEN, { kind: 'status', status: 400 })
    await push(ALICE, '$two')
    // Nothing written yet: the notify answered without a database write for the journal.
    expect(await h.store.deliveries(SELECTOR)).toEqual([])
    await h.journal.flush()
    const rows = await h.store.deliveries(SELECTOR)
    expect(rows.map((r) => [r.eventId, r.outcome, r.pnmStatus])).toEqual([
      ['$two', 'dropped', 400],
      ['$one', 'delivered', 200],
    ])
    expect(rows[0]!.detail).toContain('HTTP 400')
    for (const r of rows) expect(r.latencyMs).toBeGreaterThanOrEqual(0)
    expect(JSON.stringify(rows)).not.toContain(TOKEN)
    expect(JSON.stringify(rows)).not.toContain('Hello')

    h.pnm.behave(TOKEN, { kind: 'ok' })
    for (let i = 0; i < JOURNAL_ROWS_PER_ACCOUNT + 5; i++) await push(ALICE, `$bulk-${i}`)
    await h.journal.flush()
    const kept = await h.store.deliveries(SELECTOR)
    expect(kept).toHaveLength(JOURNAL_ROWS_PER_ACCOUNT)
    expect(kept[0]!.eventId).toBe(`$bulk-${JOURNAL_ROWS_PER_ACCOUNT + 4}`)
    expect(kept.at(-1)!.eventId).toBe('$bulk-5')
  })

  test('the journal of a removed account goes with it', async () => {
    h = await startHarness({ compose: { journalFlushMs: 60_000 } })
    await reportAlice()
    await push(ALICE, '$x')
    await h.journal.flush()
    expect(await h.store.deliveries(SELECTOR)).toHaveLength(1)
    await h.request('POST', '/api/client/account_removal_report', { selector: SELECTOR, username: 'alice', password: 'alice-password' })
    expect(await h.store.deliveries(SELECTOR)).toEqual([])
  })
})

describe('two accounts of the same user on one device token', () => {
  const C_SELECTOR = 'CCCC0E0E6E553673C54F29105A0647204C416A2A:0000CCCC'
  const reportAliceC = (token = TOKEN) => h.report({ selector: C_SELECTOR, token_msgs: token, app_id_msgs: APP_ID, username: 'alice', password: 'alice-password' })

  test('share one Synapse pusher; removing one account re-points it at the other instead of deleting it', async () => {
    h = await startHarness()
    await reportAlice()
    await reportAliceC()
    expect(h.synapse.pushers().map((p) => [p.user_id, p.data.selector])).toEqual([[ALICE, C_SELECTOR]])
    const removed = await h.request('POST', '/api/client/account_removal_report', { selector: C_SELECTOR, username: 'alice', password: 'alice-password' })
    expect(removed.status).toBe(200)
    // Already re-pointed when the removal is answered: a push Synapse sends next names the remaining
    // account (one naming the removed account was rejected, and Synapse deleted the pusher).
    expect(h.synapse.pushers().map((p) => [p.user_id, p.data.selector])).toEqual([[ALICE, SELECTOR]])
    await eventually(async () => (await h.store.pendingJobs()).length === 0)
    expect(h.synapse.pusherCalls().filter((c) => c.body.kind === null)).toEqual([])
    expect(h.synapse.pushers().map((p) => [p.user_id, p.data.selector])).toEqual([[ALICE, SELECTOR]])
    await push(ALICE, '$still-alice')
    expect(h.pnm.bodies().at(-1)).toMatchObject({ Id: '$still-alice', Selector: SELECTOR })
  })

  test("one account's new token leaves the shared pusher of the old token to the other account", async () => {
    h = await startHarness()
    await reportAlice()
    await reportAliceC()
    await reportAlice('alice-second-phone-token-0123')
    await eventually(async () => (await h.store.pendingJobs()).length === 0)
    expect(h.synapse.pushers().map((p) => [p.pushkey, p.data.selector]).sort()).toEqual([
      [TOKEN, C_SELECTOR],
      ['alice-second-phone-token-0123', SELECTOR],
    ].sort())
  })

  test('removing the last account of the user on that token deletes the pusher', async () => {
    h = await startHarness()
    await reportAlice()
    await reportAliceC()
    await h.request('POST', '/api/client/account_removal_report', { selector: C_SELECTOR, username: 'alice', password: 'alice-password' })
    await h.request('POST', '/api/client/account_removal_report', { selector: SELECTOR, username: 'alice', password: 'alice-password' })
    await eventually(async () => (await h.store.pendingJobs()).length === 0)
    expect(h.synapse.pushers()).toEqual([])
  })
})
