import { afterEach, describe, expect, test } from 'bun:test'
import { APP_ID, SELECTOR, TOKEN, expectedPusherBody, fullNotification, startHarness, type Harness } from '../harness.ts'

let h: Harness
afterEach(async () => h?.close())

const creds = { username: 'alice', password: 'alice-password' }

describe('token report -> pusher -> notify -> PNM', () => {
  test('a report registers the pusher with the exact body, acting as the user', async () => {
    h = await startHarness()
    const res = await h.report({ selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, ...creds })
    expect(res.status).toBe(200)
    expect(res.json).toEqual({})
    const calls = h.synapse.pusherCalls()
    expect(calls).toHaveLength(1)
    expect(calls[0]!.query).toEqual({ user_id: '@alice:example.org' })
    expect(calls[0]!.authorization).toBe(`Bearer ${h.synapse.asToken}`)
    expect(calls[0]!.body).toEqual(expectedPusherBody(TOKEN))
    // The password-check session is logged out again.
    expect(h.synapse.calls('/_matrix/client/v3/logout')).toHaveLength(1)
    expect(h.synapse.openSessions()).toBe(0)
  })

  test('a notification for the stored token reaches the PNM translated', async () => {
    h = await startHarness()
    await h.report({ selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, ...creds })
    const res = await h.notify(
      fullNotification('$ev1', TOKEN, {
        content: { msgtype: 'm.text', body: 'Hello!' },
        counts: { unread: 2 },
        devices: [{ app_id: APP_ID, pushkey: TOKEN, pushkey_ts: 1700000000, data: {}, tweaks: { sound: 'ring', highlight: false } }],
      }),
    )
    expect(res.status).toBe(200)
    expect(res.json).toEqual({ rejected: [] })
    expect(h.pnm.bodies()).toEqual([
      {
        verb: 'NotifyTextMessage',
        AppId: APP_ID,
        DeviceToken: TOKEN,
        Selector: SELECTOR,
        Badge: 2,
        Sound: 'ring',
        UserName: '@bob:example.org',
        UserDisplayName: 'Bob',
        Message: 'Hello!',
        ContentType: 'text/plain',
        Id: '$ev1',
        ThreadId: '!room:example.org',
      },
    ])
  })
})
