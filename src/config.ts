/**
 * Configuration: environment variables in, a frozen Config out, or every problem at once.
 * Nothing is required to start; what is missing is reported by `capabilities()` and answered
 * with 503 by the requests that need it. Empty values count as unset (`PROXY_URL=` in an env file).
 */
import { isAbsolute, resolve } from 'node:path'
import { BlockList, isIP } from 'node:net'
import { createPrivateKey, X509Certificate } from 'node:crypto'
import { parseMappingFile, type MappingEntry } from './report/mapping.ts'
import { redactPassword, redactUserinfo } from './secrets.ts'

export const NOTIFY_PATH = '/_matrix/push/v1/notify'
export const REPORT_PATH = '/api/client/push_token_report'
export const REMOVAL_PATH = '/api/client/account_removal_report'
export const SEND_PATH = '/api/client/send_message'
export const FETCH_PATH = '/api/client/fetch_messages'
export const DEFAULT_PNM_URL = 'https://pnm.cloudsoftphone.com/pnm2/send'

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal'
export type PusherFormat = 'event_id_only' | 'full'
export type PnmVerb = 'NotifyTextMessage' | 'NotifyGenericTextMessage'
export type AuthMode = 'matrix' | 'none' | 'ext'

export interface Config {
  readonly homeserverUrl?: string
  readonly asToken?: string
  readonly serverName?: string
  readonly proxyUrl?: string
  /** `PROXY_URL` + NOTIFY_PATH: the `data.url` of every pusher. */
  readonly pushGatewayUrl?: string
  readonly host: string
  readonly port: number
  readonly dbPath: string
  /** DATABASE_URL (postgres:// or postgresql://): PostgreSQL instead of the SQLite file. Holds the password: print it only through redactPassword. */
  readonly databaseUrl?: string
  readonly pnmUrl: string
  readonly pnmTimeoutMs: number
  readonly pnmMaxInflight: number
  readonly matrixTimeoutMs: number
  readonly pusherFormat: PusherFormat
  readonly pnmVerb: PnmVerb
  readonly fallbackText: string
  readonly authMode: AuthMode
  /** AUTH_MODE=ext: the NethVoice CTI server checking passwords and listing users. */
  readonly extAuthUrl?: string
  readonly extAuthTimeoutMs: number
  /** How long a successful password check is cached (keyed by username and password). */
  readonly authCacheTtlMs: number
  /** Sentences for the start log: Go proxy variables read as aliases, or ignored, and why. */
  readonly notes: readonly string[]
  /** Failed password checks per (username, client address) a minute. */
  readonly authFailuresPerMinute: number
  /** Failed password checks per username alone, from any address, a minute. */
  readonly authUserFailuresPerMinute: number
  /** Password checks that reach the homeserver per client address (IPv6: per /64) a minute. */
  readonly authChecksPerMinute: number
  /** Password checks in flight at once. */
  readonly authMaxInflight: number
  /** Registrations one Matrix user may have; a new one evicts the least recently reported. */
  readonly maxDevicesPerUser: number
  /** Token reports (and removals) one Matrix user may make a minute. */
  readonly reportsPerMinute: number
  readonly mappingFile?: string
  readonly mapping: readonly MappingEntry[]
  readonly logLevel: LogLevel
  readonly logFormat: 'json' | 'pretty'
  /** Addresses of reverse proxies whose `X-Forwarded-For` is believed. */
  readonly trustProxy?: AddressSet
  /** When set, only these addresses may call the push gateway. */
  readonly notifyAllowedIps?: AddressSet
  readonly metricsAddress?: { readonly host: string; readonly port: number }
  /** Send Message: a repeat of the same message within this many seconds is sent once; 0 off. */
  readonly sendDedupeSeconds: number
  /** The registration's hs_token: what Synapse sends to the appservice routes. */
  readonly hsToken?: string
  /** The registration's `id`, for the client-side appservice ping. */
  readonly asId: string
  readonly messageRetentionDays: number
  readonly autoJoinDirect: boolean
  /** Serve HTTPS with these PEM files (read at start and again on SIGHUP). */
  readonly tls?: TlsFiles
}

