import { describe, expect, test } from 'bun:test'
import { refusal } from './refusal.ts'
import { normalizeSend, parseDisposition } from '../../src/messages/send-request.ts'

describe('normalizeSend', () => {
  test('both spellings of each field; trimmed except password and body', () => {
    expect(normalizeSend({ from: ' alice ', password: ' pw ', sms_to: ' bob ', sms_body: '  hi  ' })).toEqual({
      username: 'alice',
      password: ' pw ',
      to: 'bob',
      body: '  hi  ',
      contentType: 'text/plain',
      dispositionNotification: undefined,
    })
    expect(normalizeSend({ username: 'a', from: 'b', to: 'c', sms_to: 'd', body: 'e', sms_body: 'f' })).toMatchObject({ username: 'a', to: 'c', body: 'e' })
  })
  test('content_type: lower-cased, parameters dropped, text/plain when empty', () => {
    expect(normalizeSend({ content_type: ' Text/Plain; charset=UTF-8 ' }).contentType).toBe('text/plain')
    expect(normalizeSend({ content_type: '' }).contentType).toBe('text/plain')
    expect(normalizeSend({ content_type: null }).contentType).toBe('text/plain')
    expect(normalizeSend({ content_type: 'application/x-acro-disposition-notification' }).contentType).toBe('application/x-acro-disposition-notification')
  })
  test('empty values are not given (except an empty body, which is refused later)', () => {
    expect(normalizeSend({ username: ' ', password: '', to: '' })).toMatchObject({ username: undefined, password: undefined, to: undefined })
    expect(normalizeSend({ body: '' }).body).toBe('')
  })
  test('a control character in the username, password or recipient, or a username past 255 bytes: 400 naming it; the body may hold any', () => {
    expect(refusal(() => normalizeSend({ sms_to: 'bo\u0000b' }))).toMatchObject({ status: 400, message: 'to contains a control character' })
    expect(refusal(() => normalizeSend({ from: 'al\tice' }))).toMatchObject({ status: 400, message: 'username contains a control character' })
    expect(refusal(() => normalizeSend({ password: '\u0000' }))).toMatchObject({ status: 400, message: 'password contains a control character' })
    expect(refusal(() => normalizeSend({ username: 'u'.repeat(256) }))).toMatchObject({ status: 400, message: 'username is longer than 255 bytes' })
    expect(() => normalizeSend({ username: 'u'.repeat(255), to: 'bob', body: 'line one\nline\u0000two' })).not.toThrow()
  })
})

describe('parseDisposition', () => {
  test('message-id or message_id; delivered and displayed', () => {
    expect(parseDisposition(JSON.stringify({ 'message-id': '$e', 'display-notification': { status: 'displayed' } }))).toEqual({ messageId: '$e', delivered: false, displayed: true })
    expect(parseDisposition(JSON.stringify({ message_id: ' $e ', 'delivery-notification': { status: 'delivered' } }))).toEqual({ messageId: '$e', delivered: true, displayed: false })
  })
  test.each(['', 'not json', '[]', '{}', '{"message-id": 3}', '{"message-id": " "}'])('%p is a 400 naming body', (body) => {
    let error: any
    try {
      parseDisposition(body)
    } catch (e) {
      error = e
    }
    expect(error?.status).toBe(400)
    expect(error?.message).toStartWith('body:')
  })
})
