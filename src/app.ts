/**
 * The HTTP surface: routes and the one error mapper. No I/O at import; everything the routes use
 * is passed in, so tests build the app against fakes and drive it with `app.handle()`.
 */
import { Elysia, type Static, type TSchema } from 'elysia'
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler'
import type { ValueError } from '@sinclair/typebox/value'
import type { Logger } from 'pino'
import { readBodyText } from './body.ts'
import { formFields } from './form-fields.ts'
import { clientAddress, isPrivateAddress } from './client-address.ts'
import { FETCH_PATH, NOTIFY_PATH, REMOVAL_PATH, REPORT_PATH, SEND_PATH, type Config } from './config.ts'
import { AppError, badRequest, forbidden, methodNotAllowed, notConfigured, notFound, notJson, unrecognized } from './errors.ts'
import { NotifyBodySchema, type Notification, type NotifyBody } from './gateway/schema.ts'
import type { Metrics } from './metrics.ts'
import { OPENAPI_PATH, openApiDocument } from './openapi.ts'
import { normalizeReport, parseReportBody, REPORT_BODY_LIMIT, ReportBodySchema, type Report, type ReportBody } from './report/parse.ts'
import type { TokenStore } from './store/types.ts'
import type { SendAnswer } from './messages/send.ts'
import { normalizeSend, RECIPIENT_FIELDS, SEND_BODY_LIMIT, SendBodySchema, type SendBody, type SendRequest } from './messages/send-request.ts'
import { assertHomeserver, parseTransactionBody, TRANSACTION_BODY_LIMIT, type TransactionHandler } from './appservice/transactions.ts'
import { FETCH_BODY_LIMIT, FetchBodySchema, normalizeFetch, type FetchAnswer, type FetchBody, type FetchRequest } from './messages/fetch.ts'

/** The reference push gateway (Sygnal) caps notify bodies at 512 KiB. */
export const NOTIFY_BODY_LIMIT = 512 * 1024

export interface AppDeps {
  config: Config
  store: TokenStore
  log: Logger
  metrics: Metrics
  notify: (n: Notification, request: RequestRecord) => Promise<{ rejected: string[] }>
  reports: {
    report(r: Report, client: string | undefined, log: Logger): Promise<void>
    remove(r: Report, client: string | undefined, log: Logger): Promise<void>
  }
  /** True once shutdown has begun: /ready turns 503 so a balancer stops sending. */
  draining: () => boolean
  /** Serve /metrics on this app (false when METRICS_ADDRESS gives it a listener of its own). */
  serveMetrics: boolean
  /** Send Message. */
  sendMessage: (r: SendRequest, client: string | undefined, log: Logger) => Promise<SendAnswer>
  /** Messaging: the appservice routes and Fetch Messages; `missing` names what is unset. */
  messaging: {
    missing?: string
    hsToken?: string
    transactions?: TransactionHandler
    fetch: (r: FetchRequest, client: string | undefined, log: Logger) => Promise<FetchAnswer>
  }
}

/**
 * What the one access line of a request says, filled in while it is handled. Its `id` is the
 * X-Request-ID answer header and the `req_id` of every line logged for the request.
 */
export interface RequestRecord {
  readonly id: string
  readonly started: number
  /** Added to the access line by the handler (a notify's outcome per device). */
  fields?: Record<string, unknown>
}

/** Probes and scrapes arrive every few seconds: their access lines are DEBUG unless they fail. */
const QUIET_ROUTES: ReadonlySet<string> = new Set(['/health', '/ready', '/metrics'])

const isMatrixPath = (path: string) => path.startsWith('/_matrix/')

export function errorBody(path: string, error: AppError) {
  return isMatrixPath(path) || error.errcode === 'M_UNRECOGNIZED'
    ? { errcode: error.errcode, error: error.message }
    : { error: error.message }
}

