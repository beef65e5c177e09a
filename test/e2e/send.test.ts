/**
 * Send Message on the executable: env in, HTTP in, transactions from the fake Synapse, pushes to the
 * fake PNM; the same id everywhere; a restart keeps the outbox (a repeat is still recognised).
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { join } from 'node:path'
import type { FakePnm } from '../fakes/pnm.ts'
import type { FakeSynapse } from '../fakes/synapse.ts'
import { APP_ID, SELECTOR, TOKEN, eventually } from '../harness.ts'
import { startBinary, startExecutableFakes, stopExecutableFakes, type RunningBinary } from './binary.ts'

let synapse: FakeSynapse
let pnm: FakePnm
let dir: string
let env: Record<string, string>
const running: RunningBinary[] = []

beforeAll(() => {
  ;({ synapse, pnm, dir } = startExecutableFakes({ users: { alice: 'alice-password', bob: 'bob-password' }, sender: { retryDelayMs: () => 50 } }))
  env = {
    MATRIX_HOMESERVER_URL: synapse.url,
    MATRIX_AS_TOKEN: synapse.asToken,
    MATRIX_HS_TOKEN: synapse.hsToken,
    MATRIX_SERVER_NAME: synapse.serverName,
    PROXY_URL: 'https://push.example.org',
    PNM_URL: pnm.url,
    PUSH_TOKEN_DB_PATH: join(dir, 'state.db'),
    LOGLEVEL: 'debug',
  }
})

afterAll(() => stopExecutableFakes({ synapse, pnm, dir }, running))

async function start() {
  const b = await startBinary(env)
  running.push(b)
  synapse.connectAppservice({ url: b.url })
  return b
}
const post = async (url: string, body: unknown) => {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  return { status: r.status, json: (await r.json()) as any }
}

describe('Send Message on the executable', () => {
  test('alice sends to bob: bob’s fetch and push carry the id alice got; her other device sees it; a repeat after a restart is not sent again', async () => {
    const b = await start()
    expect((await post(`${b.url}/api/client/push_token_report`, { selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, username: 'bob', password: 'bob-password' })).status).toBe(200)

    const sent = await post(`${b.url}/api/client/send_message`, { username: 'alice', password: 'alice-password', to: 'bob', body: 'hello from the phone' })
    expect(sent.status).toBe(200)
    expect(Object.keys(sent.json)).toEqual(['sms_id'])
    const id: string = sent.json.sms_id
    const room = synapse.rooms.findEvent(id)!.room_id
    await synapse.appservice.flushed()

    const bobFetch = await post(`${b.url}/api/client/fetch_messages`, { username: 'bob', password: 'bob-password', device: 'bob-phone' })
    expect(bobFetch.json.received_smss).toEqual([expect.objectContaining({ sms_id: id, sender: 'alice', stream_id: 'alice', sms_text: 'hello from the phone' })])

    const notify = await post(`${b.url}/_matrix/push/v1/notify`, {
      notification: { event_id: id, room_id: room, prio: 'high', counts: { unread: 1 }, devices: [{ app_id: APP_ID, pushkey: TOKEN, pushkey_ts: 1, data: { format: 'event_id_only' } }] },
    })
    expect(notify.status).toBe(200)
    expect(pnm.bodies().at(-1)).toMatchObject({ Id: id, UserName: 'alice', ThreadId: 'alice' })

    const tablet = await post(`${b.url}/api/client/fetch_messages`, { username: 'alice', password: 'alice-password', device: 'alice-tablet' })
    expect(tablet.json.sent_smss).toEqual([expect.objectContaining({ sms_id: id, recipient: 'bob', stream_id: 'bob' })])

    // The app retries the send whose answer it lost, across a restart of the proxy.
    expect(await b.stop()).toBe(0)
    const again = await start()
    const repeat = await post(`${again.url}/api/client/send_message`, { username: 'alice', password: 'alice-password', to: 'bob', body: 'hello from the phone' })
    expect(repeat.json).toEqual({ sms_id: id })
    expect(synapse.rooms.timeline(room).filter((e) => e.type === 'm.room.message')).toHaveLength(1)
    expect(again.lines.join('\n')).not.toContain('alice-password')
    expect(await again.stop()).toBe(0)
  })

  test('to a user the homeserver does not have: 400 naming to, no room made, the reason in the access line', async () => {
    const b = await start()
    const rooms = synapse.calls('/_matrix/client/v3/createRoom').length
    const sent = await post(`${b.url}/api/client/send_message`, { username: 'alice', password: 'alice-password', to: 'nobody', body: 'anyone there?' })
    expect(sent).toEqual({ status: 400, json: { error: 'to: @nobody:example.org is not a user of this homeserver' } })
    expect(synapse.calls('/_matrix/client/v3/createRoom')).toHaveLength(rooms)
    // Lines leave at the end of an event-loop turn: the answer can arrive before its line.
    const access = await eventually(() => b.lines.map((l) => JSON.parse(l)).find((l) => l.msg === 'request' && l.route === '/api/client/send_message'))
    expect(access).toMatchObject({ status: 400, error: 'to: @nobody:example.org is not a user of this homeserver' })
    expect(await b.stop()).toBe(0)
  })
})
