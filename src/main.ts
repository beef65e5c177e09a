/**
 * Composition root: argv -> command. `serve` (the default): config -> service -> listen; signals.
 * The operator commands live in cli/. Exit codes, for every command: 0 done, 1 runtime failure
 * (port taken, database unusable, a probe failed, the homeserver refused), 2 invalid
 * configuration or usage.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { runCheck } from './cli/check.ts'
import { runMigrateDb } from './cli/migrate-db.ts'
import { consoleIo } from './cli/common.ts'
import { runPushersSync } from './cli/pushers.ts'
import { runPushTest } from './cli/push-test.ts'
import { runRegistration } from './cli/registration.ts'
import { runTokensDelete, runTokensList, runTokensShow } from './cli/tokens.ts'
import pkg from '../package.json' with { type: 'json' }
import { compose, SERVICE_BUSY_TIMEOUT_MS, type Service } from './compose.ts'
import { ENV_DOC, loadConfig, MEMORY_DB, missingFor, readTlsFiles, type Config } from './config.ts'
import { describeStoreError, openDatabase, storeName } from './store/open.ts'
import { readFileSync } from 'node:fs'
import { X509Certificate } from 'node:crypto'
import { errorBody, metricsResponse } from './app.ts'
import { unrecognized } from './errors.ts'
import { redactUserinfo } from './secrets.ts'
import { DATABASE_TIMEOUT_MS } from './store/bounded.ts'

export const VERSION: string = pkg.version

/** A request in flight at SIGTERM gets this long to finish (Synapse's own timeout is 60 s). */
const SHUTDOWN_GRACE_MS = 30_000

const helpText = () => `matrix2acrobits ${VERSION}
Push gateway between a Matrix homeserver (Synapse) and Acrobits softphone apps.

Usage: matrix2acrobits [command] [options]

Commands:
${[['serve', 'run the service (the default)'], ...COMMAND_TABLE.map((c) => [[...c.words, ...c.args.map((a) => `<${a}>`)].join(' '), c.summary])]
  .map(([name, doc]) => `  ${name!.padEnd(26)} ${doc}`)
  .join('\n')}

Options:
  -h, --help     show this help; after a command, that command's options
  -v, --version  print the version

Exit codes: 0 success, 1 failure (a probe failed, the homeserver refused, not found),
2 invalid configuration or usage.

Configuration comes from the environment only (no .env file is read).
Environment:
${ENV_DOC.map(([name, doc]) => `  ${name.padEnd(26)} ${doc}`).join('\n')}
`

export function configOrExit(env: Record<string, string | undefined>): Config {
  const result = loadConfig(env)
  if (!result.ok) {
    for (const error of result.errors) console.error(`matrix2acrobits: invalid configuration: ${error}`)
    process.exit(2)
  }
  return result.config
}

/**
 * What the configuration leaves out, said once at start: one warning per missing variable, naming
 * everything that waits for it.
 */
async function announce(service: Service, config: Config) {
  const { log } = service
  for (const note of await service.store.migrationNotes()) log.info({ database: storeName(config) }, note)
  const missing = missingFor(config)
  if (config.pushGatewayUrl === undefined) {
    log.warn('PROXY_URL is not set: pushers are not registered on the homeserver; tokens are still stored and notifications still forwarded')
  }
  for (const note of config.notes) log.info(note)
  const waiting = new Map<string, string[]>()
  const wait = (variable: string | undefined, what: string) => {
    if (variable !== undefined) waiting.set(variable, [...(waiting.get(variable) ?? []), what])
  }
  if (config.authMode !== 'none') wait(missing.login, `password checks (AUTH_MODE=${config.authMode})`)
  wait(missing.pushers, 'pusher registration')
  for (const [variable, needs] of waiting) {
    log.warn(`${variable} is not set: token reports are answered 503 until it is; ${needs.join(' and ')} need${needs.length === 1 ? 's' : ''} it`)
  }
  if (config.authMode === 'ext') log.info({ ext_auth_url: redactUserinfo(config.extAuthUrl ?? '') }, 'AUTH_MODE=ext: passwords are checked by the NethVoice CTI server')
  if (missing.messaging !== undefined) {
    log.info(`messaging is off: ${missing.messaging} is not set (Fetch Messages and the appservice routes answer 503)`)
  } else if (config.authMode === 'none') {
    log.warn('messaging is on but AUTH_MODE=none: Fetch Messages refuses every request (it needs a password check)')
  }
  if (config.authMode === 'none') {
    log.warn('AUTH_MODE=none: token reports are not authenticated; anyone who can reach this service can redirect the notifications of any user')
    if (missing.serverName !== undefined) log.warn('MATRIX_SERVER_NAME is not set: only Matrix IDs and MAPPING_FILE entries can be resolved')
  } else if (config.mappingFile !== undefined && config.authMode === 'matrix') {
    log.info('MAPPING_FILE is ignored with AUTH_MODE=matrix: the homeserver names the user')
  }
  if (config.databaseUrl === undefined && config.dbPath === MEMORY_DB) log.warn('PUSH_TOKEN_DB_PATH is :memory: the tokens are kept in memory only and lost when the process stops')
  try {
    await service.store.probeWritable()
  } catch (e) {
    log.warn(
      { database: storeName(config), err: describeStoreError(config, e) },
      'the database does not accept writes: token reports and /ready answer 503 until it does; notifications are still delivered',
    )
  }
}

