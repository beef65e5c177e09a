/**
 * `check`: is this configuration ready to run? First every configuration problem at once (exit 2),
 * then probes of the world it depends on (exit 1 when one fails): the database, the homeserver
 * with the appservice token, the users namespace for a sample user, the PNM host's name.
 * Each failed probe says what to change, in the words of the Synapse setting involved.
 */
import { accessSync, constants, existsSync } from 'node:fs'
import { lookup as dnsLookup } from 'node:dns/promises'
import { isIP } from 'node:net'
import { isLoopbackHost, isPrivateAddress } from '../client-address.ts'
import { dirname } from 'node:path'
import { MEMORY_DB, missingFor, type Config } from '../config.ts'
import { createMatrixClient, MatrixError, type FetchFn, type MatrixClient } from '../matrix/client.ts'
import { redactUserinfo } from '../secrets.ts'
import { describeDatabaseError, openSqliteStore } from '../store/sqlite.ts'
import { editedMessage, migrationState, PG_MIGRATIONS } from '../store/pg-migrations.ts'
import { connectPostgres, createPostgresStore, describePostgresError } from '../store/postgres.ts'
import { redactPassword } from '../secrets.ts'
import type { TokenStore } from '../store/types.ts'
import { withTimeout } from '../timeout.ts'
import { configOrReport, EXIT_CONFIG, EXIT_FAILED, EXIT_OK, type CliIo, type Env, type ExitCode } from './common.ts'

export interface CheckOptions {
  /** A user the namespace must cover (and who must exist); default: a made-up user of the server. */
  user?: string
  fetch?: FetchFn
  lookup?: (host: string) => Promise<string[]>
  lookupTimeoutMs?: number
}

/** Localpart of the made-up sample user: Synapse's answer for it tells the namespace apart from the user's existence. */
export const SAMPLE_LOCALPART = 'matrix2acrobits-check'

const isPrivate = isPrivateAddress

const defaultLookup = async (host: string) => (await dnsLookup(host, { all: true })).map((a) => a.address)

/** What each variable the service needs but does not require is for, said when it is unset. */
const NEEDED = {
  MATRIX_HOMESERVER_URL: 'MATRIX_HOMESERVER_URL is not set: no password checks, no pushers',
  MATRIX_AS_TOKEN: 'MATRIX_AS_TOKEN is not set: pushers cannot be registered on the homeserver',
  PROXY_URL: 'PROXY_URL is not set: no pusher is registered, so the homeserver never sends a push here',
} as const

/** What the configuration lacks for the service to do its job, beyond what loadConfig refuses. */
export function incompleteness(config: Config): string[] {
  const problems: string[] = []
  if (config.homeserverUrl === undefined) problems.push(NEEDED.MATRIX_HOMESERVER_URL)
  if (config.asToken === undefined) problems.push(NEEDED.MATRIX_AS_TOKEN)
  if (config.proxyUrl === undefined) problems.push(NEEDED.PROXY_URL)
  if (config.authMode === 'none' && missingFor(config).serverName !== undefined && config.mapping.length === 0) {
    problems.push('MATRIX_SERVER_NAME is not set (AUTH_MODE=none): usernames cannot be turned into Matrix IDs')
  }
  if (config.authMode === 'ext' && config.extAuthUrl === undefined) {
    problems.push('EXT_AUTH_URL is not set (AUTH_MODE=ext): passwords cannot be checked, every token report is answered 503')
  }
  return problems
}

/** With an invalid configuration there is no Config: the variables that are simply unset, from the environment. */
function unsetVariables(env: Env): string[] {
  const unset = (...names: string[]) => names.every((n) => !env[n]?.trim())
  const problems: string[] = []
  if (unset('MATRIX_HOMESERVER_URL')) problems.push(NEEDED.MATRIX_HOMESERVER_URL)
  if (unset('MATRIX_AS_TOKEN', 'SUPER_ADMIN_TOKEN')) problems.push(NEEDED.MATRIX_AS_TOKEN)
  if (unset('PROXY_URL')) problems.push(NEEDED.PROXY_URL)
  return problems
}

