import { describe, expect, test } from 'bun:test'
import { ctiUsername, jwtPayload, mayChat, usersToMapping } from '../../src/cti/directory.ts'

const jwt = (payload: unknown) => `eyJhbGciOiJIUzI1NiJ9.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.sig`

describe('the CTI answers, read', () => {
  test('the JWT payload and its chat claim', () => {
    expect(jwtPayload(jwt({ 'nethvoice_cti.chat': true }))).toEqual({ 'nethvoice_cti.chat': true })
    expect(mayChat(jwtPayload(jwt({ 'nethvoice_cti.chat': true }))!)).toBe(true)
    expect(mayChat(jwtPayload(jwt({ 'nethvoice_cti.chat': 'true' }))!)).toBe(true)
    expect(mayChat(jwtPayload(jwt({ 'nethvoice_cti.chat': false }))!)).toBe(false)
    expect(mayChat(jwtPayload(jwt({ nethvoice_cti: { chat: true } }))!)).toBe(false)
    expect(mayChat(jwtPayload(jwt({}))!)).toBe(false)
    for (const bad of [undefined, 42, 'not-a-jwt', 'a.b', 'a.!!!.c', `x.${Buffer.from('[1]').toString('base64url')}.y`, `x.${Buffer.from('nope').toString('base64url')}.y`]) {
      expect(jwtPayload(bad)).toBeUndefined()
    }
  })

  test('users become MAPPING_FILE-shaped entries: lower-cased user_name, main extension, sub-extensions under either key', () => {
    const entries = usersToMapping(
      [
        { user_name: 'Giacomo', main_extension: '201', sub_extensions: ['91201', 92201] },
        { user_name: 'mario', main_extension: 202, extensions: ['91202'] },
        { user_name: 'noext', main_extension: null },
        { user_name: 'bad name' },
        { main_extension: '204' },
        'garbage',
      ],
      'example.org',
    )
    expect(entries.map((e) => [e.matrixId, [...e.usernames], [...e.numbers], [...e.selectors]])).toEqual([
      ['@giacomo:example.org', ['giacomo'], ['201', '91201', '92201'], []],
      ['@mario:example.org', ['mario'], ['202', '91202'], []],
      ['@noext:example.org', ['noext'], [], []],
    ])
  })

  test('the username the CTI is asked about loses any @domain', () => {
    expect(ctiUsername(' giacomo@nethvoice.example.org ')).toBe('giacomo')
    expect(ctiUsername('Giacomo')).toBe('Giacomo')
    expect(ctiUsername('@weird')).toBe('@weird')
  })
})
