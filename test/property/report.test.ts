/**
 * Hostile input on the Push Token Reporter and the Account Removal Reporter: arbitrary JSON and
 * form bodies, arbitrary values in every field, deep nesting, huge arrays, invalid UTF-8, wrong
 * content types, on both authentication modes. Never a 5xx, never a crash, the database
 * unchanged by a rejection, every rejection a JSON error that names the problem.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import fc from 'fast-check'
import { APP_ID, SELECTOR, TOKEN, startHarness, type Harness } from '../harness.ts'
import { CONTENT_TYPES, RUNS, anyJson, anyText, checkAnswer, invalidUtf8, send, snapshot } from './support.ts'

const PATHS = ['/api/client/push_token_report', '/api/client/account_removal_report'] as const
const FIELDS = [
  'selector',
  'token_msgs',
  'app_id_msgs',
  'appId_msgs',
  'appid_msgs',
  'token_calls',
  'app_id_calls',
  'appId_calls',
  'appid_calls',
  'username',
  'password',
] as const

async function report(h: Harness, path: string, body: string | Uint8Array, contentType = 'application/json') {
  const before = await snapshot(h)
  const answer = await send(h, path, body, contentType)
  await checkAnswer(h, answer, before, false)
  if (answer.status === 200) expect(answer.json).toEqual({})
  return answer
}

const fieldValue = fc.oneof(anyText, anyJson, fc.constantFrom(SELECTOR, TOKEN, APP_ID, 'alice', '@alice:example.org', 'alice-password'))
const fields = fc.record(Object.fromEntries(FIELDS.map((f) => [f, fieldValue])) as Record<(typeof FIELDS)[number], typeof fieldValue>, {
  requiredKeys: [],
})
const path = fc.constantFrom(...PATHS)

for (const mode of ['none', 'matrix'] as const) {
  describe(`reports under hostile input (AUTH_MODE=${mode})`, () => {
    let h: Harness
    beforeAll(async () => {
      // Generous limits: 429 is a fine answer, but the run should also reach the store.
      const generous = '1000000'
      h = await startHarness({
        env: {
          AUTH_MODE: mode,
          AUTH_FAILURES_PER_MINUTE: generous,
          AUTH_USER_FAILURES_PER_MINUTE: generous,
          AUTH_CHECKS_PER_MINUTE: generous,
          REPORTS_PER_MINUTE: generous,
        },
      })
      await h.worker.stop()
    })
    afterAll(() => h.close())
    const runs = mode === 'none' ? RUNS : Math.ceil(RUNS / 3)

    test('arbitrary JSON bodies', async () => {
      await fc.assert(fc.asyncProperty(path, anyJson, async (p, value) => void (await report(h, p, JSON.stringify(value)))), { numRuns: runs })
    })

    test('arbitrary values in every field, as JSON', async () => {
      await fc.assert(
        fc.asyncProperty(path, fields, fc.dictionary(anyText, anyJson, { maxKeys: 2 }), async (p, f, extra) => {
          await report(h, p, JSON.stringify({ ...extra, ...f }))
        }),
        { numRuns: runs * 2 },
      )
    })

    test('arbitrary strings in every field, form-encoded', async () => {
      await fc.assert(
        fc.asyncProperty(path, fc.dictionary(fc.oneof(fc.constantFrom(...FIELDS), anyText), anyText, { maxKeys: 12 }), async (p, f) => {
          await report(h, p, new URLSearchParams(f).toString(), 'application/x-www-form-urlencoded')
        }),
        { numRuns: runs },
      )
    })

    test('arbitrary bytes, invalid UTF-8 and every content type', async () => {
      await fc.assert(
        fc.asyncProperty(path, fc.oneof(invalidUtf8, fc.uint8Array({ maxLength: 300 }), fc.string({ unit: 'binary' }).map((s) => s)), fc.constantFrom(...CONTENT_TYPES), async (p, body, type) => {
          await report(h, p, body, type)
        }),
        { numRuns: runs },
      )
    })

    test('deep nesting and huge arrays (within the size limit)', async () => {
      for (const p of PATHS) {
        for (const body of [
          '['.repeat(4000) + ']'.repeat(4000),
          `{"selector":${'['.repeat(4000)}${']'.repeat(4000)}}`,
          `{"selector":"${SELECTOR}","username":${'{"a":'.repeat(1200)}1${'}'.repeat(1200)}}`,
          JSON.stringify({ selector: SELECTOR, token_msgs: Array(3000).fill(0) }),
          JSON.stringify(Array(1500).fill(null)),
        ]) {
          const answer = await report(h, p, body)
          expect(answer.status).toBe(400)
        }
      }
    })

    test('rejections name the problem', async () => {
      const cases: Array<[string | Uint8Array, string, RegExp]> = [
        ['{"selector":', 'application/json', /JSON/],
        ['[1,2]', 'application/json', /JSON object/],
        [new Uint8Array([0x73, 0x3d, 0xff]), 'application/x-www-form-urlencoded', /UTF-8/],
        ['{}', 'application/json', /selector/],
        ['{"selector":"  "}', 'application/json', /selector/],
        ['{"selector":5}', 'application/json', /selector/],
        [`{"selector":"${SELECTOR}","token_msgs":"t"}`, 'application/json', /app_id_msgs/],
        [`{"selector":"${SELECTOR}","token_msgs":"${'t'.repeat(600)}","app_id_msgs":"a"}`, 'application/json', /token_msgs/],
        [`{"selector":"${SELECTOR}","password":{"x":1}}`, 'application/json', /password/],
      ]
      for (const p of PATHS) {
        for (const [body, type, message] of cases) {
          const answer = await report(h, p, body, type)
          expect(answer.status).toBe(400)
          expect(answer.json.error).toMatch(message)
        }
      }
    })
  })
}

describe('size limits', () => {
  let h: Harness
  beforeAll(async () => {
    h = await startHarness({ env: { AUTH_MODE: 'none' } })
  })
  afterAll(() => h.close())

  const stream = (bytes: number) =>
    new ReadableStream<Uint8Array>({
      start(c) {
        for (let sent = 0; sent < bytes; sent += 16 * 1024) c.enqueue(new Uint8Array(Math.min(16 * 1024, bytes - sent)).fill(0x20))
        c.close()
      },
    })

  async function post(path: string, body: string | ReadableStream<Uint8Array>, type = 'application/json') {
    const before = await snapshot(h)
    const response = await h.app.handle(new Request(`http://localhost${path}`, { method: 'POST', headers: { 'content-type': type }, body }))
    const json = (await response.json()) as any
    if (response.status !== 200) expect(await snapshot(h)).toBe(before)
    return { status: response.status, json }
  }

  test('notify: 512 KiB is accepted, one byte more is 413 M_TOO_LARGE, with or without Content-Length', async () => {
    const valid = JSON.stringify({ notification: { devices: [] } })
    const limit = 512 * 1024
    expect((await post('/_matrix/push/v1/notify', valid + ' '.repeat(limit - valid.length))).status).toBe(200)
    const over = await post('/_matrix/push/v1/notify', valid + ' '.repeat(limit - valid.length + 1))
    expect(over.status).toBe(413)
    expect(over.json).toEqual({ errcode: 'M_TOO_LARGE', error: `Request body is larger than ${limit} bytes` })
    expect((await post('/_matrix/push/v1/notify', stream(limit + 1))).status).toBe(413)
    expect((await post('/_matrix/push/v1/notify', stream(64 * 1024 * 1024))).status).toBe(413)
  })

  test('reports: a few KiB at most (8 KiB), JSON and form alike, on both report paths', async () => {
    for (const path of PATHS) {
      const json = JSON.stringify({ selector: SELECTOR, username: 'alice', pad: 'x'.repeat(9 * 1024) })
      const tooBig = await post(path, json)
      expect(tooBig.status).toBe(413)
      expect(tooBig.json.error).toMatch(/larger than 8192 bytes/)
      expect((await post(path, `selector=${SELECTOR}&pad=${'x'.repeat(9 * 1024)}`, 'application/x-www-form-urlencoded')).status).toBe(413)
      expect((await post(path, stream(9 * 1024))).status).toBe(413)
    }
    expect(await h.store.listRegistrations()).toEqual([])
  })
})
