import { describe, expect, test } from 'bun:test'
import { normalizeFetch, renderDelivery, rfc3339 } from '../../src/messages/fetch.ts'
import { parseClientEvent } from '../../src/messages/ingest.ts'
import type { DeliveryRow, Member, Room } from '../../src/messages/index-store.ts'
import { parseMappingFile } from '../../src/report/mapping.ts'
import { refusal } from './refusal.ts'

const mapping = (() => {
  const parsed = parseMappingFile(JSON.stringify([{ matrix_id: '@carol:example.org', number: '+4930123' }]))
  if (!parsed.ok) throw new Error(parsed.error)
  return parsed.entries
})()
const book = { serverName: 'example.org', mapping }
const message = (over: Partial<DeliveryRow['message']> = {}): DeliveryRow['message'] => ({
  ord: 1,
  eventId: '$e1',
  roomId: '!r:example.org',
  sender: '@alice:example.org',
  ts: Date.UTC(2026, 11, 1, 12, 0, 0, 123),
  text: 'hello',
  authorName: 'Alice',
  redacted: false,
  ...over,
})
const direct: Room = { roomId: '!r:example.org', kind: 'direct', isDirect: true, conversation: '!r:example.org' }
const member = (userId: string, membership: Member['membership'] = 'join'): Member => ({ roomId: '!r:example.org', userId, membership, sinceOrd: 0, fromStream: true, updatedAt: 0 })

describe('normalizeFetch', () => {
  test('reads both spellings, trims everything but the password, and empty means not given', () => {
    expect(normalizeFetch({ username: ' bob ', password: ' pw ', last_known_sms_id: ' $a ', last_known_sent_sms_id: '', device: ' d1 ' })).toEqual({
      username: 'bob',
      password: ' pw ',
      lastId: '$a',
      lastSentId: undefined,
      device: 'd1',
    })
    expect(normalizeFetch({ last_id: '$x', last_known_sms_id: '$y', password: '' })).toMatchObject({ lastId: '$x', password: undefined })
  })

  test('a control character in any field, or a username or device past 255 bytes, is a 400 naming the field', () => {
    expect(refusal(() => normalizeFetch({ device: 'd\u00001' }))).toMatchObject({ status: 400, message: 'device contains a control character' })
    expect(refusal(() => normalizeFetch({ last_known_sms_id: '$a\u0000' }))).toMatchObject({ status: 400, message: 'last_id contains a control character' })
    expect(refusal(() => normalizeFetch({ last_sent_id: '$a\nb' }))).toMatchObject({ status: 400, message: 'last_sent_id contains a control character' })
    expect(refusal(() => normalizeFetch({ username: 'bo\u0007b' }))).toMatchObject({ status: 400, message: 'username contains a control character' })
    expect(refusal(() => normalizeFetch({ password: 'pw\u0000' }))).toMatchObject({ status: 400, message: 'password contains a control character' })
    expect(refusal(() => normalizeFetch({ username: 'é'.repeat(128) }))).toMatchObject({ status: 400, message: 'username is longer than 255 bytes' })
    expect(refusal(() => normalizeFetch({ device: 'd'.repeat(256) }))).toMatchObject({ status: 400, message: 'device is longer than 255 bytes' })
    expect(() => normalizeFetch({ username: 'u'.repeat(255), device: 'd'.repeat(255), password: ' pass word ' })).not.toThrow()
  })
})

