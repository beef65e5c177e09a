/**
 * The OpenAPI 3.1 document of the public endpoints, served at /openapi.json. It is built from the
 * very TypeBox schemas the routes validate with (TypeBox schemas are JSON Schema, which OpenAPI
 * 3.1 takes as is), so it cannot drift from what the routes accept. Built by hand rather than with
 * @elysiajs/openapi: that plugin adds a UI route and its type-derived mode needs a .d.ts at run
 * time (STACK-NOTES), and this way the document is plain data that works the same in the binary.
 */
import pkg from '../package.json' with { type: 'json' }
import { FETCH_PATH, NOTIFY_PATH, REMOVAL_PATH, REPORT_PATH, SEND_PATH } from './config.ts'
import { FetchBodySchema } from './messages/fetch.ts'
import { NotifyBodySchema, NotifyResponseSchema } from './gateway/schema.ts'
import { ReportBodySchema } from './report/parse.ts'
import { SendBodySchema } from './messages/send-request.ts'

export const OPENAPI_PATH = '/openapi.json'

/** TypeBox keeps its bookkeeping under symbol keys; a JSON round trip leaves plain JSON Schema. */
const plain = (schema: unknown) => JSON.parse(JSON.stringify(schema)) as Record<string, unknown>

// Taken when this module loads, before any route has run: Elysia adjusts a route's schemas in
// place when it compiles the route on first use.
const SCHEMAS = {
  TokenReport: plain(ReportBodySchema),
  NotifyBody: plain(NotifyBodySchema),
  NotifyResponse: plain(NotifyResponseSchema),
  SendMessage: plain(SendBodySchema),
  FetchMessages: plain(FetchBodySchema),
}

const json = (ref: string) => ({ 'application/json': { schema: { $ref: `#/components/schemas/${ref}` } } })
const answer = (description: string, ref?: string) => (ref ? { description, content: json(ref) } : { description })
/** An Acrobits web service's body: the provisioning template picks JSON or form encoding. */
const templateBody = (ref: string, description?: string) => ({
  required: true,
  ...(description === undefined ? {} : { description }),
  content: {
    'application/json': { schema: { $ref: `#/components/schemas/${ref}` } },
    'application/x-www-form-urlencoded': { schema: { $ref: `#/components/schemas/${ref}` } },
  },
})
/** The same fields as a GET query string, one parameter per field of the body schema. */
const queryParameters = (schema: { properties: Record<string, unknown> }) =>
  Object.keys(schema.properties).map((name) => ({ name, in: 'query', required: false, schema: { type: 'string' } }))