/** One line saying why a listener could not start, in the operator's terms. */
export function listenFailure(what: string, host: string, port: number, e: unknown): string {
  const code = (e as { code?: unknown } | undefined)?.code
  const at = `cannot listen on ${host.includes(':') ? `[${host}]` : host}:${port} (${what})`
  if (code === 'EADDRINUSE') return `${at}: the port is in use (another matrix2acrobits, or another service)`
  if (code === 'EACCES') return `${at}: permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)`
  if (code === 'EADDRNOTAVAIL') return `${at}: ${host} is not an address of this machine`
  if (code === 'EINVAL' || code === 'ENOENT') return `${at}: ${host} does not resolve to an address of this machine`
  return `${at}: ${(e as Error)?.message ?? String(e)}`
}

const readText = (path: string) => readFileSync(path, 'utf8')

export async function serve(config: Config): Promise<void> {
  // Everything this process creates (the database, its journal) is readable by its owner only.
  process.umask(0o077)
  let database: Awaited<ReturnType<typeof openDatabase>>
  try {
    database = await openDatabase(config, { busyTimeoutMs: SERVICE_BUSY_TIMEOUT_MS, timeoutMs: DATABASE_TIMEOUT_MS })
  } catch (e) {
    console.error(`matrix2acrobits: cannot open the database ${storeName(config)}: ${describeStoreError(config, e)}`)
    process.exit(1)
  }
  const { store } = database
  const service = compose(config, { defaultMetrics: true, store, postgres: database.postgres })
  const { app, log, worker } = service
  await announce(service, config)
  try {
    const restored = await service.restoreDuplicateFilter()
    if (restored > 0) log.info({ deliveries: restored }, 'duplicate filter restored from the delivery journal (the last hour)')
  } catch (e) {
    // The service still starts: a retry of a push from before the restart may then be sent again.
    log.warn({ err: (e as Error).message }, 'could not read the delivery journal; the duplicate filter starts empty')
  }

  // idleTimeout covers the longest answer the proxy gives (the notify deadline), in seconds.
  // The routes refuse oversized bodies themselves, with a JSON 413, from Content-Length or while
  // reading; the server's own cap (an empty 413) only stops absurd uploads.
  const serverOptions = { hostname: config.host, idleTimeout: 60, maxRequestBodySize: 8 * 1024 * 1024 }
  let tlsPair: { cert: string; key: string } | undefined
  if (config.tls) {
    const loaded = readTlsFiles(config.tls, readText)
    if (!loaded.ok) {
      for (const error of loaded.errors) console.error(`matrix2acrobits: invalid configuration: ${error}`)
      process.exit(2)
    }
    tlsPair = { cert: loaded.cert, key: loaded.key }
  }
  try {
    if (tlsPair === undefined) {
      // Elysia turns reusePort on by default: a second instance would then share the port with
      // this one, the kernel splitting requests between two configurations.
      app.listen({ ...serverOptions, port: config.port, reusePort: false })
    } else {
      // A certificate is reloaded by opening a second listener on the same port and retiring the
      // first (Bun cannot change the certificate of a running server), which needs reusePort. That
      // would let a second instance in too: an exclusive listener first proves the port is free.
      const probe = Bun.serve({ hostname: config.host, port: config.port, reusePort: false, fetch: () => new Response(null, { status: 503 }) })
      const port = probe.port!
      probe.stop(true)
      app.listen({ ...serverOptions, port, reusePort: true, tls: tlsPair })
    }
  } catch (e) {
    log.fatal(listenFailure(tlsPair ? 'PROXY_HOST, PROXY_PORT, HTTPS' : 'PROXY_HOST, PROXY_PORT', config.host, config.port, e))
    process.exit(1)
  }
  let metricsServer: ReturnType<typeof Bun.serve> | undefined
  if (config.metricsAddress) {
    try {
      metricsServer = Bun.serve({
        hostname: config.metricsAddress.host,
        port: config.metricsAddress.port,
        reusePort: false,
        fetch: (request) =>
          new URL(request.url).pathname === '/metrics'
            ? metricsResponse(service)
            : Response.json(errorBody(request.url, unrecognized()), { status: 404 }),
      })
    } catch (e) {
      log.fatal(listenFailure('METRICS_ADDRESS', config.metricsAddress.host, config.metricsAddress.port, e))
      process.exit(1)
    }
    log.info({ address: `${metricsServer.hostname}:${metricsServer.port}` }, 'metrics listening')
  }
  worker.start()
  await service.messaging.start()

  /** Listeners replaced by a certificate reload, finishing the requests they were answering. */
  const retiring = new Set<Promise<void>>()
  const reloadCertificate = () => {
    if (!config.tls) {
      log.info('SIGHUP: nothing to reload (TLS_CERT_FILE is not set)')
      return
    }
    const loaded = readTlsFiles(config.tls, readText)
    if (!loaded.ok) {
      log.error({ errors: loaded.errors }, 'SIGHUP: the certificate files are not usable; still serving the previous certificate')
      return
    }
    const previous = app.server!
    try {
      app.listen({ ...serverOptions, port: previous.port!, reusePort: true, tls: { cert: loaded.cert, key: loaded.key } })
    } catch (e) {
      log.error({ err: (e as Error).message }, 'SIGHUP: cannot open a listener with the new certificate; still serving the previous one')
      return
    }
    // New connections now reach the new listener; the old one answers what it has and closes.
    const stopped = previous.stop(false).then(() => void retiring.delete(stopped))
    retiring.add(stopped)
    log.info({ cert: config.tls.certFile, valid_to: new X509Certificate(loaded.cert).validTo }, 'TLS certificate reloaded')
  }

  let stopping = false
  const shutdown = async (signal: string) => {
    if (stopping) return
    stopping = true
    service.startDraining()
    log.info({ signal }, 'shutting down: no new connections, finishing requests in flight')
    const grace = Bun.sleep(SHUTDOWN_GRACE_MS).then(() => 'timeout' as const)
    const finished = await Promise.race([Promise.all([app.server!.stop(false), ...retiring]).then(() => 'done' as const), grace])
    if (finished === 'timeout') {
      log.warn('requests still in flight after the grace period; closing them')
      await app.server!.stop(true)
    }
    metricsServer?.stop(true)
    await worker.stop()
    await service.journal.flush()
    await service.messaging.stop()
    await store.close()
    service.outbox?.close()
    service.index?.close()
    log.info('stopped')
    process.exit(0)
  }
  process.on('SIGTERM', () => void shutdown('SIGTERM'))
  process.on('SIGINT', () => void shutdown('SIGINT'))
  process.on('SIGHUP', () => {
    if (!stopping) reloadCertificate()
  })
  // Announced only once the handlers are in place: whoever waits for this line may signal at once.
  log.info(
    {
      version: VERSION,
      address: `${app.server!.hostname}:${app.server!.port}`,
      port: app.server!.port,
      tls: config.tls !== undefined,
      database: storeName(config),
      messaging: missingFor(config).messaging === undefined ? 'on' : `off (${missingFor(config).messaging} is not set)`,
    },
    'matrix2acrobits listening',
  )
}