export interface TlsFiles {
  readonly certFile: string
  readonly keyFile: string
}

/** SQLite's in-memory database: nothing is kept across a restart. */
export const MEMORY_DB = ':memory:'

export type ConfigResult = { ok: true; config: Config } | { ok: false; errors: string[] }

/** Every variable this service reads, with its default, for `--help` and the README. */
export const ENV_DOC: ReadonlyArray<readonly [string, string]> = [
  ['MATRIX_HOMESERVER_URL', 'homeserver base URL for the client-server API (unset: no login, no pushers)'],
  ['MATRIX_AS_TOKEN', 'application service as_token; SUPER_ADMIN_TOKEN is accepted as an alias'],
  ['MATRIX_SERVER_NAME', "server name for user IDs (default: the homeserver URL's hostname)"],
  ['PROXY_URL', 'base URL (no path) at which Synapse reaches this proxy; unset: pusher registration is skipped'],
  ['PROXY_HOST', 'listen address: an IP address or host name (default 0.0.0.0)'],
  ['PROXY_PORT', 'listen port (default 8080)'],
  ['PUSH_TOKEN_DB_PATH', 'SQLite file (default $STATE_DIRECTORY/push_tokens.db, else data/push_tokens.db)'],
  ['DATABASE_URL', 'postgres://user:password@host:5432/db: PostgreSQL, shared by several instances (unset: the SQLite file)'],
  ['PNM_URL', `Acrobits PNM endpoint (default ${DEFAULT_PNM_URL})`],
  ['PNM_TIMEOUT_MS', 'timeout of one PNM request (default 10000)'],
  ['PNM_MAX_INFLIGHT', 'PNM requests in flight at most; past it notify answers 503 (default 256)'],
  ['MATRIX_TIMEOUT_MS', 'timeout of one homeserver request (default 10000)'],
  ['PUSHER_FORMAT', 'event_id_only (default) or full'],
  ['PNM_VERB', 'NotifyTextMessage (default) or NotifyGenericTextMessage'],
  ['NOTIFY_FALLBACK_TEXT', 'Message of the generic verb when the text is unknown (default "New message")'],
  ['AUTH_MODE', 'matrix (default: password login on the homeserver), ext (the NethVoice CTI at EXT_AUTH_URL; the default when it is set) or none'],
  ['EXT_AUTH_URL', 'AUTH_MODE=ext: base URL of the NethVoice CTI server (POST /api/login, GET /api/chat?users=1)'],
  ['EXT_AUTH_TIMEOUT_MS', 'timeout of one CTI request (default 5000); the Go name EXT_AUTH_TIMEOUT_S (seconds) is read too'],
  ['AUTH_CACHE_TTL_SECONDS', 'how long a good password check is cached (default 300); the Go name CACHE_TTL_SECONDS is read too'],
  ['AUTH_FAILURES_PER_MINUTE', 'failed password checks allowed per username from one client address a minute (default 5)'],
  ['AUTH_USER_FAILURES_PER_MINUTE', 'failed password checks allowed per username from all addresses a minute (default 20)'],
  ['AUTH_CHECKS_PER_MINUTE', 'password checks sent to the homeserver per client address (IPv6: per /64) a minute (default 30)'],
  ['AUTH_MAX_INFLIGHT', 'password checks in flight at once; past it reports answer 503 (default 10)'],
  ['MAX_DEVICES_PER_USER', 'registrations per Matrix user; a new one evicts the least recently reported (default 20)'],
  ['REPORTS_PER_MINUTE', 'token reports and removals per Matrix user a minute; past it 429 (default 30)'],
  ['MAPPING_FILE', 'optional JSON mapping of usernames, numbers and selectors to Matrix IDs'],
  ['TRUST_PROXY', 'addresses/CIDRs of reverse proxies whose X-Forwarded-For is believed'],
  ['NOTIFY_ALLOWED_IPS', 'addresses/CIDRs allowed to call the push gateway (default: any)'],
  ['METRICS_ADDRESS', 'host:port for /metrics on a separate listener (default: on the main port)'],
  ['TLS_CERT_FILE', 'PEM certificate chain: serve HTTPS (with TLS_KEY_FILE); both re-read on SIGHUP'],
  ['TLS_KEY_FILE', 'PEM private key of TLS_CERT_FILE'],
  ['LOGLEVEL', 'trace, debug, info (default), warn, error, fatal (any case); WARNING and CRITICAL too'],
  ['LOG_FORMAT', 'json (default) or pretty'],
  ['SEND_DEDUPE_SECONDS', 'Send Message: the same message repeated within this many seconds is sent once (default 10; 0 off)'],
  ['MATRIX_HS_TOKEN', "the registration's hs_token; messaging is on with it, MATRIX_HOMESERVER_URL and MATRIX_AS_TOKEN"],
  ['MATRIX_AS_ID', "the registration's id (default matrix2acrobits)"],
  ['MESSAGE_RETENTION_DAYS', 'days a message stays in the message index (default 30)'],
  ['AUTO_JOIN_DIRECT', 'on (default) or off: accept direct-chat invites for enrolled users'],
]

