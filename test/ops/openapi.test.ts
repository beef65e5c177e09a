/**
 * /openapi.json: a valid OpenAPI 3.1 document (checked with an OpenAPI schema validator), whose
 * schemas are valid JSON Schema 2020-12 and are the very schemas the routes validate with, and
 * which documents exactly the routes the app serves.
 */
import { Validator } from '@seriousme/openapi-schema-validator'
import Ajv2020 from 'ajv/dist/2020'
import { afterEach, describe, expect, test } from 'bun:test'
import { REMOVAL_PATH, REPORT_PATH } from '../../src/config.ts'
import { NotifyBodySchema, NotifyResponseSchema } from '../../src/gateway/schema.ts'
import { ReportBodySchema } from '../../src/report/parse.ts'
import { startHarness, type Harness } from '../harness.ts'

let h: Harness
afterEach(async () => h?.close())

const plain = (schema: unknown) => JSON.parse(JSON.stringify(schema))

interface Doc {
  openapi: string
  info: { version: string }
  paths: Record<string, Record<string, unknown>>
  components: { schemas: Record<string, object> }
}

describe('/openapi.json', () => {
  test('is a valid OpenAPI 3.1 document with valid JSON Schemas', async () => {
    h = await startHarness()
    const res = await h.request('GET', '/openapi.json')
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toStartWith('application/json')
    const doc = res.json as Doc
    expect(doc.openapi).toBe('3.1.0')
    const pkg = (await Bun.file(new URL('../../package.json', import.meta.url)).json()) as { version: string }
    expect(doc.info.version).toBe(pkg.version)

    const validator = new Validator()
    const result = await validator.validate(structuredClone(doc) as unknown as Record<string, unknown>)
    expect(result.errors ?? []).toEqual([])
    expect(result.valid).toBe(true)
    expect(validator.version).toBe('3.1')
    // The validator does refuse a broken document (so the pass above means something).
    const broken = structuredClone(doc) as Partial<Doc>
    delete broken.info
    expect((await new Validator().validate(broken as unknown as Record<string, unknown>)).valid).toBe(false)

    const ajv = new Ajv2020({ strict: true, strictRequired: false, allErrors: true })
    for (const [name, schema] of Object.entries(doc.components.schemas)) {
      expect({ name, valid: ajv.validateSchema(schema) }).toEqual({ name, valid: true })
      ajv.compile(schema)
    }
  })

  test('documents exactly the routes the app serves, with the schemas the routes validate with', async () => {
    h = await startHarness()
    const doc = (await h.request('GET', '/openapi.json')).json as Doc
    const served = h.app.routes
      .filter((r) => r.method === 'GET' || r.method === 'POST')
      .map((r) => `${r.method} ${r.path.replace(/:(\w+)/g, '{$1}')}`)
      .sort()
    const documented = Object.entries(doc.paths)
      .flatMap(([path, ops]) => Object.keys(ops).filter((m) => m === 'get' || m === 'post').map((method) => `${method.toUpperCase()} ${path}`))
      .sort()
    expect(documented).toEqual(served)
    expect(doc.components.schemas.NotifyBody).toEqual(plain(NotifyBodySchema))
    expect(doc.components.schemas.NotifyResponse).toEqual(plain(NotifyResponseSchema))
    expect(doc.components.schemas.TokenReport).toEqual(plain(ReportBodySchema))
    for (const path of [REPORT_PATH, REMOVAL_PATH]) {
      const body = (doc.paths[path]!.post as { requestBody: { content: Record<string, unknown> } }).requestBody.content
      expect(Object.keys(body).sort()).toEqual(['application/json', 'application/x-www-form-urlencoded'])
    }
  })

  test('a body Synapse really sends, and a badge-only update, match the documented notify schema', async () => {
    h = await startHarness()
    const doc = (await h.request('GET', '/openapi.json')).json as Doc
    const ajv = new Ajv2020({ strict: false })
    for (const [name, schema] of Object.entries(doc.components.schemas)) ajv.addSchema(schema, `#/components/schemas/${name}`)
    const notify = ajv.compile(doc.components.schemas.NotifyBody!)
    const device = { app_id: 'com.acrobits.softphone', pushkey: 'k', pushkey_ts: 1_700_000_000, data: { format: 'event_id_only' } }
    expect(notify({ notification: { event_id: '$e', room_id: '!r:x', prio: 'high', counts: { unread: 0 }, devices: [device] } })).toBe(true)
    expect(notify({ notification: { id: '', type: null, sender: '', counts: { unread: 3 }, devices: [{ ...device, tweaks: {} }] } })).toBe(true)
    expect(notify({ notification: { event_id: '$e' } })).toBe(false)
  })

  test('other methods are 405', async () => {
    h = await startHarness()
    expect((await h.request('POST', '/openapi.json', {})).status).toBe(405)
  })
})
