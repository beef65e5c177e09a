/**
 * Logging: pino, one JSON object per line on stdout (no transports: they run in a worker that
 * fails inside a compiled executable). LOG_FORMAT=pretty formats in-process for a terminal.
 */
import pino, { type DestinationStream, type Logger } from 'pino'
import pretty from 'pino-pretty'
import type { Config } from './config.ts'

// Defence in depth: the code logs hashes, never these fields, but a slip must not leak them. Each is
// censored at the top level of a line and one level down (what pino's redact paths `key` and `*.key`
// did), in the object logged and in the bindings of a child logger.
const SECRET_FIELDS: ReadonlySet<string> = new Set([
  'password',
  'access_token',
  'as_token',
  'hs_token',
  'authorization',
  'token_msgs',
  'token_calls',
  'DeviceToken',
])
const CENSOR = '[redacted]'

/** A copy of `value` with its secret fields censored, or `value` itself when it has none. */
function censorNested(value: object): object {
  // JSON.stringify writes no named property of an array.
  if (Array.isArray(value)) return value
  let copy: object | undefined
  for (const key of SECRET_FIELDS) {
    if (!Object.hasOwn(value, key)) continue
    copy ??= Object.create(Object.getPrototypeOf(value), Object.getOwnPropertyDescriptors(value)) as object
    const { enumerable } = Object.getOwnPropertyDescriptor(copy, key)!
    Object.defineProperty(copy, key, { value: CENSOR, enumerable, writable: true, configurable: true })
  }
  return copy ?? value
}

/** The fields of a log line (or of child bindings) with secrets censored; untouched when there are none. */
export function censorSecrets<T extends object>(fields: T): T {
  let out: Record<string, unknown> | undefined
  for (const key in fields) {
    if (!Object.hasOwn(fields, key)) continue
    const value = (fields as Record<string, unknown>)[key]
    const censored = SECRET_FIELDS.has(key)
      ? value === undefined ? value : CENSOR
      : typeof value === 'object' && value !== null ? censorNested(value) : value
    if (censored !== value) (out ??= { ...(fields as Record<string, unknown>) })[key] = censored
  }
  return (out ?? fields) as T
}

/**
 * The lines logged during one turn of the event loop, written to `target` in one write at its end:
 * a write per line was about a tenth of what a notification cost under load (scripts/bench.ts),
 * and requests handled in the same turn share one. What is pending when the process exits (a fatal
 * line before exit(1), the last line at shutdown) is written before it does.
 */
export function writtenPerTurn(target: DestinationStream): DestinationStream {
  let pending = ''
  let scheduled = false
  const flush = () => {
    scheduled = false
    if (pending === '') return
    const batch = pending
    pending = ''
    target.write(batch)
  }
  process.on('exit', flush)
  return {
    write(line: string) {
      pending += line
      if (!scheduled) {
        scheduled = true
        setImmediate(flush)
      }
    },
  }
}

export function createLogger(
  config: Pick<Config, 'logLevel' | 'logFormat'>,
  destination?: DestinationStream,
): Logger {
  const stream =
    destination ??
    (config.logFormat === 'pretty'
      ? pretty({ colorize: process.stdout.isTTY, sync: true })
      : writtenPerTurn(pino.destination({ dest: 1, sync: true })))
  // Not pino's own `redact`: with `*.key` paths it runs every value of every line through a path
  // interpreter, which cost about as much CPU as the rest of a notification (scripts/bench.ts).
  const logger = pino(
    {
      level: config.logLevel,
      base: { service: 'matrix2acrobits' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }), log: censorSecrets },
    },
    stream,
  )
  // pino builds a child with Object.create(parent), so every descendant inherits this method.
  const child = logger.child
  logger.child = function (this: Logger, bindings, options) {
    return child.call(this, censorSecrets(bindings), options)
  } as Logger['child']
  return logger
}
