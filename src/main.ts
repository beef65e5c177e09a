/**
 * Composition root: argv -> config -> service -> listen; signals. Exit codes: 0 done, 1 runtime
 * failure (port taken, database unusable), 2 invalid configuration or usage.
 */
import { parseArgs } from 'node:util'
import pkg from '../package.json' with { type: 'json' }
import { compose, type Service } from './compose.ts'
import { ENV_DOC, loadConfig, missingFor, type Config } from './config.ts'
import { metricsResponse } from './app.ts'

export const VERSION: string = pkg.version

/** A request in flight at SIGTERM gets this long to finish (Synapse's own timeout is 60 s). */
const SHUTDOWN_GRACE_MS = 30_000

const HELP = `matrix2acrobits ${VERSION}
Push gateway between a Matrix homeserver (Synapse) and Acrobits softphone apps.

Usage: matrix2acrobits [serve] [--help] [--version]

Commands:
  serve      run the service (the default)

Options:
  -h, --help     show this help
  -v, --version  print the version

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

function announce(service: Service, config: Config) {
  const { log } = service
  const missing = missingFor(config)
  if (config.pushGatewayUrl === undefined) {
    log.warn('PROXY_URL is not set: pushers are not registered on the homeserver; tokens are still stored and notifications still forwarded')
  } else if (missing.pushers !== undefined) {
    log.warn(`${missing.pushers} is not set: token reports are answered 503 until it is (pusher registration needs it)`)
  }
  if (config.authMode === 'matrix' && missing.login !== undefined) {
    log.warn(`${missing.login} is not set: token reports (AUTH_MODE=matrix) are answered 503 until it is`)
  }
  if (config.authMode === 'none') {
    log.warn('AUTH_MODE=none: token reports are not authenticated; anyone who can reach this service can redirect the notifications of any user')
    if (missing.serverName !== undefined) log.warn('MATRIX_SERVER_NAME is not set: only Matrix IDs and MAPPING_FILE entries can be resolved')
  } else if (config.mappingFile !== undefined) {
    log.info('MAPPING_FILE is ignored with AUTH_MODE=matrix: the homeserver names the user')
  }
}

export async function serve(config: Config): Promise<void> {
  // Everything this process creates (the database, its journal) is readable by its owner only.
  process.umask(0o077)
  let service: Service
  try {
    service = compose(config, { defaultMetrics: true })
  } catch (e) {
    console.error(`matrix2acrobits: cannot open the database ${config.dbPath}: ${(e as Error).message}`)
    process.exit(1)
  }
  const { app, log, worker, store } = service
  announce(service, config)
  try {
    // idleTimeout covers the longest answer the proxy gives (the notify deadline), in seconds.
    app.listen({ hostname: config.host, port: config.port, idleTimeout: 60, maxRequestBodySize: 1024 * 1024 })
  } catch (e) {
    log.fatal({ err: (e as Error).message }, `cannot listen on ${config.host}:${config.port}`)
    process.exit(1)
  }
  let metricsServer: ReturnType<typeof Bun.serve> | undefined
  if (config.metricsAddress) {
    metricsServer = Bun.serve({
      hostname: config.metricsAddress.host,
      port: config.metricsAddress.port,
      fetch: (request) =>
        new URL(request.url).pathname === '/metrics'
          ? metricsResponse(service)
          : Response.json({ errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' }, { status: 404 }),
    })
    log.info({ address: `${metricsServer.hostname}:${metricsServer.port}` }, 'metrics listening')
  }
  worker.start()
  log.info(
    { version: VERSION, address: `${app.server!.hostname}:${app.server!.port}`, port: app.server!.port, database: config.dbPath },
    'matrix2acrobits listening',
  )

  let stopping = false
  const shutdown = async (signal: string) => {
    if (stopping) return
    stopping = true
    service.startDraining()
    log.info({ signal }, 'shutting down: no new connections, finishing requests in flight')
    const grace = Bun.sleep(SHUTDOWN_GRACE_MS).then(() => 'timeout' as const)
    const finished = await Promise.race([app.server!.stop(false).then(() => 'done' as const), grace])
    if (finished === 'timeout') {
      log.warn('requests still in flight after the grace period; closing them')
      await app.server!.stop(true)
    }
    metricsServer?.stop(true)
    await worker.stop()
    store.close()
    log.info('stopped')
    process.exit(0)
  }
  process.on('SIGTERM', () => void shutdown('SIGTERM'))
  process.on('SIGINT', () => void shutdown('SIGINT'))
}

export async function main(argv: string[], env: Record<string, string | undefined>): Promise<void> {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: { help: { type: 'boolean', short: 'h' }, version: { type: 'boolean', short: 'v' } },
    })
  } catch (e) {
    console.error(`matrix2acrobits: ${(e as Error).message}\nTry --help.`)
    process.exit(2)
  }
  if (parsed.values.version) {
    console.log(`matrix2acrobits ${VERSION}`)
    return
  }
  if (parsed.values.help) {
    console.log(HELP)
    return
  }
  const [command = 'serve', ...rest] = parsed.positionals
  if (command === 'serve' && rest.length === 0) return serve(configOrExit(env))
  console.error(`matrix2acrobits: unknown command "${[command, ...rest].join(' ')}"\nTry --help.`)
  process.exit(2)
}

if (import.meta.main) await main(process.argv.slice(2), process.env)
