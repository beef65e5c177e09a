/**
 * Hostile input on the push gateway (`POST /_matrix/push/v1/notify`): arbitrary JSON, arbitrary
 * values in every field, deep nesting, huge arrays, invalid UTF-8, wrong content types. Never a
 * 5xx, never a crash, the database unchanged by a rejection, every rejection a Matrix JSON error
 * that names the problem.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import fc from 'fast-check'
import { APP_ID, SELECTOR, TOKEN, startHarness, type Harness } from '../harness.ts'
import { CONTENT_TYPES, RUNS, anyJson, anyText, checkAnswer, invalidUtf8, send, snapshot } from './support.ts'

const PATH = '/_matrix/push/v1/notify'
let h: Harness

beforeAll(async () => {
  h = await startHarness({ env: { AUTH_MODE: 'none' } })
  const stored = await h.report({ selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, username: 'alice' })
  expect(stored.status).toBe(200)
  // Background retries would change the database between two snapshots.
  await h.worker.stop()
})
afterAll(() => h.close())

async function notify(body: string | Uint8Array, contentType = 'application/json') {
  const before = await snapshot(h)
  const answer = await send(h, PATH, body, contentType)
  await checkAnswer(h, answer, before, true)
  if (answer.status === 200) {
    expect(Array.isArray(answer.json.rejected)).toBe(true)
    expect(answer.json.rejected.every((k: unknown) => typeof k === 'string')).toBe(true)
  }
  return answer
}

const device = fc.record(
  {
    app_id: fc.oneof(anyText, anyJson, fc.constant(APP_ID)),
    pushkey: fc.oneof(anyText, anyJson, fc.constant(TOKEN)),
    pushkey_ts: anyJson,
    data: anyJson,
    tweaks: anyJson,
  },
  { requiredKeys: [] },
)

const notificationFields = fc.record(
  {
    id: fc.oneof(anyText, anyJson),
    event_id: fc.oneof(anyText, anyJson),
    room_id: fc.oneof(anyText, anyJson),
    type: fc.oneof(anyText, anyJson),
    sender: fc.oneof(anyText, anyJson),
    sender_display_name: fc.oneof(anyText, anyJson),
    room_name: fc.oneof(anyText, anyJson),
    room_alias: fc.oneof(anyText, anyJson),
    user_is_target: anyJson,
    prio: fc.oneof(anyText, fc.constantFrom('high', 'low'), anyJson),
    content: fc.oneof(anyJson, fc.dictionary(anyText, anyJson, { maxKeys: 5 })),
    counts: fc.oneof(anyJson, fc.record({ unread: anyJson, missed_calls: anyJson }, { requiredKeys: [] })),
    devices: fc.oneof(fc.array(device, { maxLength: 4 }), anyJson),
  },
  { requiredKeys: [] },
)

describe('notify under hostile input', () => {
  test('arbitrary JSON bodies', async () => {
    await fc.assert(fc.asyncProperty(anyJson, async (value) => void (await notify(JSON.stringify(value)))), { numRuns: RUNS })
  })

  test('arbitrary values in every field of the notification and its devices', async () => {
    await fc.assert(
      fc.asyncProperty(notificationFields, fc.dictionary(anyText, anyJson, { maxKeys: 2 }), async (fields, extra) => {
        await notify(JSON.stringify({ ...extra, notification: fields }))
      }),
      { numRuns: RUNS * 2 },
    )
  })

  test('arbitrary bytes, invalid UTF-8 and every content type', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(invalidUtf8, fc.uint8Array({ maxLength: 300 })), fc.constantFrom(...CONTENT_TYPES), async (bytes, type) => {
        const answer = await notify(bytes, type)
        expect(answer.status).toBe(400)
      }),
      { numRuns: RUNS },
    )
  })

  test('a valid notification under any content type is served the same', async () => {
    for (const type of CONTENT_TYPES) {
      const answer = await notify(JSON.stringify({ notification: { devices: [{ app_id: 'x', pushkey: `k-${type}` }] } }), type)
      expect(answer.status).toBe(200)
      expect(answer.json.rejected).toEqual([`k-${type}`])
    }
  })

  test('deep nesting, at the top and inside open fields', async () => {
    const depth = 100_000
    for (const body of [
      '['.repeat(depth) + ']'.repeat(depth),
      '{"a":'.repeat(depth / 2) + '1' + '}'.repeat(depth / 2),
      `{"notification":{"devices":[],"content":${'{"a":'.repeat(depth / 2)}1${'}'.repeat(depth / 2)}}}`,
      `{"notification":{"devices":[{"app_id":"x","pushkey":"y","data":${'['.repeat(depth)}${']'.repeat(depth)}}]}}`,
      `{"notification":{"devices":[],"counts":${'{"unread":'.repeat(depth / 4)}1${'}'.repeat(depth / 4)}}}`,
    ]) {
      await notify(body)
    }
  })

  test('huge arrays', async () => {
    // Synapse sends one device per notify; past 16 the body is refused before any lookup.
    const many = (n: number) => Array.from({ length: n }, (_, i) => ({ app_id: 'a', pushkey: String(i) }))
    const sixteen = await notify(JSON.stringify({ notification: { devices: many(16) } }))
    expect(sixteen.status).toBe(200)
    expect(sixteen.json.rejected).toHaveLength(16)
    const refused = await notify(JSON.stringify({ notification: { devices: many(15_000) } }))
    expect(refused.status).toBe(400)
    expect(refused.json).toEqual({ errcode: 'M_BAD_JSON', error: 'notification.devices: Expected array length to be less or equal to 16' })
    await notify(JSON.stringify({ notification: { devices: [], content: { body: Array(100_000).fill(0) } } }))
    await notify(JSON.stringify(Array(200_000).fill(null)))
  })

  test('rejections name the problem', async () => {
    const cases: Array<[string | Uint8Array, RegExp]> = [
      ['', /JSON/],
      ['{"notification":', /JSON/],
      [new Uint8Array([0x7b, 0xff, 0x7d]), /UTF-8/],
      ['[]', /notification|object/i],
      ['{}', /notification/],
      ['{"notification":{}}', /devices/],
      ['{"notification":{"devices":{}}}', /devices/],
      ['{"notification":{"devices":[{"pushkey":"k"}]}}', /app_id/],
      ['{"notification":{"devices":[{"app_id":"a","pushkey":7}]}}', /pushkey/],
      ['{"notification":{"devices":[],"prio":5}}', /prio/],
      ['{"notification":{"devices":[],"counts":{"unread":"two"}}}', /unread|counts/],
    ]
    for (const [body, message] of cases) {
      const answer = await notify(body)
      expect(answer.status).toBe(400)
      expect(answer.json.errcode).toMatch(/^M_(BAD|NOT)_JSON$/)
      expect(answer.json.error).toMatch(message)
    }
  })

  test('after all of it the service still delivers', async () => {
    h.pnm.requests.length = 0
    const answer = await notify(
      JSON.stringify({ notification: { event_id: '$after-fuzz', room_id: '!r:x', prio: 'high', counts: { unread: 1 }, devices: [{ app_id: APP_ID, pushkey: TOKEN }] } }),
    )
    expect(answer.json).toEqual({ rejected: [] })
    expect(h.pnm.requests).toHaveLength(1)
    expect((await h.store.getRegistration(SELECTOR))?.tokenMsgs).toBe(TOKEN)
  })
})
