import { describe, expect, test } from 'bun:test'
import { resolveMatrixUser } from '../../src/report/identity.ts'
import { parseMappingFile } from '../../src/report/mapping.ts'

const mapping = (() => {
  const parsed = parseMappingFile(
    JSON.stringify([
      { matrix_id: '@carol:example.org', number: '1001', sub_numbers: ['1002', 1003], username: 'Carol.Admin' },
      { matrix_id: '@dave:example.org', selectors: ['DAVESEL:1'] },
    ]),
  )
  if (!parsed.ok) throw new Error(parsed.error)
  return parsed.entries
})()

const resolve = (username: string | undefined, selector = 'SEL:1', server: string | undefined = 'example.org') =>
  resolveMatrixUser({ username, selector }, mapping, server)

describe('resolveMatrixUser (AUTH_MODE=none)', () => {
  test('a Matrix ID is taken as is', () => {
    expect(resolve('@erin:other.org')).toEqual({ ok: true, userId: '@erin:other.org' })
  })
  test('mapping by username (any case), number, sub-number and selector', () => {
    expect(resolve('carol.admin')).toEqual({ ok: true, userId: '@carol:example.org' })
    expect(resolve('1001')).toEqual({ ok: true, userId: '@carol:example.org' })
    expect(resolve('1003')).toEqual({ ok: true, userId: '@carol:example.org' })
    expect(resolve(undefined, 'DAVESEL:1')).toEqual({ ok: true, userId: '@dave:example.org' })
  })
  test('otherwise the lower-cased part before any @ on MATRIX_SERVER_NAME', () => {
    expect(resolve('Frank@pbx.example.com')).toEqual({ ok: true, userId: '@frank:example.org' })
    expect(resolve('2000')).toEqual({ ok: true, userId: '@2000:example.org' })
  })
  test('no username and no mapping for the selector is a 400 naming the problem', () => {
    const r = resolve(undefined, 'UNKNOWN:1')
    expect(r.ok).toBe(false)
    if (!r.ok) {
      expect(r.error.status).toBe(400)
      expect(r.error.message).toContain('username')
    }
  })
  test('a username that cannot be a localpart is refused', () => {
    const r = resolve('john smith')
    expect(r.ok).toBe(false)
    if (!r.ok) expect(r.error.status).toBe(400)
  })
  test('without a server name, deriving is a 503 naming MATRIX_SERVER_NAME', () => {
    const r = resolveMatrixUser({ username: 'zed', selector: 'SEL:1' }, mapping, undefined)
    expect(r.ok).toBe(false)
    if (!r.ok) {
      expect(r.error.status).toBe(503)
      expect(r.error.message).toContain('MATRIX_SERVER_NAME')
    }
  })
})

describe('parseMappingFile', () => {
  test.each([
    ['not json', 'not valid JSON'],
    ['{}', 'Expected array'],
    ['[{"number":"1"}]', 'matrix_id'],
    ['[{"matrix_id":"carol"}]', 'matrix_id'],
    ['[{"matrix_id":"@c:x","selectors":"S"}]', 'selectors'],
  ])('%s is refused', (text, fragment) => {
    const r = parseMappingFile(text)
    expect(r.ok).toBe(false)
    if (!r.ok) expect(r.error).toContain(fragment)
  })
})