/** Every level of pino, as the log lines print them (`"level":"warn"`), plus the Python names WARNING and CRITICAL. */
const LOG_LEVELS: Record<string, LogLevel> = {
  TRACE: 'trace',
  DEBUG: 'debug',
  INFO: 'info',
  WARN: 'warn',
  WARNING: 'warn',
  ERROR: 'error',
  FATAL: 'fatal',
  CRITICAL: 'fatal',
}

export class AddressSet {
  private readonly list = new BlockList()
  constructor(readonly entries: readonly string[]) {
    for (const entry of entries) {
      const [address = '', bits] = entry.split('/')
      const family = isIP(address) === 6 ? 'ipv6' : 'ipv4'
      if (bits === undefined) this.list.addAddress(address, family)
      else this.list.addSubnet(address, Number(bits), family)
    }
  }
  has(address: string): boolean {
    const family = isIP(address)
    if (family === 0) return false
    return this.list.check(address, family === 6 ? 'ipv6' : 'ipv4')
  }
}

function parseAddressList(raw: string): string | string[] {
  const entries = raw.split(/[\s,]+/).filter(Boolean)
  for (const entry of entries) {
    const [address = '', bits, extra] = entry.split('/')
    const family = isIP(address)
    const max = family === 6 ? 128 : 32
    if (family === 0 || extra !== undefined) return `"${entry}" is not an IP address or CIDR`
    if (bits !== undefined && !(/^\d+$/.test(bits) && Number(bits) <= max)) {
      return `"${entry}" has an invalid prefix length`
    }
  }
  return entries
}

function parseHttpUrl(raw: string): string | undefined {
  try {
    const url = new URL(raw)
    if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined
    return url.toString()
  } catch {
    return undefined
  }
}