type Values = Record<string, string | boolean | undefined>

interface Command {
  words: readonly string[]
  /** Names of the positional arguments after the command words. */
  args: readonly string[]
  options: NonNullable<ParseArgsConfig['options']>
  /** The one line `--help` shows for it. */
  summary: string
  usage: string
  run: (values: Values, args: string[], env: Record<string, string | undefined>) => Promise<number> | number
}

const str = (v: string | boolean | undefined) => (typeof v === 'string' ? v : undefined)

const COMMAND_TABLE: readonly Command[] = [
  {
    words: ['check'],
    summary: 'validate the configuration, then probe the database, the homeserver and the PNM host',
    args: [],
    options: { user: { type: 'string' } },
    usage: `check [--user @someone:server]
  Validates the configuration (every problem at once; exit 2), then probes the database, the
  homeserver with MATRIX_AS_TOKEN (whoami), the users namespace for a sample user, and whether
  the PNM host resolves (exit 1 when one fails). Exit 0 only when all is well.
  --user   an existing user the appservice must be able to act for (default: a made-up user)`,
    run: (v, _a, env) => runCheck(env, { user: str(v.user) }, consoleIo),
  },
  {
    words: ['appservice-registration'],
    summary: 'print a Synapse appservice registration (fresh tokens) and the matching env lines',
    args: [],
    options: {
      'server-name': { type: 'string' },
      id: { type: 'string' },
      'sender-localpart': { type: 'string' },
      'homeserver-url': { type: 'string' },
      'proxy-url': { type: 'string' },
      output: { type: 'string', short: 'o' },
      url: { type: 'string' },
    },
    usage: `appservice-registration [--server-name NAME] [--homeserver-url URL] [--proxy-url URL] [--id ID] [--sender-localpart NAME] [--url URL] [-o FILE]
  Prints a Synapse appservice registration with fresh as_token and hs_token, then the matching
  environment lines as comments. With -o, writes the registration to FILE (mode 0600, never over
  an existing file) and prints the environment lines. A value it does not know is printed
  commented out, under a FILL IN line, so that an unedited file fails \`check\`.
  --server-name       default MATRIX_SERVER_NAME, else the hostname of the homeserver URL
  --homeserver-url    MATRIX_HOMESERVER_URL for the environment lines (default: the environment's)
  --proxy-url         PROXY_URL, the base URL at which Synapse reaches this proxy (default: the environment's)
  --id                registration id (default matrix2acrobits)
  --sender-localpart  the appservice's own user (default matrix2acrobits)
  --url               the proxy's base URL as Synapse reaches it (default PROXY_URL; without
                      either, url: null and messaging stays off)`,
    run: (v, _a, env) =>
      runRegistration(
        env,
        {
          serverName: str(v['server-name']),
          homeserverUrl: str(v['homeserver-url']),
          proxyUrl: str(v['proxy-url']),
          id: str(v.id),
          senderLocalpart: str(v['sender-localpart']),
          output: str(v.output),
          url: str(v.url),
        },
        consoleIo,
      ),
  },
  {
    words: ['tokens', 'list'],
    summary: 'list the stored registrations, tokens shown as short hashes',
    args: [],
    options: { json: { type: 'boolean' } },
    usage: `tokens list [--json]
  The stored registrations; push tokens appear as the 12-digit hash the logs use.`,
    run: (v, _a, env) => runTokensList(env, { json: v.json === true }, consoleIo),
  },
  {
    words: ['tokens', 'show'],
    summary: 'show one registration, its pending pusher calls and its last deliveries',
    args: ['selector'],
    options: { json: { type: 'boolean' } },
    usage: `tokens show <selector> [--json]
  One registration, the pusher calls still queued for it, and its delivery journal: the last 50
  outcomes of notifications for it (time, event id, outcome, PNM status, latency), newest first;
  written by the service about once a second. No message text, tokens as hashes.
  Exit 1 when there is no such registration.
  --json  the same as one JSON object (deliveries under "deliveries")`,
    run: (v, [selector], env) => runTokensShow(env, selector!, { json: v.json === true }, consoleIo),
  },
  {
    words: ['tokens', 'delete'],
    summary: 'delete a registration and its pusher on the homeserver',
    args: ['selector'],
    options: {},
    usage: `tokens delete <selector>
  Deletes the registration and its pusher on the homeserver (as the Account Removal Reporter
  does). Exit 1 when the homeserver refused; the deletion then stays queued for the service.`,
    run: (_v, [selector], env) => runTokensDelete(env, selector!, consoleIo),
  },
  {
    words: ['push-test'],
    summary: 'send one test push to an account now and print what the PNM answered',
    args: ['selector'],
    options: {},
    usage: `push-test <selector>
  Sends one NotifyGenericTextMessage ("Test from matrix2acrobits") to the account's messages
  token, now, with the service's PNM client and timeout (PNM_URL, PNM_TIMEOUT_MS), and prints the
  PNM's answer and what it means. Exit 0 only when the PNM answered 200; 1 otherwise (no such
  account, no token, 404, 400, 5xx, timeout).`,
    run: (_v, [selector], env) => runPushTest(env, selector!, consoleIo),
  },
  {
    words: ['pushers', 'sync'],
    summary: "register every stored token's pusher again (after a homeserver restore)",
    args: [],
    options: { verbose: { type: 'boolean' } },
    usage: `pushers sync [--verbose]
  Registers every stored messages token's pusher on the homeserver again (after a homeserver
  restore, or a new PROXY_URL). Exit 1 when the homeserver refused one; it stays queued.
  --verbose  one line per account, not only the failures`,
    run: (v, _a, env) => runPushersSync(env, { verbose: v.verbose === true }, consoleIo),
  },
  {
    words: ['migrate-db'],
    summary: 'copy the SQLite database into an empty PostgreSQL database (for several instances)',
    args: [],
    options: { to: { type: 'string' } },
    usage: `migrate-db --to <postgres URL>
  Copies the SQLite database (PUSH_TOKEN_DB_PATH: registrations, pending pusher calls, the
  message index and the send outbox) into an empty PostgreSQL database, in one transaction,
  creating the schema. Run again on a database that holds exactly this copy, it changes nothing
  (exit 0); a database holding anything else is refused (exit 1). Stop the service first, so
  that nothing is written meanwhile.
  --to   postgres://user:password@host:5432/database (the password is never printed)`,
    run: (v, _a, env) => runMigrateDb(env, { to: str(v.to) }, consoleIo),
  },
]

