/** The password-check budgets, the address grouping and the helpers that keep output safe. Pure. */
import { describe, expect, test } from 'bun:test'
import { printable, printableJson } from '../../src/cli/common.ts'
import { isLoopbackHost, rateLimitGroup } from '../../src/client-address.ts'
import { createAuthLimiter, normalizeUsername, usernameKey } from '../../src/matrix/auth-limits.ts'
import { redactUserinfo } from '../../src/secrets.ts'
import { slidingWindow } from '../../src/sliding-window.ts'

const limits = { failuresPerPair: 5, failuresPerUser: 20, checksPerAddress: 30, maxInflight: 10 }

function clock(start = 1_000_000) {
  let t = start
  return { now: () => t, advance: (ms: number) => (t += ms) }
}

describe('normalizeUsername and usernameKey', () => {
  test('@alice:<server name>, alice and ALICE are one user; other servers stay apart', () => {
    for (const name of ['alice', 'ALICE', ' alice ', '@alice:example.org', '@Alice:EXAMPLE.org']) expect(normalizeUsername(name, 'example.org')).toBe('alice')
    expect(normalizeUsername('@alice:other.org', 'example.org')).toBe('@alice:other.org')
    expect(normalizeUsername('@alice:example.org', undefined)).toBe('@alice:example.org')
  })
  test('keys have one size whatever the username', () => {
    expect(usernameKey('a')).toHaveLength(22)
    expect(usernameKey('x'.repeat(8192))).toHaveLength(22)
    expect(usernameKey('alice')).not.toBe(usernameKey('alicf'))
  })
})

describe('slidingWindow', () => {
  test('counts the last minute, says when a slot frees, keeps at most cap per key', () => {
    const c = clock()
    const w = slidingWindow(c.now, 3)
    for (let i = 0; i < 5; i++) {
      w.add('k')
      c.advance(10_000)
    }
    expect(w.count('k')).toBe(3)
    expect(w.count('other')).toBe(0)
    // Kept: 20 s, 30 s, 40 s; now 50 s. Fewer than two remain once 30 s expires, at 90 s.
    expect(w.retryAfter('k', 2)).toBe(40)
    expect(w.retryAfter('k', 4)).toBe(1)
    c.advance(20_000)
    expect(w.count('k')).toBe(3)
    c.advance(15_000)
    expect(w.count('k')).toBe(2)
    c.advance(60_000)
    expect(w.count('k')).toBe(0)
  })
  test('a large limit stays cheap: 60,000 entries in the window, a million added', () => {
    const c = clock()
    const w = slidingWindow(c.now, 2_000_000)
    const started = performance.now()
    for (let i = 0; i < 1_000_000; i++) {
      w.add('k')
      if (w.count('k') !== Math.min(i + 1, 60_000)) throw new Error(`count wrong at ${i}`)
      c.advance(1)
    }
    // Linear, not quadratic: a filter per call would take hours here.
    expect(performance.now() - started).toBeLessThan(20_000)
  })
})

