/**
 * Two accounts of two users on one phone, on the built executable: the fake Synapse
 * pushes to the pushers the binary registered, as Synapse does.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { startFakePnm, type FakePnm } from '../fakes/pnm.ts'
import { startFakeSynapse, type FakeSynapse } from '../fakes/synapse.ts'
import { APP_ID, SELECTOR, TOKEN, tempDir } from '../harness.ts'
import { startBinary, type RunningBinary } from './binary.ts'

const BOB_SELECTOR = 'B0B00E0E6E553673C54F29105A0647204C416A2A:0000B0B0'
let synapse: FakeSynapse
let pnm: FakePnm
let dir: string
let b: RunningBinary

beforeAll(async () => {
  synapse = startFakeSynapse()
  pnm = startFakePnm()
  dir = tempDir('m2a-accounts-')
  b = await startBinary({
    MATRIX_HOMESERVER_URL: synapse.url,
    MATRIX_AS_TOKEN: synapse.asToken,
    PROXY_URL: 'https://push.example.org',
    PNM_URL: pnm.url,
    PUSH_TOKEN_DB_PATH: join(dir, 'tokens.db'),
  })
})
afterAll(async () => {
  if (b?.proc.exitCode === null) await b.stop()
  synapse.stop()
  pnm.stop()
  rmSync(dir, { recursive: true, force: true })
})

const post = (path: string, body: unknown) =>
  fetch(b.url + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })

test("two users' accounts on one token: each message reaches the phone with its account's Selector; removing one leaves the other", async () => {
  expect((await post('/api/client/push_token_report', { selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, username: 'alice', password: 'alice-password' })).status).toBe(200)
  expect((await post('/api/client/push_token_report', { selector: BOB_SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, username: 'bob', password: 'bob-password' })).status).toBe(200)
  expect(synapse.pusherCalls().map((c) => [c.query.user_id, c.body.append, c.body.data.selector])).toEqual([
    ['@alice:example.org', true, SELECTOR],
    ['@bob:example.org', true, BOB_SELECTOR],
  ])

  await synapse.push('@alice:example.org', { event_id: '$to-alice' }, { gateway: b.url })
  await synapse.push('@bob:example.org', { event_id: '$to-bob' }, { gateway: b.url })
  expect(pnm.bodies().map((p) => [p.Id, p.Selector, p.DeviceToken])).toEqual([
    ['$to-alice', SELECTOR, TOKEN],
    ['$to-bob', BOB_SELECTOR, TOKEN],
  ])

  expect((await post('/api/client/account_removal_report', { selector: SELECTOR, username: 'alice', password: 'alice-password' })).status).toBe(200)
  expect(synapse.pushers().map((p) => p.user_id)).toEqual(['@bob:example.org'])
  expect(await synapse.push('@alice:example.org', { event_id: '$to-alice-2' }, { gateway: b.url })).toEqual([])
  const last = await synapse.push('@bob:example.org', { event_id: '$to-bob-2' }, { gateway: b.url })
  expect(last.map((r) => r.body)).toEqual([{ rejected: [] }])
  expect(pnm.bodies().at(-1)).toMatchObject({ Id: '$to-bob-2', Selector: BOB_SELECTOR })
}, 60_000)

test('a pusher registered before pushers named their account is served, then registered again with its selector', async () => {
  const OLD = 'old-style-device-token-0123456789'
  const OLD_SELECTOR = '0LD00E0E6E553673C54F29105A0647204C416A2A:00000010'
  expect((await post('/api/client/push_token_report', { selector: OLD_SELECTOR, token_msgs: OLD, app_id_msgs: APP_ID, username: 'alice', password: 'alice-password' })).status).toBe(200)
  // As an earlier release registered it: append false, no selector in data.
  const url = new URL('/_matrix/client/v3/pushers/set', synapse.url)
  url.searchParams.set('user_id', '@alice:example.org')
  await fetch(url, {
    method: 'POST',
    headers: { authorization: `Bearer ${synapse.asToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ kind: 'http', app_id: APP_ID, pushkey: OLD, app_display_name: APP_ID, device_display_name: 'Acrobits Softphone', lang: 'en', append: false, data: { url: 'https://push.example.org/_matrix/push/v1/notify', format: 'event_id_only' } }),
  })
  const old = () => synapse.pushers().find((p) => p.pushkey === OLD)!
  expect(old().data.selector).toBeUndefined()
  await synapse.push('@alice:example.org', { event_id: '$old-style' }, { gateway: b.url })
  expect(pnm.bodies().at(-1)).toMatchObject({ Id: '$old-style', Selector: OLD_SELECTOR, DeviceToken: OLD })
  const end = Date.now() + 10_000
  while (old().data.selector === undefined && Date.now() < end) await Bun.sleep(50)
  expect(old().data.selector).toBe(OLD_SELECTOR)
}, 60_000)