export async function runCheck(env: Env, options: CheckOptions, io: CliIo): Promise<ExitCode> {
  const ok = (text: string) => io.out(`  ok    ${text}`)
  const warn = (text: string) => io.out(`  warn  ${text}`)
  let failures = 0
  const fail = (text: string) => {
    failures++
    io.out(`  FAIL  ${text}`)
  }

  io.out('configuration')
  const config = configOrReport(env, { out: io.out, err: (line) => io.out(`  FAIL  ${line.replace(/^matrix2acrobits: invalid configuration: /, '')}`) })
  const problems = config ? incompleteness(config) : unsetVariables(env)
  for (const problem of problems) io.out(`  FAIL  ${problem}`)
  if (!config || problems.length > 0) {
    io.out('check failed: the configuration is invalid or incomplete; probes not run')
    return EXIT_CONFIG
  }
  ok(`homeserver ${redactUserinfo(config.homeserverUrl!)}, server name ${config.serverName}, push gateway ${redactUserinfo(config.pushGatewayUrl!)}`)
  if (config.authMode === 'none') warn('AUTH_MODE=none: anyone who reaches this service can redirect the notifications of any user')
  if (config.notifyAllowedIps === undefined && !isLoopbackHost(config.host)) {
    warn(`NOTIFY_ALLOWED_IPS is not set while the service listens on ${config.host}: anyone who reaches the port can call the push gateway; list the homeserver's addresses`)
  }
  const homeserver = new URL(config.homeserverUrl!)
  if (homeserver.protocol === 'http:' && !isLoopbackHost(homeserver.hostname)) {
    warn(`MATRIX_HOMESERVER_URL is plain http:// to ${homeserver.hostname}: passwords and the appservice token would cross the network in clear; use https://`)
  }
  if (config.metricsAddress === undefined) warn('METRICS_ADDRESS is not set: /metrics is served on the public port')
  const lookup = options.lookup ?? defaultLookup
  const lookupTimeoutMs = options.lookupTimeoutMs ?? 5_000

  io.out('database')
  if (config.databaseUrl !== undefined) await checkPostgres(config.databaseUrl, ok, warn, fail)
  else if (config.dbPath === MEMORY_DB) warn('PUSH_TOKEN_DB_PATH is :memory: the service keeps the tokens in memory only, lost at every restart')
  else await checkDatabase(config, ok, fail)

  io.out('homeserver')
  const matrix = createMatrixClient({ homeserverUrl: config.homeserverUrl!, asToken: config.asToken, timeoutMs: config.matrixTimeoutMs, fetch: options.fetch })
  const server = await checkAppserviceToken(matrix, config, ok, fail)
  if (server !== undefined) await checkNamespace(matrix, options.user ?? `@${SAMPLE_LOCALPART}:${server}`, options.user !== undefined, ok, fail)
  io.out("  note  Synapse cannot be asked whether the namespace is exclusive: it must say 'exclusive: false', or Synapse sends no pushes for its users")

  io.out('messaging (appservice link)')
  const messagingMissing = missingFor(config).messaging
  if (messagingMissing !== undefined) warn(`${messagingMissing} is not set: messaging is off (no message index, Fetch Messages answers 503)`)
  else await checkAppservicePing(matrix, config, ok, fail)

  io.out('push gateway URL')
  const proxyHost = new URL(config.proxyUrl!).hostname.replace(/^\[|\]$/g, '')
  try {
    const addresses = isIP(proxyHost) ? [proxyHost] : await withTimeout(lookup(proxyHost), lookupTimeoutMs, `resolving ${proxyHost}`)
    const inside = addresses.filter(isPrivate)
    if (proxyHost === 'localhost' || inside.length > 0) {
      warn(
        `${proxyHost} is a private or loopback address (${(inside.length ? inside : addresses).join(', ')}): Synapse refuses to push there ` +
          "unless its ip_range_whitelist lists it, and pushers/set does not tell ('IP address blocked' in Synapse's log)",
      )
    } else ok(`${proxyHost} resolves to ${addresses.join(', ')}`)
  } catch (e) {
    warn(`${proxyHost} does not resolve from here (${(e as Error).message}); the homeserver must reach ${redactUserinfo(config.pushGatewayUrl!)}`)
  }
  if (new URL(config.proxyUrl!).protocol === 'http:' && !isPrivate(proxyHost) && proxyHost !== 'localhost') {
    warn('PROXY_URL is http: notifications (and with PUSHER_FORMAT=full, message content) travel unencrypted')
  }

  io.out('PNM')
  const pnmHost = new URL(config.pnmUrl).hostname.replace(/^\[|\]$/g, '')
  if (isIP(pnmHost)) ok(`${pnmHost} is an IP address`)
  else {
    try {
      const addresses = await withTimeout(lookup(pnmHost), lookupTimeoutMs, `resolving ${pnmHost}`)
      if (addresses.length === 0) throw new Error('no address')
      ok(`${pnmHost} resolves to ${addresses.join(', ')}`)
    } catch (e) {
      fail(`${pnmHost} (PNM_URL) does not resolve: ${(e as Error).message}; check DNS and outbound network`)
    }
  }

  io.out(failures === 0 ? 'check passed' : `check failed: ${failures} problem${failures === 1 ? '' : 's'}`)
  return failures === 0 ? EXIT_OK : EXIT_FAILED
}