describe('createAuthLimiter', () => {
  test('a check counts from the moment it starts: in flight + recent failures', () => {
    const c = clock()
    const limiter = createAuthLimiter(limits, c.now)
    const tickets = Array.from({ length: 5 }, () => limiter.begin('alice', '192.0.2.1'))
    expect(tickets.every((t) => t.ok)).toBe(true)
    expect(limiter.begin('alice', '192.0.2.1')).toMatchObject({ ok: false, reason: 'pair', retryAfter: 1 })
    // Success releases; a failure keeps counting for a minute.
    for (const t of tickets.slice(0, 2)) if (t.ok) t.ticket.release()
    for (const t of tickets.slice(2)) if (t.ok) t.ticket.fail()
    expect(limiter.inflight()).toBe(0)
    expect(limiter.begin('alice', '192.0.2.1').ok).toBe(true)
  })

  test('failures per pair expire after a minute; Retry-After says when', () => {
    const c = clock()
    const limiter = createAuthLimiter(limits, c.now)
    for (let i = 0; i < 5; i++) {
      const t = limiter.begin('alice', 'a')
      if (t.ok) t.ticket.fail()
      c.advance(1000)
    }
    const refused = limiter.begin('alice', 'a')
    expect(refused).toMatchObject({ ok: false, reason: 'pair', retryAfter: 55 })
    expect(limiter.begin('alice', 'b').ok).toBe(true)
    c.advance(55_000)
    expect(limiter.begin('alice', 'a').ok).toBe(true)
  })

  test('per username alone: the higher threshold, from any address', () => {
    const limiter = createAuthLimiter(limits, clock().now)
    for (let i = 0; i < 20; i++) {
      const t = limiter.begin('alice', `198.51.100.${i}`)
      expect(t.ok).toBe(true)
      if (t.ok) t.ticket.fail()
    }
    expect(limiter.begin('alice', '203.0.113.1')).toMatchObject({ ok: false, reason: 'user' })
    expect(limiter.begin('bob', '203.0.113.1').ok).toBe(true)
  })

  test('per address: every check counts whatever its outcome, retries after a 429 too', () => {
    const limiter = createAuthLimiter({ ...limits, checksPerAddress: 3 }, clock().now)
    const first = limiter.begin('u1', 'a')
    if (first.ok) {
      first.ticket.countCheck()
      first.ticket.release()
    }
    const second = limiter.begin('u2', 'a')
    if (second.ok) second.ticket.release()
    expect(limiter.begin('u3', 'a')).toMatchObject({ ok: false, reason: 'address' })
    expect(limiter.begin('u3', 'b').ok).toBe(true)
    // Without an address (no socket) there is no address budget.
    for (let i = 0; i < 5; i++) {
      const t = limiter.begin(`v${i}`, undefined)
      expect(t.ok).toBe(true)
      if (t.ok) t.ticket.release()
    }
  })

  test('in flight for everyone together: busy past maxInflight; release is idempotent', () => {
    const limiter = createAuthLimiter({ ...limits, maxInflight: 2 }, clock().now)
    const a = limiter.begin('u1', 'a')
    const b = limiter.begin('u2', 'b')
    expect(limiter.begin('u3', 'c')).toEqual({ ok: false, reason: 'busy', retryAfter: 1 })
    if (a.ok) {
      a.ticket.release()
      a.ticket.release()
      a.ticket.fail()
    }
    expect(limiter.inflight()).toBe(1)
    expect(limiter.begin('u3', 'c').ok).toBe(true)
    expect(b.ok).toBe(true)
  })
})

describe('rateLimitGroup', () => {
  test('IPv4 as is; IPv6 by its /64, however it is written', () => {
    expect(rateLimitGroup('192.0.2.7')).toBe('192.0.2.7')
    expect(rateLimitGroup('::ffff:192.0.2.7')).toBe('192.0.2.7')
    const group = '2001:db8:1:2::/64'
    for (const a of ['2001:db8:1:2::1', '2001:0db8:0001:0002:ffff:ffff:ffff:fffe', '2001:DB8:1:2:0:0:0:9', '2001:db8:1:2::5%eth0']) {
      expect(rateLimitGroup(a)).toBe(group)
    }
    expect(rateLimitGroup('2001:db8:1:3::1')).toBe('2001:db8:1:3::/64')
    expect(rateLimitGroup('::1')).toBe('0:0:0:0::/64')
    expect(rateLimitGroup('2001:db8::')).toBe('2001:db8:0:0::/64')
    expect(rateLimitGroup('64:ff9b::192.0.2.1')).toBe('64:ff9b:0:0::/64')
  })
})

describe('output helpers', () => {
  test('isLoopbackHost', () => {
    for (const h of ['localhost', '127.0.0.1', '127.8.9.1', '::1', '[::1]', 'app.localhost']) expect(isLoopbackHost(h)).toBe(true)
    for (const h of ['0.0.0.0', '::', '10.0.0.1', 'example.org', '192.0.2.1']) expect(isLoopbackHost(h)).toBe(false)
  })
  test('redactUserinfo removes user and password from a URL, parsed or not', () => {
    expect(redactUserinfo('https://admin:s3cret@matrix.example.org/x')).toBe('https://***@matrix.example.org/x')
    expect(redactUserinfo('ftp://a:b@c')).toBe('ftp://***@c')
    expect(redactUserinfo('https://matrix.example.org/a@b')).toBe('https://matrix.example.org/a@b')
  })
  test('printable escapes control characters and bidi overrides, and the backslash so escapes cannot be forged', () => {
    expect(printable('a\u001b[2Jb')).toBe('a\\x1b[2Jb')
    expect(printable('\u009b\u007f\u0000\r\n\t')).toBe('\\x9b\\x7f\\x00\\x0d\\x0a\\x09')
    expect(printable('x\u202ey')).toBe('x\\u202ey')
    expect(printable('\\x1b')).toBe('\\\\x1b')
    expect(printable('Zoë 😀')).toBe('Zoë 😀')
    const value = { s: 'a\u009bb\u202e\u001b' }
    const json = printableJson(value)
    expect(json).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202e]/)
    expect(JSON.parse(json)).toEqual(value)
  })
})