/** "notification.devices: Expected array", from TypeBox's first error. */
function validationMessage(error: ValueError): string {
  const path = error.path.replace(/^\//, '').replaceAll('/', '.')
  const raw = error.message
  const message = raw === 'Expected union value' ? 'has the wrong type' : raw
  return path ? `${path}: ${message}` : message
}

/**
 * Validates a parsed body, in the parse hook, instead of a route `body:` schema: Elysia's
 * ValidationError renders the whole body with JSON.stringify(..., 2) while it is built, quadratic
 * in the nesting depth, so a 512 KiB body nested 50,000 levels deep cost seconds and ended in a
 * 500 (stack or memory exhausted). TypeBox yields the first error lazily, in linear time. The
 * schemas still describe the routes in /openapi.json.
 */
function assertMatches<T extends TSchema>(check: TypeCheck<T>, value: unknown): Static<T> {
  // Checking is linear too and a quarter of the cost of the error iterator: a valid body (nearly
  // every one) never starts it. Compiled (TypeCompiler) once per app: about three quarters of the
  // time of the interpreted Value.Check (1.9 against 2.6 µs for a full-format notify).
  if (check.Check(value)) return value
  const first = check.Errors(value).First()
  if (first) throw badRequest(validationMessage(first))
  return value as Static<T>
}

/** A GET's query string as fields, read as a form body is. */
const queryFields = (request: Request, once?: readonly string[]) => formFields(new URL(request.url).searchParams, once)

const requests = new WeakMap<Request, RequestRecord>()

type Server = { requestIP(r: Request): { address: string } | null } | null

export function createApp(deps: AppDeps) {
  const { log } = deps
  // Reports wait for the homeserver for milliseconds: a child logger costs nothing there. The
  // notify path passes the id as a field instead (RequestRecord).
  const reqLog = (request: Request) => log.child({ req_id: requests.get(request)?.id })

  // A reverse proxy on this host or network that TRUST_PROXY does not name: every client then
  // shares the proxy's address, and with it one rate-limit budget. Said once, not per request.
  let proxyUnnamed = deps.config.trustProxy === undefined
  function warnIfProxyUnnamed(request: Request, server: Server) {
    if (!proxyUnnamed || !request.headers.has('x-forwarded-for')) return
    const socket = server?.requestIP(request)?.address
    if (socket === undefined || !isPrivateAddress(socket)) return
    proxyUnnamed = false
    log.warn(
      { peer: socket },
      "X-Forwarded-For arrives from a loopback or private address but TRUST_PROXY is not set: every client behind that proxy shares its address and rate limits; set TRUST_PROXY to the proxy's address",
    )
  }

  /**
   * The one line per request, written as the answer is decided: method, route, status, duration,
   * req_id, what the handler added (a notify's outcome per device) and, for a refusal, why.
   */
  function accessLine(request: Request, route: string, status: number, extra?: Record<string, unknown>) {
    const level = status < 500 && QUIET_ROUTES.has(route) ? 'debug' : 'info'
    if (!log.isLevelEnabled(level)) return
    const record = requests.get(request)
    const line: Record<string, unknown> = {
      req_id: record?.id,
      method: request.method,
      route,
      status,
      duration_ms: record ? Math.round((performance.now() - record.started) * 100) / 100 : undefined,
    }
    if (record?.fields) Object.assign(line, record.fields)
    if (extra) Object.assign(line, extra)
    log[level](line, 'request')
  }

  const reportBody = TypeCompiler.Compile(ReportBodySchema)
  const notifyBody = TypeCompiler.Compile(NotifyBodySchema)
  const sendBody = TypeCompiler.Compile(SendBodySchema)
  const fetchBody = TypeCompiler.Compile(FetchBodySchema)
  const reportHooks = {
    parse: async ({ request }: { request: Request }) =>
      assertMatches(reportBody, parseReportBody(request.headers.get('content-type'), await readBodyText(request, REPORT_BODY_LIMIT))),
  }

  // Route bodies are typed by casts: the parse hooks validate them (assertMatches), so Elysia is
  // given no body schema to check a second time.
  const app = new Elysia({ name: 'matrix2acrobits' })
    .onRequest(({ request, set, server }) => {
      warnIfProxyUnnamed(request, server)
      const id = Bun.randomUUIDv7()
      requests.set(request, { id, started: performance.now() })
      set.headers['x-request-id'] = id
    })
    // Not onAfterResponse: Elysia runs that hook in a setImmediate callback per request. Errors
    // write their line in onError.
    .onAfterHandle(({ request, route, path, set }) => {
      accessLine(request, route || path, typeof set.status === 'number' ? set.status : 200)
    })
    .onError(({ code, error, path, request, route, set }) => {
      // Elysia wraps what a parse hook throws in a ParseError; the cause is the real answer.
      const cause = code === 'PARSE' ? (error as Error).cause : undefined
      let appError: AppError
      if (error instanceof AppError) appError = error
      else if (cause instanceof AppError) appError = cause
      else if (code === 'PARSE') appError = notJson()
      else if (code === 'NOT_FOUND') appError = unrecognized()
      else {
        log.error({ req_id: requests.get(request)?.id, err: (error as Error)?.message, code }, 'unexpected error')
        appError = new AppError('M_UNKNOWN', 500, 'Internal error')
      }
      // The reason of a refusal, in the request's one line.
      accessLine(request, route || path, appError.status, { errcode: appError.errcode, error: appError.message })
      set.status = appError.status
      if (appError.retryAfter !== undefined) set.headers['retry-after'] = String(appError.retryAfter)
      return Response.json(errorBody(path, appError), {
        status: appError.status,
        headers: set.headers as Record<string, string>,
      })
    })

    .post(
      REPORT_PATH,
      ({ body, request, server }) =>
        deps.reports
          .report(normalizeReport(body as ReportBody), peerOf(request, server), reqLog(request))
          .then(() => ({})),
      reportHooks,
    )
    .post(
      REMOVAL_PATH,
      ({ body, request, server }) =>
        deps.reports
          .remove(normalizeReport(body as ReportBody), peerOf(request, server), reqLog(request))
          .then(() => ({})),
      reportHooks,
    )
    .post(
      NOTIFY_PATH,
      ({ body, request, server }) => {
        assertNotifyAllowed(request, server)
        return deps.notify((body as NotifyBody).notification, requests.get(request)!)
      },
      {
        parse: async ({ request, server }) => {
          // Before the body is read: an outsider gets 403, not a free body parser and its errors.
          assertNotifyAllowed(request, server)
          const text = await readBodyText(request, NOTIFY_BODY_LIMIT)
          let parsed: unknown
          try {
            parsed = JSON.parse(text)
          } catch {
            throw notJson()
          }
          return assertMatches(notifyBody, parsed)
        },
      },
    )
    .post(SEND_PATH, ({ body, request, server }) => deps.sendMessage(normalizeSend(body as SendBody), peerOf(request, server), reqLog(request)), {
      parse: async ({ request }) =>
        assertMatches(sendBody, parseReportBody(request.headers.get('content-type'), await readBodyText(request, SEND_BODY_LIMIT), RECIPIENT_FIELDS)),
    })
    .get(SEND_PATH, ({ request, server }) => {
      const query = queryFields(request, RECIPIENT_FIELDS)
      return deps.sendMessage(normalizeSend(assertMatches(sendBody, query)), peerOf(request, server), reqLog(request))
    })
    .put(
      '/_matrix/app/v1/transactions/:txnId',
      ({ body, params, request }) => messaging().transactions!.handle(params.txnId, body as unknown[], reqLog(request)).then(() => ({})),
      {
        parse: async ({ request }) => {
          assertAppservice(request)
          return parseTransactionBody(await readBodyText(request, TRANSACTION_BODY_LIMIT))
        },
      },
    )
    .post('/_matrix/app/v1/ping', ({ request }) => {
      // The body ({"transaction_id": ...}) says nothing the answer depends on.
      assertAppservice(request)
      return {}
    })
    .get('/_matrix/app/v1/users/:userId', ({ request }) => {
      assertAppservice(request)
      throw notFound('This application service creates no users')
    })
    .get('/_matrix/app/v1/rooms/:alias', ({ request }) => {
      assertAppservice(request)
      throw notFound('This application service creates no rooms')
    })
    .post(FETCH_PATH, ({ body, request, server }) => deps.messaging.fetch(normalizeFetch(body as FetchBody), peerOf(request, server), reqLog(request)), {
      parse: async ({ request }) =>
        assertMatches(fetchBody, parseReportBody(request.headers.get('content-type'), await readBodyText(request, FETCH_BODY_LIMIT))),
    })
    .get(FETCH_PATH, ({ request, server }) => {
      const query = queryFields(request)
      return deps.messaging.fetch(normalizeFetch(assertMatches(fetchBody, query)), peerOf(request, server), reqLog(request))
    })
    .get('/health', () => ({ status: 'ok' }))
    .get(OPENAPI_PATH, () => openApiDocument())
    .get('/ready', async ({ request, set }) => {
      // A 503 says why in its access line too, as every refusal does.
      const record = requests.get(request)
      if (deps.draining()) {
        set.status = 503
        if (record) record.fields = { error: 'draining' }
        return { status: 'draining' }
      }
      try {
        await deps.store.probeWritable()
      } catch (e) {
        set.status = 503
        if (record) record.fields = { error: `database unavailable: ${(e as Error).message}` }
        return { status: 'database unavailable', error: (e as Error).message }
      }
      return { status: 'ready' }
    })

  if (deps.serveMetrics) app.get('/metrics', () => metricsResponse(deps))

  for (const path of ['/_matrix/app/v1/transactions/:txnId', '/_matrix/app/v1/ping', FETCH_PATH, SEND_PATH, REPORT_PATH, REMOVAL_PATH, NOTIFY_PATH, '/health', '/ready', OPENAPI_PATH, ...(deps.serveMetrics ? ['/metrics'] : [])]) {
    app.all(path, () => {
      throw methodNotAllowed()
    })
  }

  function messaging() {
    const m = deps.messaging
    if (m.missing !== undefined || m.transactions === undefined) throw notConfigured(m.missing ?? 'MATRIX_HS_TOKEN', 'Messaging')
    return m
  }

  /** Before the body is read: Synapse proves itself with the hs_token. */
  function assertAppservice(request: Request) {
    const m = messaging()
    assertHomeserver(request, m.hsToken!)
  }

  function assertNotifyAllowed(request: Request, server: Server) {
    const allowed = deps.config.notifyAllowedIps
    if (!allowed) return
    const peer = peerOf(request, server)
    if (peer === undefined || !allowed.has(peer)) throw forbidden('This address may not call the push gateway (NOTIFY_ALLOWED_IPS)')
  }

  function peerOf(request: Request, server: Server) {
    return clientAddress(server?.requestIP(request)?.address, request.headers.get('x-forwarded-for'), deps.config.trustProxy)
  }

  return app
}

export async function metricsResponse(deps: Pick<AppDeps, 'metrics' | 'store'>): Promise<Response> {
  try {
    const [tokens, pending] = await Promise.all([deps.store.countRegistrations(), deps.store.countPendingJobs()])
    deps.metrics.storedTokens.set(tokens)
    deps.metrics.pusherJobsPending.set(pending)
  } catch {
    // A database fault must not hide the other metrics.
  }
  return new Response(await deps.metrics.registry.metrics(), {
    headers: { 'content-type': deps.metrics.registry.contentType },
  })
}
