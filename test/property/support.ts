/**
 * Invariants every answer to hostile input keeps: no 5xx, JSON, a rejection names its problem,
 * and a rejected request leaves the database as it was.
 */
import { expect } from 'bun:test'
import fc from 'fast-check'
import { readAnswer, type Harness } from '../harness.ts'

export const CONTENT_TYPES = [
  'application/json',
  'application/json; charset=utf-8',
  'application/json; charset=latin1',
  'application/x-www-form-urlencoded',
  'text/plain',
  'text/html',
  'application/xml',
  'multipart/form-data; boundary=xyz',
  'application/octet-stream',
  'application/merge-patch+json',
  '',
  ';;;',
  'application/json, text/plain',
]

export interface Answer {
  status: number
  text: string
  json: any
  contentType: string | null
  /** Log lines before the request. */
  logged: number
}

export async function send(h: Harness, path: string, body: string | Uint8Array | undefined, contentType?: string, method = 'POST'): Promise<Answer> {
  const logged = h.logs.lines.length
  const headers: Record<string, string> = {}
  if (contentType !== undefined) headers['content-type'] = contentType
  const answer = await readAnswer(await h.app.handle(new Request(`http://localhost${path}`, { method, headers, body })))
  return { ...answer, contentType: answer.headers.get('content-type'), logged }
}

export const snapshot = async (h: Harness) =>
  JSON.stringify({ registrations: await h.store.listRegistrations(), jobs: await h.store.pendingJobs() })

/** Checks one answer; `before` is the database before the request. */
export async function checkAnswer(h: Harness, answer: Answer, before: string, matrix: boolean) {
  const context = `${answer.status} ${answer.text.slice(0, 300)}`
  expect(answer.status, context).toBeLessThan(500)
  expect(answer.json, context).toBeDefined()
  expect(answer.contentType ?? '', context).toContain('application/json')
  if (answer.status >= 400) {
    expect(typeof answer.json.error, context).toBe('string')
    expect(answer.json.error.length, context).toBeGreaterThan(3)
    expect(answer.json.error, context).not.toBe('Internal error')
    if (matrix) expect(answer.json.errcode, context).toMatch(/^M_[A-Z_]+$/)
  }
  if (answer.status !== 200) expect(await snapshot(h), context).toBe(before)
  expect(
    h.logs.parsed().slice(answer.logged).filter((l) => l.msg === 'unexpected error' || l.level === 'fatal'),
    context,
  ).toEqual([])
}

/** Any JSON value, including the awkward ones (lone surrogates, huge numbers, -0). */
export const anyJson = fc.oneof(
  fc.jsonValue(),
  fc.string({ unit: 'binary' }),
  fc.constantFrom(null, true, false, 0, -0, 1e308, -1, 2 ** 53 + 1, '', ' ', '\u0000', '\ud800', '💥'.repeat(3)),
)

/** A text, of any unicode (lone surrogates included) or the kinds that break parsers. */
export const anyText = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 80 }),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.constantFrom('', ' ', '%00', '\r\n', '../../etc/passwd', "'; DROP TABLE registrations; --", '{{}}', '%selector%', 'a'.repeat(600)),
)

/** Bytes that are often not UTF-8: lone continuation bytes, overlongs, truncated sequences. */
export const invalidUtf8 = fc
  .tuple(fc.uint8Array({ maxLength: 200 }), fc.constantFrom([0xff], [0xc0, 0xaf], [0xe2, 0x82], [0xed, 0xa0, 0x80], [0x80], [0xf8, 0x88, 0x80, 0x80, 0x80]))
  .map(([bytes, bad]) => {
    const out = new Uint8Array(bytes.length + bad.length)
    out.set(bytes.subarray(0, bytes.length >> 1))
    out.set(bad, bytes.length >> 1)
    out.set(bytes.subarray(bytes.length >> 1), (bytes.length >> 1) + bad.length)
    return out
  })

export const RUNS = Number(process.env.PROPERTY_RUNS ?? 150)
