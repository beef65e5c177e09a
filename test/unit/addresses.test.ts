import { describe, expect, test } from 'bun:test'
import fc from 'fast-check'
import { groupAddress, renderUser, resolveAddress, uniqueAddress, type AddressBook } from '../../src/addresses.ts'
import { parseMappingFile, type MappingEntry } from '../../src/report/mapping.ts'

function mappingOf(entries: unknown[]): MappingEntry[] {
  const parsed = parseMappingFile(JSON.stringify(entries))
  if (!parsed.ok) throw new Error(parsed.error)
  return parsed.entries
}

const book: AddressBook = {
  serverName: 'example.org',
  mapping: mappingOf([
    { matrix_id: '@carol:example.org', number: '1001', sub_numbers: ['1002', 1003] },
    { matrix_id: '@erin:other.org', number: 2001 },
    { matrix_id: '@dave:example.org', sub_numbers: ['3002'] },
  ]),
}

describe('renderUser', () => {
  test('the number of the user’s MAPPING_FILE entry', () => {
    expect(renderUser('@carol:example.org', book)).toBe('1001')
    expect(renderUser('@erin:other.org', book)).toBe('2001')
  })
  test('else the localpart for users of this server (sub-numbers are not rendered)', () => {
    expect(renderUser('@bob:example.org', book)).toBe('bob')
    expect(renderUser('@dave:example.org', book)).toBe('dave')
  })
  test('else the full Matrix ID', () => {
    expect(renderUser('@frank:other.org', book)).toBe('@frank:other.org')
    expect(renderUser('@bob:example.org', { mapping: [] })).toBe('@bob:example.org')
  })
  test('a localpart that is someone else’s number is shown as the full Matrix ID', () => {
    expect(renderUser('@1002:example.org', book)).toBe('@1002:example.org')
    expect(renderUser('@Upper:example.org', book)).toBe('@Upper:example.org')
  })
  test('a number shared by two entries belongs to the first; the second user keeps another form', () => {
    const shared: AddressBook = {
      serverName: 'example.org',
      mapping: mappingOf([
        { matrix_id: '@one:example.org', number: '5' },
        { matrix_id: '@two:example.org', number: '5' },
      ]),
    }
    expect(renderUser('@one:example.org', shared)).toBe('5')
    expect(renderUser('@two:example.org', shared)).toBe('two')
  })
})

describe('resolveAddress', () => {
  test.each([
    ['@erin:other.org', '@erin:other.org'],
    ['1001', '@carol:example.org'],
    ['1003', '@carol:example.org'],
    [' 3002 ', '@dave:example.org'],
    ['2001', '@erin:other.org'],
    ['bob', '@bob:example.org'],
    ['Bob', '@bob:example.org'],
    ['bob@example.org', '@bob:example.org'],
    ['frank@other.org', '@frank:other.org'],
    ['4000', '@4000:example.org'],
  ])('%p → %p', (address, userId) => {
    expect(resolveAddress(address, book)).toBe(userId)
  })
  test.each(['', '   ', 'john smith', 'a:b', '@nodomain', 'x@', 'x@bad domain', '#room:example.org', '!room:example.org'])(
    '%p names nobody',
    (address) => {
      expect(resolveAddress(address, book)).toBeUndefined()
    },
  )
  test('a bare localpart needs the server name', () => {
    expect(resolveAddress('bob', { mapping: [] })).toBeUndefined()
    expect(resolveAddress('@bob:example.org', { mapping: [] })).toBe('@bob:example.org')
  })
})

describe('resolveAddress(renderUser(x)) === x', () => {
  const localpart = fc.oneof(
    fc.constantFrom('alice', 'bob', 'carol', '1001', '5', 'Upper', 'a@b', 'x.y_z-=/'),
    fc.stringMatching(/^[!-9;-~]{1,12}$/),
  )
  const server = fc.constantFrom('example.org', 'other.org', 'b', 'localhost:8448', '[::1]:8448')
  const userId = fc.tuple(localpart, server).map(([l, s]) => `@${l}:${s}`)
  const number = fc.oneof(fc.constantFrom('1001', '5', 'alice', 'bob', '@bob:example.org'), fc.stringMatching(/^[0-9]{1,4}$/))
  const entry = fc.record(
    { matrix_id: userId, number: number, sub_numbers: fc.array(number, { maxLength: 3 }) },
    { requiredKeys: ['matrix_id'] },
  )
  const books = fc.record({
    serverName: fc.option(fc.constantFrom('example.org', 'other.org', 'b'), { nil: undefined }),
    mapping: fc.array(entry, { maxLength: 6 }).map(mappingOf),
  })

  test('for every user, server name and mapping (numbers shared, numbers that look like users)', () => {
    fc.assert(
      fc.property(userId, books, (x, b) => {
        expect(resolveAddress(renderUser(x, b), b)).toBe(x)
      }),
      { numRuns: 2000 },
    )
  })
  test('for the mapping’s own users', () => {
    fc.assert(
      fc.property(books, (b) => {
        for (const e of b.mapping) expect(resolveAddress(renderUser(e.matrixId, b), b)).toBe(e.matrixId)
      }),
      { numRuns: 1000 },
    )
  })
})

describe('groupAddress', () => {
  test('the name, else the canonical alias, else the room id', () => {
    expect(groupAddress({ name: 'Team', canonicalAlias: '#team:example.org', roomId: '!r:example.org' })).toBe('Team')
    expect(groupAddress({ name: '  ', canonicalAlias: '#team:example.org', roomId: '!r:example.org' })).toBe('#team:example.org')
    expect(groupAddress({ roomId: '!r:example.org' })).toBe('!r:example.org')
  })
  test('spaces become U+00A0 and commas U+201A: the app splits addresses on both', () => {
    const a = groupAddress({ name: 'Sales, Europe\tteam', roomId: '!r:x' })
    expect(a).toBe('Sales\u201a\u00a0Europe\u00a0team')
    expect(a).not.toMatch(/[ ,]/)
  })
  test('no rendering of any name contains a space or a comma', () => {
    fc.assert(
      fc.property(fc.option(fc.string(), { nil: undefined }), fc.option(fc.string(), { nil: undefined }), (name, alias) => {
        const a = groupAddress({ name, canonicalAlias: alias, roomId: '!r:x' })
        // Every whitespace but the no-break space itself, and commas.
        expect(a).not.toMatch(/[^\S\u00a0]|,/)
        expect(a.length).toBeGreaterThan(0)
      }),
    )
  })
})

describe('uniqueAddress', () => {
  test('the base when free, else the first free numbered form', () => {
    expect(uniqueAddress('Team', () => false)).toBe('Team')
    const taken = new Set(['Team', 'Team\u00a0(2)'])
    expect(uniqueAddress('Team', (a) => taken.has(a))).toBe('Team\u00a0(3)')
  })
})