async function checkDatabase(config: Config, ok: (t: string) => void, fail: (t: string) => void) {
  if (!existsSync(config.dbPath)) {
    // Not created here: `check` is often run by hand, as another user than the service.
    let dir = dirname(config.dbPath)
    while (!existsSync(dir) && dirname(dir) !== dir) dir = dirname(dir)
    try {
      accessSync(dir, constants.W_OK)
      ok(`${config.dbPath} does not exist yet; it will be created (${dir} is writable)`)
    } catch {
      fail(`${config.dbPath} does not exist and ${dir} is not writable by this user`)
    }
    return
  }
  let store
  try {
    store = openSqliteStore(config.dbPath)
    await store.probeWritable()
    await reportContents(store, `${config.dbPath} is writable`, ok, fail)
  } catch (e) {
    fail(`${config.dbPath} is not usable: ${describeDatabaseError(config.dbPath, e)}`)
  } finally {
    await store?.close()
  }
}

/** The oldest PostgreSQL release the schema and the queries are written for. */
const PG_MIN_MAJOR = 12

/** PostgreSQL (DATABASE_URL): connect, version, migrations current, writable; nothing changed. */
async function checkPostgres(url: string, ok: (t: string) => void, warn: (t: string) => void, fail: (t: string) => void) {
  const name = redactPassword(url)
  const sql = connectPostgres(url, { max: 1 })
  try {
    let version: number
    try {
      const [row]: { v: string; n: string }[] = await sql`SELECT version() AS v, current_setting('server_version_num') AS n`
      version = Number(row!.n)
      ok(`${name}: connected (${row!.v.split(',')[0]})`)
    } catch (e) {
      fail(`${name}: cannot connect: ${describePostgresError(url, e)}`)
      return
    }
    if (Math.floor(version / 10000) < PG_MIN_MAJOR) fail(`PostgreSQL ${Math.floor(version / 10000)} is older than ${PG_MIN_MAJOR}, the oldest release supported`)
    const { applied, known, edited } = await migrationState(sql)
    if (edited !== undefined) fail(`${editedMessage(edited)}; the service refuses to start on it`)
    else if (applied > known) fail(`the schema is at version ${applied}, newer than this release knows (${known}): upgrade matrix2acrobits`)
    else if (applied < known) warn(`${known - applied} of ${PG_MIGRATIONS.length} schema migrations not applied yet: the service applies them when it starts`)
    else ok(`schema current (version ${applied})`)
    // A write rolled back: proves the permissions without leaving anything behind.
    const ROLLBACK = new Error('rollback')
    try {
      await sql.begin(async (tx) => {
        if (applied > 0) await tx`INSERT INTO probe (id, at) VALUES (1, 0) ON CONFLICT (id) DO UPDATE SET at = excluded.at`
        else await tx`CREATE TABLE m2a_check_probe (id INTEGER)`
        throw ROLLBACK
      })
    } catch (e) {
      if (e !== ROLLBACK) {
        fail(`${name} does not accept writes: ${describePostgresError(url, e)}`)
        return
      }
    }
    if (applied === known) await reportContents(createPostgresStore(sql), `${name} is writable`, ok, fail)
    else ok(`${name} is writable`)
  } catch (e) {
    fail(`${name} is not usable: ${describePostgresError(url, e)}`)
  } finally {
    await sql.end({ timeout: 5 }).catch(() => {})
  }
}

/** The accounts and pusher calls stored, and the calls that keep failing. */
async function reportContents(store: TokenStore, what: string, ok: (t: string) => void, fail: (t: string) => void) {
  const pending = await store.pendingJobs()
  ok(`${what}: ${await store.countRegistrations()} accounts, ${pending.length} pusher calls pending`)
  const failing = pending.filter((j) => j.lastError !== undefined)
  if (failing.length > 0) {
    const last = failing[failing.length - 1]!
    fail(`${failing.length} pusher calls keep failing; the latest error (${last.userId}): ${last.lastError}`)
  }
}