/** Understood by every command, as by the executable alone. */
const GLOBAL_OPTIONS = { help: { type: 'boolean', short: 'h' }, version: { type: 'boolean', short: 'v' } } as const

function usageError(message: string): never {
  console.error(`matrix2acrobits: ${message}\nTry --help.`)
  process.exit(2)
}

export async function main(argv: string[], env: Record<string, string | undefined>): Promise<void> {
  const command = COMMAND_TABLE.find((c) => c.words.every((w, i) => argv[i] === w))
  if (command) {
    const rest = argv.slice(command.words.length)
    let parsed
    try {
      parsed = parseArgs({
        args: rest,
        allowPositionals: true,
        options: { ...command.options, ...GLOBAL_OPTIONS },
      })
    } catch (e) {
      usageError((e as Error).message)
    }
    if (parsed.values.help) {
      console.log(`Usage: matrix2acrobits ${command.usage}`)
      return
    }
    if (parsed.values.version) {
      console.log(`matrix2acrobits ${VERSION}`)
      return
    }
    if (parsed.positionals.length !== command.args.length) {
      usageError(`${command.words.join(' ')} takes ${command.args.length ? command.args.map((a) => `<${a}>`).join(' ') : 'no arguments'}`)
    }
    process.exit(await command.run(parsed.values, parsed.positionals, env))
  }

  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: GLOBAL_OPTIONS,
    })
  } catch (e) {
    usageError((e as Error).message)
  }
  if (parsed.values.version) {
    console.log(`matrix2acrobits ${VERSION}`)
    return
  }
  const [name = 'serve', ...rest] = parsed.positionals
  const group = COMMAND_TABLE.filter((c) => c.words.length > 1 && c.words[0] === name)
  if (parsed.values.help) {
    // `tokens --help`: the usage of each command of the group; otherwise the whole help.
    console.log(group.length > 0 && rest.length === 0 ? group.map((c) => `Usage: matrix2acrobits ${c.usage}`).join('\n\n') : helpText())
    return
  }
  if (name === 'serve' && rest.length === 0) return serve(configOrExit(env))
  if (group.length > 0) usageError(`${name} needs one of: ${group.map((c) => c.usage.split('\n')[0]!.slice(name.length + 1)).join(', ')}`)
  usageError(`unknown command "${[name, ...rest].join(' ')}"`)
}

if (import.meta.main) await main(process.argv.slice(2), process.env)