function reportOperation(summary: string, description: string) {
  return {
    post: {
      tags: ['Acrobits'],
      summary,
      description,
      requestBody: templateBody(
        'TokenReport',
        'The provisioning template decides the field names and the content type; every known spelling is accepted (FIELD-GUIDE §1).',
      ),
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

/** Send Message: POST with a JSON or form body, or GET with the same fields in the query. */
function sendOperations() {
  const summary = 'Send Message'
  const description =
    'Sends a text as the user into the direct chat with `to` (found or created) or into the group `to` names; a read report becomes a read receipt. Answers the Matrix event id as `sms_id`.'
  const responses = {
    '200': answer('Sent (or a repeat within SEND_DEDUPE_SECONDS: the first sms_id)', 'SmsId'),
    '400': answer('Bad fields: unknown recipient (`to`), sending to oneself, empty or over 32 KiB body, unsupported content_type', 'Error'),
    '401': answer('Wrong or missing username/password', 'Error'),
    '403': answer('AUTH_MODE=none, or no longer a member of the group', 'Error'),
    '413': answer('Body larger than 256 KiB', 'Error'),
    '429': answer('Too many failed logins or more than 30 messages a minute; see Retry-After', 'Error'),
    '502': answer('The homeserver refused (or encrypted the new direct chat)', 'Error'),
    '503': answer('Homeserver unavailable (see Retry-After), or messaging is not configured', 'Error'),
  }
  return {
    post: { tags: ['Acrobits'], summary, description, requestBody: templateBody('SendMessage'), responses },
    get: { tags: ['Acrobits'], summary, description, parameters: queryParameters(SendBodySchema), responses },
  }
}

function fetchOperations() {
  const responses = {
    '200': {
      description: 'The user\'s deliveries after the cursors, oldest first, at most 100 per list',
      content: { 'application/json': { schema: { type: 'object', required: ['date', 'received_smss', 'sent_smss'] } } },
    },
    '400': answer('Malformed request', 'Error'),
    '401': answer('Wrong or missing username/password', 'Error'),
    '403': answer('AUTH_MODE=none: nobody\'s messages are readable without a password check', 'Error'),
    '413': answer('Body larger than 8 KiB', 'Error'),
    '503': answer('Messaging is off (a variable is not set) or the homeserver could not check the password', 'Error'),
  }
  const operation = { tags: ['Acrobits'], summary: 'Fetch Messages (modern)', responses }
  return {
    post: { ...operation, requestBody: templateBody('FetchMessages') },
    get: { ...operation, parameters: queryParameters(FetchBodySchema) },
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
      { name: 'Acrobits', description: 'Called by the Acrobits app (Push Token Reporter, Account Removal Reporter, Fetch Messages, Send Message)' },
      { name: 'Matrix', description: 'Called by the homeserver (Push Gateway API)' },
      { name: 'Operations', description: 'Health, readiness, metrics' },
    ],
    paths: {
      [REPORT_PATH]: reportOperation('Push Token Reporter', 'Stores the push tokens of an account and registers its pusher on the homeserver.'),
      [REMOVAL_PATH]: reportOperation('Account Removal Reporter', 'Forgets an account and deletes its pusher on the homeserver.'),
      [SEND_PATH]: sendOperations(),
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
      [FETCH_PATH]: fetchOperations(),
      '/_matrix/app/v1/transactions/{txnId}': {
        put: {
          tags: ['Matrix'],
          summary: 'Application service API: a transaction of events (Synapse, with the hs_token)',
          parameters: [{ name: 'txnId', in: 'path', required: true, schema: { type: 'string' } }],
          requestBody: { required: true, content: { 'application/json': { schema: { type: 'object', required: ['events'], properties: { events: { type: 'array' } } } } } },
          responses: {
            '200': answer('Committed (or committed before)', 'Empty'),
            '400': answer('M_NOT_JSON / M_BAD_JSON', 'MatrixError'),
            '401': answer('M_UNAUTHORIZED: no hs_token', 'MatrixError'),
            '403': answer('M_FORBIDDEN: wrong hs_token', 'MatrixError'),
            '413': answer('Body larger than 8 MiB', 'MatrixError'),
            '503': answer('Messaging off, or the index could not store it; Synapse retries', 'MatrixError'),
          },
        },
      },
      '/_matrix/app/v1/ping': {
        post: {
          tags: ['Matrix'],
          summary: 'Application service API: ping (Synapse, with the hs_token)',
          responses: { '200': answer('Reachable, token right', 'Empty'), '401': answer('No hs_token', 'MatrixError'), '403': answer('Wrong hs_token', 'MatrixError') },
        },
      },
      '/_matrix/app/v1/users/{userId}': {
        get: { tags: ['Matrix'], summary: 'Application service API: user query', responses: { '404': answer('M_NOT_FOUND: the proxy creates no users', 'MatrixError') } },
      },
      '/_matrix/app/v1/rooms/{alias}': {
        get: { tags: ['Matrix'], summary: 'Application service API: room alias query', responses: { '404': answer('M_NOT_FOUND: the proxy creates no rooms', 'MatrixError') } },
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
        SmsId: { type: 'object', required: ['sms_id'], properties: { sms_id: { type: 'string', description: 'The Matrix event id' } } },
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