const HOST_NAME = /^(?=.{1,253}\.?$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\.?$/i

/** An address to listen on: an IP address or a host name (which must then resolve). */
export const isListenHost = (host: string) => isIP(host) !== 0 || HOST_NAME.test(host)

/**
 * The certificate and key as PEM text, or why they cannot be used. Checked at start (an invalid
 * file is an invalid configuration) and on SIGHUP (the old pair then stays in use).
 */
export function readTlsFiles(
  files: TlsFiles,
  readFile: (path: string) => string,
): { ok: true; cert: string; key: string } | { ok: false; errors: string[] } {
  const errors: string[] = []
  const read = (name: string, path: string, marker: RegExp, what: string) => {
    let text: string
    try {
      text = readFile(path)
    } catch (e) {
      errors.push(`${name}: cannot read "${path}": ${(e as Error).message}`)
      return ''
    }
    if (!marker.test(text)) errors.push(`${name}: "${path}" holds no PEM ${what}`)
    return text
  }
  const cert = read('TLS_CERT_FILE', files.certFile, /-----BEGIN CERTIFICATE-----/, 'certificate')
  const key = read('TLS_KEY_FILE', files.keyFile, /-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----/, 'private key')
  if (errors.length > 0) return { ok: false, errors }
  if (!keyMatchesCert(cert, key)) {
    return { ok: false, errors: [`TLS_KEY_FILE: "${files.keyFile}" is not the private key of the certificate in "${files.certFile}"`] }
  }
  return { ok: true, cert, key }
}

function keyMatchesCert(cert: string, key: string): boolean {
  try {
    return new X509Certificate(cert).checkPrivateKey(createPrivateKey(key))
  } catch {
    return false
  }
}

const stripTrailingSlashes = (s: string) => s.replace(/\/+$/, '')

/**
 * PROXY_URL as the base of every pusher's `data.url`. Synapse accepts a push gateway only at the
 * path /_matrix/push/v1/notify (pushers/set answers "url must have a path of
 * /_matrix/push/v1/notify"), so a base URL with a path of its own would fail every pusher: it is
 * refused here, at start. The full gateway URL, pasted, is accepted.
 */
function proxyBaseUrl(parsed: string): { url: string; error?: undefined } | { url?: undefined; error: string } {
  const url = new URL(parsed)
  if (url.search || url.hash) return { error: 'has a query or fragment; give the base URL only (https://push.example.org)' }
  const path = stripTrailingSlashes(url.pathname)
  if (path !== '' && path !== NOTIFY_PATH) {
    return {
      error:
        `has the path ${url.pathname}: Synapse accepts a push gateway only at ${NOTIFY_PATH} on the host, so give the ` +
        `base URL without a path (${url.origin}); behind a reverse proxy, route ${NOTIFY_PATH} there to this service`,
    }
  }
  return { url: url.origin }
}

export interface ConfigIo {
  readFile: (path: string) => string
  cwd: string
}

export function loadConfig(
  env: Record<string, string | undefined>,
  io: ConfigIo = { readFile: (p) => require('node:fs').readFileSync(p, 'utf8'), cwd: process.cwd() },
): ConfigResult {
  const errors: string[] = []
  const get = (name: string): string | undefined => {
    const value = env[name]?.trim()
    return value ? value : undefined
  }
  const url = (name: string): string | undefined => {
    const raw = get(name)
    if (raw === undefined) return undefined
    const parsed = parseHttpUrl(raw)
    if (parsed === undefined) errors.push(`${name}: "${redactUserinfo(raw)}" is not an http(s) URL`)
    return parsed
  }
  const int = (name: string, fallback: number, min: number, max: number): number => {
    const raw = get(name)
    if (raw === undefined) return fallback
    if (!/^\d+$/.test(raw) || Number(raw) < min || Number(raw) > max) {
      errors.push(`${name}: "${raw}" is not a whole number from ${min} to ${max}`)
      return fallback
    }
    return Number(raw)
  }
  const oneOf = <T extends string>(name: string, allowed: readonly T[], fallback: T): T => {
    const raw = get(name)
    if (raw === undefined) return fallback
    const found = allowed.find((a) => a.toLowerCase() === raw.toLowerCase())
    if (found === undefined) errors.push(`${name}: "${raw}" is not one of ${allowed.join(', ')}`)
    return found ?? fallback
  }
  const onOff = (name: string, fallback: boolean): boolean => {
    const raw = get(name)?.toLowerCase()
    if (raw === undefined) return fallback
    if (['on', 'true', '1', 'yes'].includes(raw)) return true
    if (['off', 'false', '0', 'no'].includes(raw)) return false
    errors.push(`${name}: "${raw}" is not on or off`)
    return fallback
  }
  const addresses = (name: string): AddressSet | undefined => {
    const raw = get(name)
    if (raw === undefined) return undefined
    const parsed = parseAddressList(raw)
    if (typeof parsed === 'string') {
      errors.push(`${name}: ${parsed}`)
      return undefined
    }
    return new AddressSet(parsed)
  }

  const homeserver = url('MATRIX_HOMESERVER_URL')
  const homeserverUrl = homeserver && stripTrailingSlashes(homeserver)
  const proxy = url('PROXY_URL')
  const proxyBase = proxy === undefined ? undefined : proxyBaseUrl(proxy)
  if (proxyBase?.error !== undefined) errors.push(`PROXY_URL: "${get('PROXY_URL')}" ${proxyBase.error}`)
  const proxyUrl = proxyBase?.url
  const pnmUrl = url('PNM_URL') ?? DEFAULT_PNM_URL

  const serverName = get('MATRIX_SERVER_NAME') ?? (homeserverUrl ? new URL(homeserverUrl).hostname : undefined)
  if (serverName !== undefined && /[\s/@]/.test(serverName)) {
    errors.push(`MATRIX_SERVER_NAME: "${serverName}" is not a server name`)
  }

  const rawLevel = get('LOGLEVEL')
  const logLevel = rawLevel === undefined ? 'info' : LOG_LEVELS[rawLevel.toUpperCase()]
  if (logLevel === undefined) errors.push(`LOGLEVEL: "${rawLevel}" is not one of trace, debug, info, warn, error, fatal (or WARNING, CRITICAL)`)

  const stateDir = get('STATE_DIRECTORY')?.split(':')[0]
  const rawDbPath = get('PUSH_TOKEN_DB_PATH') ?? (stateDir ? `${stateDir}/push_tokens.db` : 'data/push_tokens.db')
  const absolute = (path: string) => (isAbsolute(path) ? path : resolve(io.cwd, path))
  // SQLite's name for a database in memory, not a file in the working directory.
  const dbPath = rawDbPath === MEMORY_DB ? MEMORY_DB : absolute(rawDbPath)
  const databaseUrl = get('DATABASE_URL')
  if (databaseUrl !== undefined) {
    const problem = databaseUrlProblem(databaseUrl)
    if (problem !== undefined) errors.push(`DATABASE_URL: "${redactPassword(databaseUrl)}" ${problem}`)
  }

  const mappingFile = get('MAPPING_FILE')
  let mapping: MappingEntry[] = []
  if (mappingFile !== undefined) {
    let text: string | undefined
    try {
      text = io.readFile(absolute(mappingFile))
    } catch (e) {
      errors.push(`MAPPING_FILE: cannot read "${mappingFile}": ${(e as Error).message}`)
    }
    if (text !== undefined) {
      const parsed = parseMappingFile(text)
      if (parsed.ok) mapping = parsed.entries
      else errors.push(`MAPPING_FILE: "${mappingFile}": ${parsed.error}`)
    }
  }

  let metricsAddress: Config['metricsAddress']
  const rawMetrics = get('METRICS_ADDRESS')
  if (rawMetrics !== undefined) {
    const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(rawMetrics)
    const port = Number(match?.[3])
    const host = match?.[1] ?? (match?.[2] || '127.0.0.1')
    if (!match || port > 65535) errors.push(`METRICS_ADDRESS: "${rawMetrics}" is not host:port`)
    else if (!isListenHost(host)) errors.push(`METRICS_ADDRESS: "${host}" is not an IP address or host name`)
    else metricsAddress = { host, port }
  }

  // Bun reports a listen address it cannot use as "ENOENT ... listen": refused here, in words.
  const rawHost = get('PROXY_HOST')
  const host = rawHost?.replace(/^\[(.*)\]$/, '$1') ?? '0.0.0.0'
  if (!isListenHost(host)) errors.push(`PROXY_HOST: "${rawHost}" is not an IP address or host name`)

  const tlsCertFile = get('TLS_CERT_FILE')
  const tlsKeyFile = get('TLS_KEY_FILE')
  if ((tlsCertFile === undefined) !== (tlsKeyFile === undefined)) {
    errors.push(`${tlsCertFile === undefined ? 'TLS_CERT_FILE' : 'TLS_KEY_FILE'}: not set, but ${tlsCertFile === undefined ? 'TLS_KEY_FILE' : 'TLS_CERT_FILE'} is: HTTPS needs both`)
  }
  let tls: Config['tls']
  if (tlsCertFile !== undefined && tlsKeyFile !== undefined) {
    const files = { certFile: absolute(tlsCertFile), keyFile: absolute(tlsKeyFile) }
    const loaded = readTlsFiles(files, io.readFile)
    if (loaded.ok) tls = files
    else errors.push(...loaded.errors)
  }

  // Names of the Go proxy's configuration (NethVoice env files), read where they mean the same.
  const notes: string[] = []
  const alias = (ours: string, go: string, convert: (raw: string) => string | undefined = (v) => v): void => {
    const goValue = get(go)
    if (goValue === undefined) return
    if (get(ours) !== undefined) {
      notes.push(`${go} is ignored: ${ours} is set too`)
      return
    }
    const converted = convert(goValue)
    if (converted === undefined) {
      errors.push(`${go}: "${goValue}" is not a whole number of seconds`)
      return
    }
    env = { ...env, [ours]: converted }
    notes.push(`${go} (the Go proxy's name) is read as ${ours}`)
  }
  alias('EXT_AUTH_TIMEOUT_MS', 'EXT_AUTH_TIMEOUT_S', (v) => (/^\d+$/.test(v) ? String(Number(v) * 1000) : undefined))
  alias('AUTH_CACHE_TTL_SECONDS', 'CACHE_TTL_SECONDS')
  alias('MATRIX_AS_TOKEN', 'SUPER_ADMIN_TOKEN')
  if (get('AS_USER_ID') !== undefined) {
    notes.push("AS_USER_ID is ignored: the appservice's own user is the one its MATRIX_AS_TOKEN belongs to (`check` shows it)")
  }
  for (const name of ['DEX_TOKEN_ENDPOINT', 'DEX_CLIENT_ID', 'DEX_CLIENT_SECRET']) {
    if (get(name) !== undefined) notes.push(`${name} is ignored: this service checks passwords with AUTH_MODE (matrix or ext), not with Dex`)
  }
  if (databaseUrl !== undefined && get('PUSH_TOKEN_DB_PATH') !== undefined) {
    // The Go proxy's push_tokens table is imported from the SQLite file only: say it is not read.
    notes.push('PUSH_TOKEN_DB_PATH is ignored: DATABASE_URL is set (a Go proxy push_tokens table in that file is not imported; start once without DATABASE_URL to import it, then migrate-db)')
  }
  const extAuthUrl = url('EXT_AUTH_URL')
  const authMode = get('AUTH_MODE') === undefined && extAuthUrl !== undefined ? 'ext' : oneOf('AUTH_MODE', ['matrix', 'none', 'ext'] as const, 'matrix')

  const config: Config = {
    homeserverUrl,
    asToken: get('MATRIX_AS_TOKEN'),
    serverName,
    proxyUrl,
    pushGatewayUrl: proxyUrl && proxyUrl + NOTIFY_PATH,
    host,
    port: int('PROXY_PORT', 8080, 0, 65535),
    dbPath,
    databaseUrl,
    pnmUrl,
    pnmTimeoutMs: int('PNM_TIMEOUT_MS', 10_000, 1, 600_000),
    pnmMaxInflight: int('PNM_MAX_INFLIGHT', 256, 1, 100_000),
    matrixTimeoutMs: int('MATRIX_TIMEOUT_MS', 10_000, 1, 600_000),
    pusherFormat: oneOf('PUSHER_FORMAT', ['event_id_only', 'full'] as const, 'event_id_only'),
    pnmVerb: oneOf('PNM_VERB', ['NotifyTextMessage', 'NotifyGenericTextMessage'] as const, 'NotifyTextMessage'),
    fallbackText: get('NOTIFY_FALLBACK_TEXT') ?? 'New message',
    authMode,
    extAuthUrl: extAuthUrl && stripTrailingSlashes(extAuthUrl),
    extAuthTimeoutMs: int('EXT_AUTH_TIMEOUT_MS', 5_000, 1, 600_000),
    authCacheTtlMs: int('AUTH_CACHE_TTL_SECONDS', 300, 0, 86_400) * 1000,
    notes,
    authFailuresPerMinute: int('AUTH_FAILURES_PER_MINUTE', 5, 1, 1_000_000),
    authUserFailuresPerMinute: int('AUTH_USER_FAILURES_PER_MINUTE', 20, 1, 1_000_000),
    authChecksPerMinute: int('AUTH_CHECKS_PER_MINUTE', 30, 1, 1_000_000),
    authMaxInflight: int('AUTH_MAX_INFLIGHT', 10, 1, 100_000),
    maxDevicesPerUser: int('MAX_DEVICES_PER_USER', 20, 1, 1_000_000),
    reportsPerMinute: int('REPORTS_PER_MINUTE', 30, 1, 1_000_000),
    mappingFile,
    mapping,
    logLevel: logLevel ?? 'info',
    logFormat: oneOf('LOG_FORMAT', ['json', 'pretty'] as const, 'json'),
    trustProxy: addresses('TRUST_PROXY'),
    notifyAllowedIps: addresses('NOTIFY_ALLOWED_IPS'),
    metricsAddress,
    sendDedupeSeconds: int('SEND_DEDUPE_SECONDS', 10, 0, 86_400),
    hsToken: get('MATRIX_HS_TOKEN'),
    asId: get('MATRIX_AS_ID') ?? 'matrix2acrobits',
    messageRetentionDays: int('MESSAGE_RETENTION_DAYS', 30, 1, 36_500),
    autoJoinDirect: onOff('AUTO_JOIN_DIRECT', true),
    tls,
  }
  return errors.length > 0 ? { ok: false, errors } : { ok: true, config: Object.freeze(config) }
}

/** What the configuration allows, and the variable to set for what it does not. */
export function missingFor(config: Config) {
  return {
    /** Password checks need the homeserver (AUTH_MODE=matrix) or the CTI server (ext). */
    login:
      config.authMode === 'ext'
        ? config.extAuthUrl === undefined
          ? 'EXT_AUTH_URL'
          : config.serverName === undefined
            ? 'MATRIX_SERVER_NAME'
            : undefined
        : config.homeserverUrl === undefined
          ? 'MATRIX_HOMESERVER_URL'
          : undefined,
    /** Pusher calls need the homeserver and the appservice token; undefined when PROXY_URL is unset. */
    pushers:
      config.pushGatewayUrl === undefined
        ? undefined
        : config.homeserverUrl === undefined
          ? 'MATRIX_HOMESERVER_URL'
          : config.asToken === undefined
            ? 'MATRIX_AS_TOKEN'
            : undefined,
    /** Messaging (the appservice feed, the message index, Fetch Messages) needs all three. */
    messaging:
      config.homeserverUrl === undefined
        ? 'MATRIX_HOMESERVER_URL'
        : config.asToken === undefined
          ? 'MATRIX_AS_TOKEN'
          : config.hsToken === undefined
            ? 'MATRIX_HS_TOKEN'
            : undefined,
    /** Deriving user IDs from usernames needs a server name. */
    serverName: config.serverName === undefined ? 'MATRIX_SERVER_NAME' : undefined,
  }
}

/** libpq's form for a Unix socket, an empty host after the user: postgres://user:pw@/db?host=/run/postgresql. */
const SOCKET_FORM = /^(postgres(?:ql)?:\/\/[^/?#]*@)\//i

/**
 * DATABASE_URL as a URL. The WHATWG parser refuses an empty host after a user, which libpq (and
 * Bun's client) read as "the socket named by `host=`": it is parsed with a stand-in host. Throws
 * when it is not a URL at all.
 */
export function parsePostgresUrl(raw: string): URL {
  return new URL(raw.replace(SOCKET_FORM, '$1localhost/'))
}

/** Why DATABASE_URL cannot be used, or undefined: only PostgreSQL is reached by URL. */
export function databaseUrlProblem(raw: string): string | undefined {
  let url: URL
  try {
    url = parsePostgresUrl(raw)
  } catch {
    return 'is not a URL (postgres://user:password@host:5432/database)'
  }
  if (SOCKET_FORM.test(raw) && !url.searchParams.has('host')) return 'names no host (postgres://user:password@host:5432/database)'
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') return 'must start with postgres:// or postgresql:// (unset it to use the SQLite file PUSH_TOKEN_DB_PATH)'
  if (url.hostname === '' && !url.searchParams.has('host')) return 'names no host (postgres://user:password@host:5432/database)'
  return undefined
}
