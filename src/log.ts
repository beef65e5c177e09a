/**
 * Logging: pino, one JSON object per line on stdout (no transports: they run in a worker that
 * fails inside a compiled executable). LOG_FORMAT=pretty formats in-process for a terminal.
 */
import pino, { type DestinationStream, type Logger } from 'pino'
import pretty from 'pino-pretty'
import type { Config } from './config.ts'

// Defence in depth: the code logs hashes, never these fields, but a slip must not leak them.
const REDACT = [
  'password',
  '*.password',
  'access_token',
  '*.access_token',
  'as_token',
  '*.as_token',
  'authorization',
  '*.authorization',
  'headers.authorization',
  'token_msgs',
  'token_calls',
  '*.token_msgs',
  '*.token_calls',
  'DeviceToken',
  '*.DeviceToken',
]

export function createLogger(
  config: Pick<Config, 'logLevel' | 'logFormat'>,
  destination?: DestinationStream,
): Logger {
  const stream =
    destination ?? (config.logFormat === 'pretty' ? pretty({ colorize: process.stdout.isTTY, sync: true }) : pino.destination({ dest: 1, sync: true }))
  return pino(
    {
      level: config.logLevel,
      base: { service: 'matrix2acrobits' },
      redact: { paths: REDACT, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    stream,
  )
}