/** Returns the server name of the homeserver's users, or undefined when the token is not accepted. */
async function checkAppserviceToken(matrix: MatrixClient, config: Config, ok: (t: string) => void, fail: (t: string) => void) {
  try {
    const { userId } = await matrix.whoami()
    const server = userId.slice(userId.indexOf(':') + 1)
    ok(`the homeserver accepts MATRIX_AS_TOKEN (the appservice acts as ${userId})`)
    if (server !== config.serverName) {
      fail(`the homeserver's users are on "${server}", but the server name here is "${config.serverName}": set MATRIX_SERVER_NAME=${server}`)
    }
    return server
  } catch (e) {
    if (e instanceof MatrixError && e.kind !== 'http') fail(`cannot reach the homeserver at ${redactUserinfo(config.homeserverUrl!)}: ${e.message}`)
    else if (e instanceof MatrixError && e.status === 401) {
      fail(
        `the homeserver does not know MATRIX_AS_TOKEN (${e.errcode ?? e.status}): list the registration file in Synapse's ` +
          'app_service_config_files, restart Synapse, and check that as_token there equals MATRIX_AS_TOKEN',
      )
    } else fail(`whoami with MATRIX_AS_TOKEN failed: ${(e as Error).message}`)
    return undefined
  }
}

async function checkNamespace(matrix: MatrixClient, user: string, named: boolean, ok: (t: string) => void, fail: (t: string) => void) {
  try {
    await matrix.whoami(user)
    ok(`the users namespace lets the appservice act for ${user}`)
  } catch (e) {
    const message = (e as Error).message
    if (e instanceof MatrixError && e.status === 403 && /masquerade/i.test(message)) {
      fail(`the users namespace does not cover ${user}: the registration needs namespaces.users with regex matching it and exclusive: false (${message})`)
    } else if (e instanceof MatrixError && e.status === 403 && /has not registered/i.test(message)) {
      if (named) fail(`the users namespace covers ${user}, but the homeserver has no such user`)
      else ok(`the users namespace covers ${user} (a made-up user, so "not registered" is the expected answer)`)
    } else fail(`whoami as ${user} failed: ${message}`)
  }
}

/**
 * Asks Synapse to ping this proxy's appservice routes (POST /_matrix/client/v1/appservice/{id}/ping):
 * Synapse calls the registration's `url` with its hs_token, so one call tests the URL, the
 * network path and MATRIX_HS_TOKEN together (FIELD-GUIDE §7 lists the answers).
 */
export async function checkAppservicePing(matrix: MatrixClient, config: Config, ok: (t: string) => void, fail: (t: string) => void) {
  try {
    const { durationMs } = await matrix.pingAppservice(config.asId, undefined, 65_000)
    ok(`Synapse reached this proxy's appservice routes with the hs_token (${durationMs} ms)`)
  } catch (e) {
    const err = e as MatrixError
    const status = typeof err.data?.status === 'number' ? err.data.status : undefined
    if (err.errcode === 'M_BAD_STATUS' && (status === 401 || status === 403)) {
      fail(`Synapse reached the proxy but the hs_token does not match: set MATRIX_HS_TOKEN to the registration's hs_token (the proxy answered ${status})`)
    } else if (err.errcode === 'M_BAD_STATUS') {
      fail(`Synapse reached the registration's url but it answered ${status ?? 'an error'}: is url this proxy's base URL, and is messaging on there?`)
    } else if (err.errcode === 'M_CONNECTION_FAILED' || err.errcode === 'M_CONNECTION_TIMEOUT') {
      fail(`Synapse cannot reach the registration's url (${err.errcode}): set url to the proxy's base URL as Synapse reaches it (appservice-registration --url), then restart Synapse`)
    } else if (err.errcode === 'M_URL_NOT_SET') {
      fail("the registration's url is null: Synapse sends no transactions; set it (appservice-registration --url) and restart Synapse")
    } else if (err.status === 403 && /Mismatching application service ID/i.test(err.message)) {
      fail(`MATRIX_AS_ID "${config.asId}" is not the registration's id`)
    } else {
      fail(`appservice ping failed: ${err.message}`)
    }
  }
}
