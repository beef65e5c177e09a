import { describe, expect, test } from 'bun:test'
import { isBadgeOnly, translateNotification, truncateText } from '../../src/gateway/translate.ts'
import type { Device, Notification } from '../../src/gateway/schema.ts'

const account = { selector: 'SEL:1', appId: 'com.acrobits.softphone', token: 'tok' }
const device: Device = { app_id: 'com.acrobits.softphone', pushkey: 'tok' }
const opts = { verb: 'NotifyTextMessage' as const, fallbackText: 'New message' }

describe('translateNotification', () => {
  test('full format maps every field', () => {
    const n: Notification = {
      event_id: '$e',
      room_id: '!r:x',
      sender: '@a:x',
      sender_display_name: 'Alice',
      content: { msgtype: 'm.text', body: 'Hi' },
      counts: { unread: 3, missed_calls: 1 },
      devices: [{ ...device, tweaks: { sound: 'bing' } }],
    }
    expect(translateNotification(n, n.devices[0]!, account, opts)).toEqual({
      verb: 'NotifyTextMessage',
      AppId: 'com.acrobits.softphone',
      DeviceToken: 'tok',
      Selector: 'SEL:1',
      Badge: 4,
      Sound: 'bing',
      UserName: '@a:x',
      UserDisplayName: 'Alice',
      Message: 'Hi',
      ContentType: 'text/plain',
      Id: '$e',
      ThreadId: '!r:x',
    })
  })

  test('event_id_only yields Id, ThreadId, Badge and Sound "default" only', () => {
    const n: Notification = { event_id: '$e', room_id: '!r:x', prio: 'high', counts: { unread: 0 }, devices: [device] }
    expect(translateNotification(n, device, account, opts)).toEqual({
      verb: 'NotifyTextMessage',
      AppId: 'com.acrobits.softphone',
      DeviceToken: 'tok',
      Selector: 'SEL:1',
      Badge: 0,
      Sound: 'default',
      Id: '$e',
      ThreadId: '!r:x',
    })
  })

  test('fields without value are left out, never null or ""', () => {
    const n: Notification = {
      event_id: '$e',
      room_id: '',
      sender: '',
      sender_display_name: null,
      type: null,
      content: { body: '' },
      devices: [{ ...device, tweaks: { sound: 5 } }],
    }
    const out = translateNotification(n, n.devices[0]!, account, opts)
    expect(out).toEqual({ verb: 'NotifyTextMessage', AppId: account.appId, DeviceToken: 'tok', Selector: 'SEL:1', Sound: 'default', Id: '$e' })
    expect(Object.values(out)).not.toContain(null)
    expect(Object.values(out)).not.toContain('')
  })

  test('display name falls back to the sender', () => {
    const n: Notification = { event_id: '$e', sender: '@b:x', devices: [device] }
    expect(translateNotification(n, device, account, opts).UserDisplayName).toBe('@b:x')
  })

  test('badge counts either side when only one is present', () => {
    const n: Notification = { event_id: '$e', counts: { missed_calls: 2 }, devices: [device] }
    expect(translateNotification(n, device, account, opts).Badge).toBe(2)
    expect(translateNotification({ ...n, counts: {} }, device, account, opts).Badge).toBeUndefined()
  })

  test('generic verb: message text when known, else the fallback, always text/plain', () => {
    const generic = { verb: 'NotifyGenericTextMessage' as const, fallbackText: 'You have a message' }
    const known: Notification = { event_id: '$e', content: { body: 'Yo' }, devices: [device] }
    expect(translateNotification(known, device, account, generic)).toMatchObject({ verb: 'NotifyGenericTextMessage', Message: 'Yo', ContentType: 'text/plain' })
    const unknown: Notification = { event_id: '$e', devices: [device] }
    expect(translateNotification(unknown, device, account, generic)).toMatchObject({ Message: 'You have a message', ContentType: 'text/plain' })
    // The message verb without a text sends neither Message nor ContentType.
    const plain = translateNotification(unknown, device, account, opts)
    expect(plain.Message).toBeUndefined()
    expect(plain.ContentType).toBeUndefined()
  })

  test('long messages are cut to 1000 characters', () => {
    const n: Notification = { event_id: '$e', content: { body: 'x'.repeat(5000) }, devices: [device] }
    expect(translateNotification(n, device, account, opts).Message).toBe('x'.repeat(1000))
  })

  test('badge-only updates are recognised', () => {
    expect(isBadgeOnly({ id: '', type: null, sender: '', counts: { unread: 0 }, devices: [device] })).toBe(true)
    expect(isBadgeOnly({ event_id: '$e', devices: [device] })).toBe(false)
  })
})

describe('truncateText', () => {
  test('never splits a surrogate pair', () => {
    const text = 'a' + '😀'.repeat(600) // 1 + 1200 code units
    const cut = truncateText(text, 1000)
    expect(cut.length).toBe(999)
    expect(cut).toBe('a' + '😀'.repeat(499))
  })

  test('never splits a grapheme cluster (flag, accent, skin tone)', () => {
    const flag = '🇫🇷' // two regional indicators, 4 code units
    expect(truncateText('ab' + flag, 4)).toBe('ab')
    expect(truncateText('e\u0301e\u0301', 3)).toBe('e\u0301')
    expect(truncateText('👍🏽👍🏽', 5)).toBe('👍🏽')
  })

  test('short text is untouched', () => {
    expect(truncateText('héllo', 1000)).toBe('héllo')
    expect(truncateText('x'.repeat(1000), 1000)).toHaveLength(1000)
  })
})