describe('renderDelivery', () => {
  test('a received direct message: the peer by MAPPING_FILE number, localpart, or full ID', () => {
    expect(renderDelivery({ seq: 1, sent: false, message: message({ sender: '@carol:example.org' }) }, '@bob:example.org', direct, [], undefined, book)).toEqual({
      sms_id: '$e1',
      sending_date: '2026-12-01T12:00:00Z',
      sender: '+4930123',
      sms_text: 'hello',
      content_type: 'text/plain',
      stream_id: '+4930123',
    })
    expect(renderDelivery({ seq: 1, sent: false, message: message({ sender: '@dave:other.org' }) }, '@bob:example.org', direct, [], undefined, book).sender).toBe('@dave:other.org')
  })

  test('a sent direct message names the other member as recipient', () => {
    const item = renderDelivery({ seq: 2, sent: true, message: message({ sender: '@bob:example.org' }) }, '@bob:example.org', direct, [member('@bob:example.org'), member('@alice:example.org')], undefined, book)
    expect(item).toMatchObject({ recipient: 'alice', stream_id: 'alice' })
    expect(item.sender).toBeUndefined()
  })

  test('a group message: the user address of the room, and the author before the text', () => {
    const group: Room = { roomId: '!g:example.org', kind: 'group', isDirect: false, name: 'Team A', conversation: '!g:example.org' }
    expect(renderDelivery({ seq: 3, sent: false, message: message() }, '@bob:example.org', group, [], 'Team\u00a0A', book)).toMatchObject({
      sender: 'Team\u00a0A',
      stream_id: 'Team\u00a0A',
      sms_text: 'Alice: hello',
    })
  })
})

describe('parseClientEvent', () => {
  test('names what is missing', () => {
    expect(parseClientEvent(null)).toEqual({ ok: false, reason: 'event is not an object' })
    expect(parseClientEvent({ event_id: '$e', room_id: '!r', sender: '@a:x', type: 'm.room.message', content: {} })).toEqual({ ok: false, reason: 'origin_server_ts is missing or not a number' })
    expect(parseClientEvent({ event_id: '$e', room_id: '!r', sender: '@a:x', type: 'm.room.message', origin_server_ts: 1, content: [] }).ok).toBe(false)
    expect(parseClientEvent({ event_id: '$e', room_id: '!r', sender: '@a:x', type: 'm.room.message', origin_server_ts: 1, content: {} }).ok).toBe(true)
  })

  test('a timestamp past the range of a date is refused (a fetch could not render it)', () => {
    const at = (origin_server_ts: number) => parseClientEvent({ event_id: '$e', room_id: '!r', sender: '@a:x', type: 'm.room.message', origin_server_ts, content: {} })
    expect(at(Number.MAX_SAFE_INTEGER)).toEqual({ ok: false, reason: 'origin_server_ts is out of range' })
    expect(at(-8.64e15 - 1)).toEqual({ ok: false, reason: 'origin_server_ts is out of range' })
    expect(at(8.64e15).ok).toBe(true)
  })

  test('U+0000 in any string or key becomes U+FFFD (PostgreSQL text cannot hold it); an event without one is kept as it is', () => {
    const raw = {
      event_id: '$e\u0000',
      room_id: '!r',
      sender: '@a:x',
      type: 'm.room.message',
      origin_server_ts: 1,
      content: { body: 'a\u0000b', 'k\u0000': [{ deep: '\u0000' }], n: 5 },
    }
    const parsed = parseClientEvent(raw)
    expect(parsed).toEqual({
      ok: true,
      event: { ...raw, event_id: '$e\uFFFD', content: { body: 'a\uFFFDb', 'k\uFFFD': [{ deep: '\uFFFD' }], n: 5 } } as never,
    })
    expect(raw.content.body).toBe('a\u0000b')
    // A backslash and "u0000" typed in a message is text, not U+0000, and stays.
    const typed = { event_id: '$e', room_id: '!r', sender: '@a:x', type: 'm.room.message', origin_server_ts: 1, content: { body: 'C:\\u0000' } }
    expect(parseClientEvent(typed)).toEqual({ ok: true, event: typed as never })
    const plain = { event_id: '$e', room_id: '!r', sender: '@a:x', type: 'm.room.message', origin_server_ts: 1, content: { body: 'hello' } }
    const kept = parseClientEvent(plain)
    expect(kept.ok && kept.event).toBe(plain as never)
  })
})

test('rfc3339 is UTC with whole seconds, clamped to the range of a date', () => {
  expect(rfc3339(Date.UTC(2026, 0, 2, 3, 4, 5, 999))).toBe('2026-01-02T03:04:05Z')
  expect(rfc3339(Number.MAX_SAFE_INTEGER)).toBe('+275760-09-13T00:00:00Z')
})
