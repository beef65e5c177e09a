import { describe, expect, test } from 'bun:test'
import { normalizeReport, parseReportBody } from '../../src/report/parse.ts'
import { AppError } from '../../src/errors.ts'

const refusal = (fn: () => unknown) => {
  try {
    fn()
  } catch (e) {
    if (e instanceof AppError) return { status: e.status, errcode: e.errcode, message: e.message }
    throw e
  }
  throw new Error('expected a refusal')
}

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
  test('trims values, merges spellings, drops empties', () => {
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
    ).toEqual({ selector: 'S:1', tokenMsgs: 'tok', appIdMsgs: 'com.app', tokenCalls: undefined, appIdCalls: undefined, username: 'alice', password: 'pw' })
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
  test('unicode survives', () => {
    expect(normalizeReport({ selector: 'S', username: ' Zoë😀 ' }).username).toBe('Zoë😀')
  })
})
