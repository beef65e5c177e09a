import { describe, expect, test } from 'bun:test'
import { classifyPnmAnswer } from '../../src/pnm/outcome.ts'
import { tokenHash } from '../../src/secrets.ts'

const answer = (status: number, body: unknown) => ({
  kind: 'answer' as const,
  status,
  body: typeof body === 'string' ? body : JSON.stringify(body),
})

describe('classifyPnmAnswer', () => {
  test.each([
    [200, { code: 200, response: 'OK' }, 'delivered'],
    [200, { status: 200, response: 'OK' }, 'delivered'],
    [200, {}, 'delivered'],
    [404, { code: 404, response: 'Not registered' }, 'token_invalid'],
    [200, { code: 404 }, 'token_invalid'],
    [200, { status: '404' }, 'token_invalid'],
    [400, { code: 400 }, 'bad_request'],
    [200, { status: 400 }, 'bad_request'],
    [500, { code: 500 }, 'transient'],
    [503, 'Service Unavailable', 'transient'],
    [502, { code: 404 }, 'transient'], // a 5xx from the front is not the PNM's word on the token
    [200, { code: 500 }, 'transient'],
    [200, { status: 500 }, 'transient'],
    [200, '<html>oops</html>', 'transient'],
    [200, '[1,2]', 'transient'],
    [401, { code: 401 }, 'transient'],
    [403, {}, 'transient'],
    [429, {}, 'transient'],
    [302, '', 'transient'],
  ])('HTTP %d %j -> %s', (status, body, kind) => {
    expect(classifyPnmAnswer(answer(status, body)).kind as string).toBe(kind as string)
  })

  test('the device token the PNM quotes is replaced by its short hash, before the text is cut', () => {
    const token = 'fcmTOKEN-0123456789abcdef'
    const hash = tokenHash(token)
    const quoted = classifyPnmAnswer(answer(400, { code: 400, response: `Invalid DeviceToken ${token} (${token})` }), token)
    expect(quoted).toEqual({ kind: 'bad_request', detail: `HTTP 400, code 400: Invalid DeviceToken [token ${hash}] ([token ${hash}])` })
    const long = classifyPnmAnswer(answer(500, { response: `${'x'.repeat(190)}${token}` }), token)
    expect(long.kind === 'transient' && long.detail).not.toContain(token.slice(0, 8))
    expect(classifyPnmAnswer(answer(400, { response: 'no token here' }), token)).toEqual({ kind: 'bad_request', detail: 'HTTP 400: no token here' })
  })

  test('timeouts and connection errors are transient', () => {
    expect(classifyPnmAnswer({ kind: 'timeout', afterMs: 10 }).kind).toBe('transient')
    expect(classifyPnmAnswer({ kind: 'network', message: 'ECONNREFUSED' }).kind).toBe('transient')
  })
})
