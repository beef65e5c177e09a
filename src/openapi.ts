/**
 * The OpenAPI 3.1 document of the public endpoints, served at /openapi.json. It is built from the
 * very TypeBox schemas the routes validate with (TypeBox schemas are JSON Schema, which OpenAPI
 * 3.1 takes as is), so it cannot drift from what the routes accept. Built by hand rather than with
 * @elysiajs/openapi: that plugin adds a UI route and its type-derived mode needs a .d.ts at run
 * time (STACK-NOTES), and this way the document is plain data that works the same in the binary.
 */
import pkg from '../package.json' with { type: 'json' }
import { NOTIFY_PATH, REMOVAL_PATH, REPORT_PATH } from './config.ts'
import { NotifyBodySchema, NotifyResponseSchema } from './gateway/schema.ts'
import { ReportBodySchema } from './report/parse.ts'

export const OPENAPI_PATH = '/openapi.json'

/** TypeBox keeps its bookkeeping under symbol keys; a JSON round trip leaves plain JSON Schema. */
const plain = (schema: unknown) => JSON.parse(JSON.stringify(schema)) as Record<string, unknown>

// Taken when this module loads, before any route has run: Elysia adjusts a route's schemas in
// place when it compiles the route on first use.
const SCHEMAS = {
  TokenReport: plain(ReportBodySchema),
  NotifyBody: plain(NotifyBodySchema),
  NotifyResponse: plain(NotifyResponseSchema),
}

const json = (ref: string) => ({ 'application/json': { schema: { $ref: `#/components/schemas/${ref}` } } })
const answer = (description: string, ref?: string) => (ref ? { description, content: json(ref) } : { description })

function reportOperation(summary: string, description: string) {
  return {
    post: {
      tags: ['Acrobits'],
      summary,
      description,
      requestBody: {
        required: true,
        description:
          'The provisioning template decides the field names and the content type; every known spelling is accepted (FIELD-GUIDE §1).',
        content: {
          'application/json': { schema: { $ref: '#/components/schemas/TokenReport' } },
          'application/x-www-form-urlencoded': { schema: { $ref: '#/components/schemas/TokenReport' } },
        },
      },
      responses: {
        '200': answer('Stored (the app ignores the body)', 'Empty'),
        '400': answer('Malformed report (missing selector, token without app id, a field too long or with a control character, no Matrix user for the account, ...); the field is named', 'Error'),
        '401': answer('Wrong or missing username/password (AUTH_MODE=matrix or ext)', 'Error'),
        '403': answer('The selector is stored for another Matrix user (reports only; a removal by another user answers 200 and changes nothing), or (AUTH_MODE=ext) the CTI does not allow the account chat', 'Error'),
        '413': answer('Body larger than 8 KiB', 'Error'),
        '429': answer('Too many failed logins or password checks, or too many reports for this Matrix user; see Retry-After', 'Error'),
        '503': answer('Homeserver, CTI server (AUTH_MODE=ext) or token store unavailable, too many password checks in flight, or a required variable is not set', 'Error'),
      },
    },
  }
}

export function buildOpenApiDocument() {
  return {
    openapi: '3.1.0',
    info: {
      title: 'matrix2acrobits',
      version: pkg.version,
      description: 'Push gateway between a Matrix homeserver (Synapse) and Acrobits softphone apps.',
      license: { name: 'MIT', identifier: 'MIT' },
    },
    tags: [
      { name: 'Acrobits', description: 'Called by the Acrobits app (Push Token Reporter, Account Removal Reporter)' },
      { name: 'Matrix', description: 'Called by the homeserver (Push Gateway API)' },
      { name: 'Operations', description: 'Health, readiness, metrics' },
    ],
    paths: {
      [REPORT_PATH]: reportOperation('Push Token Reporter', 'Stores the push tokens of an account and registers its pusher on the homeserver.'),
      [REMOVAL_PATH]: reportOperation('Account Removal Reporter', 'Forgets an account and deletes its pusher on the homeserver.'),
      [NOTIFY_PATH]: {
        post: {
          tags: ['Matrix'],
          summary: 'Push Gateway API: notify',
          description:
            'One notification for one device (Synapse). Answers 200 with the pushkeys to reject, or 5xx when a later retry can still deliver.',
          requestBody: { required: true, content: json('NotifyBody') },
          responses: {
            '200': answer('Handled; `rejected` lists pushkeys the PNM no longer knows', 'NotifyResponse'),
            '400': answer('M_NOT_JSON / M_BAD_JSON (also more than 16 devices)', 'MatrixError'),
            '403': answer('Caller not in NOTIFY_ALLOWED_IPS', 'MatrixError'),
            '413': answer('Body larger than 512 KiB', 'MatrixError'),
            '502': answer('The PNM did not accept the notification; retry later', 'MatrixError'),
            '503': answer('Overloaded or token store unavailable; retry later', 'MatrixError'),
          },
        },
      },
      '/health': {
        get: {
          tags: ['Operations'],
          summary: 'Liveness',
          responses: { '200': answer('The process answers', 'Status') },
        },
      },
      '/ready': {
        get: {
          tags: ['Operations'],
          summary: 'Readiness: database writable and not draining',
          responses: { '200': answer('Ready', 'Status'), '503': answer('Draining or database unavailable', 'Status') },
        },
      },
      '/metrics': {
        get: {
          tags: ['Operations'],
          summary: 'Prometheus metrics (on METRICS_ADDRESS instead when that is set)',
          responses: { '200': { description: 'Prometheus text format', content: { 'text/plain': { schema: { type: 'string' } } } } },
        },
      },
      [OPENAPI_PATH]: {
        get: {
          tags: ['Operations'],
          summary: 'This document',
          responses: { '200': { description: 'OpenAPI 3.1', content: { 'application/json': { schema: { type: 'object' } } } } },
        },
      },
    },
    components: {
      schemas: {
        ...structuredClone(SCHEMAS),
        Empty: { type: 'object', additionalProperties: false },
        Error: { type: 'object', required: ['error'], properties: { error: { type: 'string' } } },
        MatrixError: {
          type: 'object',
          required: ['errcode', 'error'],
          properties: { errcode: { type: 'string', examples: ['M_BAD_JSON'] }, error: { type: 'string' } },
        },
        Status: {
          type: 'object',
          required: ['status'],
          properties: { status: { type: 'string' }, error: { type: 'string' } },
        },
      },
    },
  }
}

let cached: ReturnType<typeof buildOpenApiDocument> | undefined
/** The document, built on first use. */
export const openApiDocument = () => (cached ??= buildOpenApiDocument())
