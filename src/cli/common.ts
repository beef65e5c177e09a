/**
 * What the operator commands share: exit codes, where output goes, loading the configuration and
 * opening the token store without creating one by mistake.
 */
import { existsSync } from 'node:fs'
import pino, { type Logger } from 'pino'
import { loadConfig, type Config } from '../config.ts'
import { createLogger } from '../log.ts'
import { describeStoreError, openStore, storeName } from '../store/open.ts'
import type { TokenStore } from '../store/types.ts'

/** The same codes as `serve`: 0 success, 1 a runtime failure, 2 invalid configuration or usage. */
export const EXIT_OK = 0
export const EXIT_FAILED = 1
export const EXIT_CONFIG = 2
export type ExitCode = typeof EXIT_OK | typeof EXIT_FAILED | typeof EXIT_CONFIG

/** Results on stdout (what a script reads), complaints on stderr. */
export interface CliIo {
  out(line: string): void
  err(line: string): void
}

export const consoleIo: CliIo = {
  out: (line) => console.log(line),
  err: (line) => console.error(line),
}

export type Env = Record<string, string | undefined>

export function configOrReport(env: Env, io: CliIo): Config | undefined {
  const result = loadConfig(env)
  if (result.ok) return result.config
  for (const error of result.errors) io.err(`matrix2acrobits: invalid configuration: ${error}`)
  return undefined
}

/**
 * The store of an existing database. A command that only reads or removes must not leave an
 * empty database behind when PUSH_TOKEN_DB_PATH (or STATE_DIRECTORY) points at the wrong place.
 */
export async function openExistingStore(config: Config, io: CliIo): Promise<TokenStore | undefined> {
  if (config.databaseUrl === undefined && !existsSync(config.dbPath)) {
    io.err(`matrix2acrobits: no token database at ${config.dbPath} (set PUSH_TOKEN_DB_PATH, or STATE_DIRECTORY as systemd does)`)
    return undefined
  }
  try {
    return await openStore(config)
  } catch (e) {
    io.err(`matrix2acrobits: cannot open the database ${storeName(config)}: ${describeStoreError(config, e)}`)
    return undefined
  }
}

/**
 * The service's components log as they work; a command reports in sentences of its own, so their
 * log lines are shown (on stderr, keeping stdout for results) only with LOGLEVEL=DEBUG (or TRACE).
 */
export function commandLogger(config: Config): Logger {
  if (config.logLevel !== 'debug' && config.logLevel !== 'trace') return pino({ level: 'silent' })
  return createLogger(config, pino.destination({ dest: 2, sync: true }))
}

export const isoTime = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z')

// Control characters (C0, DEL, C1: ESC and CSI rewrite a terminal) and the bidirectional
// overrides that reorder what the operator reads.
const UNPRINTABLE = /[\p{Cc}\u202a-\u202e\u2066-\u2069]/gu
const escapeChar = (c: string) => {
  const code = c.codePointAt(0)!
  return code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`
}

/**
 * A stored value as it may reach the operator's terminal: control characters shown as `\x1b`, a
 * backslash as `\\` (so an escape cannot be forged). What the service stores today has none, but a
 * database written by older versions, or by hand, may.
 */
export const printable = (value: string) => value.replace(/\\/g, '\\\\').replace(UNPRINTABLE, escapeChar)

/**
 * JSON for the terminal: JSON.stringify escapes C0 controls but writes DEL, C1 and the bidi
 * overrides raw; they become \u escapes, which read back as the same string.
 */
export const printableJson = (value: unknown) =>
  JSON.stringify(value, null, 2).replace(/[\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u${c.codePointAt(0)!.toString(16).padStart(4, '0')}`)

/** Left-aligned columns, two spaces apart; every cell printable. */
export function table(rows: readonly (readonly string[])[]): string[] {
  const cells = rows.map((row) => row.map(printable))
  const widths: number[] = []
  for (const row of cells) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)))
  return cells.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd())
}
