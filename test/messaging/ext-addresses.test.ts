/**
 * AUTH_MODE=ext with messaging on: the CTI's users are the address book of pushes,
 * Fetch Messages and Send Message, as MAPPING_FILE entries are: a user is shown by their
 * main_extension, and that number or a sub-extension names them in a send.
 */
import { afterEach, describe, expect, test } from 'bun:test'
import { startFakeCti, type FakeCti } from '../fakes/cti.ts'
import { APP_ID, SELECTOR, TOKEN } from '../harness.ts'
import { uid } from './events.ts'
import { startMessaging, type Messaging } from './support.ts'

let h: Messaging | undefined
let cti: FakeCti | undefined
afterEach(async () => {
  await h?.close()
  cti?.stop()
  h = cti = undefined
})

const giacomo = uid('giacomo')
const mario = uid('mario')
const GIACOMO = { username: 'giacomo@nethvoice.example.org', password: 'Giacomo,1234' }
const MARIO = { username: 'mario', password: 'Mario,1234' }

async function start() {
  cti = startFakeCti()
  // Matrix passwords differ from the CTI's: only the CTI checks them here.
  h = await startMessaging({ env: { EXT_AUTH_URL: cti.url }, synapse: { users: { giacomo: 'matrix-only', mario: 'matrix-only' } } })
  return h
}

describe('AUTH_MODE=ext: extension numbers in messaging', () => {
  test('the push and the fetch show the sender by main_extension; a send to a number reaches that user', async () => {
    const h = await start()
    expect((await h.report({ selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, ...GIACOMO })).status).toBe(200)
    const room = h.synapse.directChat(mario, giacomo)
    await h.settle()
    const id = h.synapse.sendText(mario, room, 'ciao dal 202')
    await h.settle()

    expect(
      (
        await h.notify({
          event_id: id,
          room_id: room,
          prio: 'high',
          counts: { unread: 1 },
          devices: [{ app_id: APP_ID, pushkey: TOKEN, pushkey_ts: 1_700_000_000, data: { format: 'event_id_only' } }],
        })
      ).status,
    ).toBe(200)
    expect(h.pnm.bodies().at(-1)).toMatchObject({ Selector: SELECTOR, Id: id, UserName: '202', ThreadId: '202', Message: 'ciao dal 202' })

    const fetched = await h.request('POST', '/api/client/fetch_messages', { ...GIACOMO })
    expect(fetched.status).toBe(200)
    expect(fetched.json.received_smss).toEqual([expect.objectContaining({ sms_id: id, sender: '202', stream_id: '202', sms_text: 'ciao dal 202' })])

    // Giacomo answers to the number; Mario sends to one of Giacomo's sub-extensions.
    const answer = await h.request('POST', '/api/client/send_message', { ...GIACOMO, to: '202', body: 'ciao Mario' })
    expect(answer.status).toBe(200)
    expect(h.synapse.rooms.findEvent(answer.json.sms_id)).toMatchObject({ room_id: room, sender: giacomo, content: { body: 'ciao Mario' } })
    const toSub = await h.request('POST', '/api/client/send_message', { ...MARIO, to: '91201', body: 'al cellulare' })
    expect(toSub.status).toBe(200)
    expect(h.synapse.rooms.findEvent(toSub.json.sms_id)).toMatchObject({ room_id: room, sender: mario })
    await h.settle()
    const sent = (await h.request('POST', '/api/client/fetch_messages', { ...GIACOMO })).json.sent_smss
    expect(sent).toEqual([expect.objectContaining({ sms_id: answer.json.sms_id, recipient: '202', stream_id: '202' })])
    // The CTI checked every password; the homeserver was never asked for one.
    expect(h.synapse.calls('/_matrix/client/v3/login')).toHaveLength(0)
  })

  test('without a number in the CTI list a user is shown by localpart; a wrong CTI password is 401 for the fetch', async () => {
    const h = await start()
    cti!.setUser('mario', { password: 'Mario,1234', chat: true, main_extension: '', sub_extensions: [] })
    expect((await h.report({ selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, ...GIACOMO })).status).toBe(200)
    const room = h.synapse.directChat(mario, giacomo)
    const id = h.synapse.sendText(mario, room, 'senza numero')
    await h.settle()
    const fetched = await h.request('POST', '/api/client/fetch_messages', { ...GIACOMO })
    expect(fetched.json.received_smss).toEqual([expect.objectContaining({ sms_id: id, sender: 'mario' })])
    expect((await h.request('POST', '/api/client/fetch_messages', { ...GIACOMO, password: 'matrix-only' })).status).toBe(401)
  })
})
