import { describe, expect, test } from 'bun:test'
import { normalizeReport, parseReportBody } from '../../src/report/parse.ts'
import { refusal } from './refusal.ts'

describe('parseReportBody', () => {
  test('JSON by content type', () => {
    expect(parseReportBody('application/json; charset=utf-8', '{"selector":"S"}')).toEqual({ selector: 'S' })
  })
  test('form by content type, first value of a repeated key wins', () => {
    expect(parseReportBody('application/x-www-form-urlencoded', 'selector=S%3A1&token_msgs=a+b&selector=T')).toEqual({ selector: 'S:1', token_msgs: 'a b' })
  })
  test('without a usable content type: JSON when it looks like JSON, else form', () => {
    expect(parseReportBody(null, ' {"selector":"S"}')).toEqual({ selector: 'S' })
    expect(parseReportBody('text/plain', 'selector=S')).toEqual({ selector: 'S' })
  })
  test('broken JSON and non-objects are refused with 400', () => {
    expect(refusal(() => parseReportBody('application/json', '{nope'))).toMatchObject({ status: 400, errcode: 'M_NOT_JSON' })
    expect(refusal(() => parseReportBody('application/json', '[1]'))).toMatchObject({ status: 400, message: 'Request body must be a JSON object' })
    expect(refusal(() => parseReportBody('application/json', 'null'))).toMatchObject({ status: 400 })
  })
})

describe('normalizeReport', () => {
  test('trims values (never the password), merges spellings, drops empties', () => {
    expect(
      normalizeReport({
        selector: ' S:1 ',
        token_msgs: ' tok ',
        appId_msgs: 'com.app ',
        token_calls: '',
        appid_calls: '   ',
        username: 'alice ',
        password: ' pw',
      }),
    ).toEqual({ selector: 'S:1', tokenMsgs: 'tok', appIdMsgs: 'com.app', tokenCalls: undefined, appIdCalls: undefined, username: 'alice', password: ' pw' })
  })
  test.each([['app_id_msgs'], ['appId_msgs'], ['appid_msgs']])('accepts %s', (field) => {
    expect(normalizeReport({ selector: 'S', token_msgs: 't', [field]: 'a' }).appIdMsgs).toBe('a')
  })
  test.each([['app_id_calls'], ['appId_calls'], ['appid_calls']])('accepts %s', (field) => {
    expect(normalizeReport({ selector: 'S', token_calls: 't', [field]: 'a' }).appIdCalls).toBe('a')
  })
  test('selector is required and not empty', () => {
    expect(refusal(() => normalizeReport({}))).toMatchObject({ status: 400, message: 'selector is missing or empty' })
    expect(refusal(() => normalizeReport({ selector: '  ' }))).toMatchObject({ status: 400 })
  })
  test('a token without its app id is refused', () => {
    expect(refusal(() => normalizeReport({ selector: 'S', token_msgs: 't' })).message).toContain('app_id_msgs')
    expect(refusal(() => normalizeReport({ selector: 'S', token_calls: 't' })).message).toContain('app_id_calls')
  })
  test('an app id without a token is fine (the app reports an empty token)', () => {
    expect(normalizeReport({ selector: 'S', token_msgs: '', app_id_msgs: 'a' })).toMatchObject({ tokenMsgs: undefined, appIdMsgs: 'a' })
  })
  test('values Synapse would refuse in pushers/set are refused here', () => {
    expect(refusal(() => normalizeReport({ selector: 'S', token_msgs: 'x'.repeat(513), app_id_msgs: 'a' })).message).toContain('512')
    expect(refusal(() => normalizeReport({ selector: 'S', token_msgs: 't', app_id_msgs: 'a'.repeat(65) })).message).toContain('64')
  })
  test('passwords are never trimmed: a password may end in a space; empty is not given', () => {
    expect(normalizeReport({ selector: 'S', password: ' pw ' }).password).toBe(' pw ')
    expect(normalizeReport({ selector: 'S', password: '  ' }).password).toBe('  ')
    expect(normalizeReport({ selector: 'S', password: '' }).password).toBeUndefined()
  })
  test('the selector is printable ASCII of at most 128 characters', () => {
    expect(normalizeReport({ selector: 'A'.repeat(128) }).selector).toHaveLength(128)
    expect(refusal(() => normalizeReport({ selector: 'A'.repeat(129) })).message).toMatch(/^selector .*128/)
    expect(refusal(() => normalizeReport({ selector: 'Zoë:1' })).message).toMatch(/^selector .*printable ASCII/)
  })
  test('control characters are refused in every field, naming the field as it was sent', () => {
    const base = { selector: 'S', token_msgs: 't', app_id_msgs: 'a', token_calls: 'c', app_id_calls: 'b', username: 'u', password: 'p' }
    for (const field of ['selector', 'token_msgs', 'app_id_msgs', 'appId_msgs', 'token_calls', 'appid_calls', 'username', 'password'] as const) {
      for (const bad of ['\u0000', '\u001b[2J', '\u007f', '\u009b', '\n']) {
        const body: Record<string, string> = { ...base, [field]: `x${bad}y` }
        if (field === 'appId_msgs') delete body.app_id_msgs
        if (field === 'appid_calls') delete body.app_id_calls
        const r = refusal(() => normalizeReport(body))
        expect(r).toMatchObject({ status: 400, errcode: 'M_BAD_JSON' })
        expect(r.message).toBe(`${field} contains a control character`)
      }
    }
  })
  test('Synapse\'s limits for every token and app id, the calls ones too; username at most 255 bytes', () => {
    expect(refusal(() => normalizeReport({ selector: 'S', token_calls: 'x'.repeat(513), app_id_calls: 'a' })).message).toBe('token_calls is longer than 512 bytes')
    expect(refusal(() => normalizeReport({ selector: 'S', token_calls: 't', appId_calls: 'a'.repeat(65) })).message).toBe('appId_calls is longer than 64 characters')
    expect(normalizeReport({ selector: 'S', token_calls: 'x'.repeat(512), app_id_calls: 'a'.repeat(64) }).tokenCalls).toHaveLength(512)
    expect(normalizeReport({ selector: 'S', username: 'u'.repeat(255) }).username).toHaveLength(255)
    expect(refusal(() => normalizeReport({ selector: 'S', username: 'é'.repeat(128) })).message).toBe('username is longer than 255 bytes')
  })
  test('unicode survives', () => {
    expect(normalizeReport({ selector: 'S', username: ' Zoë😀 ' }).username).toBe('Zoë😀')
  })
})
