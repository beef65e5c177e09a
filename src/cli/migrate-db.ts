/**
 * `migrate-db --to <postgres URL>`: copies the SQLite database (PUSH_TOKEN_DB_PATH) into an empty
 * PostgreSQL database, for the move from one instance to several: tokens, pending pusher calls, the
 * message index and the send outbox. Everything is copied in one
 * transaction: an interrupted copy leaves the target empty. Run again on a target that already
 * holds exactly this copy, it changes nothing; a target holding anything else is refused.
 */
import { Database } from 'bun:sqlite'
import { existsSync } from 'node:fs'
import { databaseUrlProblem } from '../config.ts'
import { redactPassword } from '../secrets.ts'
import { connectPostgres, describePostgresError } from '../store/postgres.ts'
import { migratePostgres } from '../store/pg-migrations.ts'
import { describeDatabaseError, openSqliteStore } from '../store/sqlite.ts'
import { configOrReport, EXIT_CONFIG, EXIT_FAILED, EXIT_OK, type CliIo, type Env, type ExitCode } from './common.ts'

/** A table copied as it is; `serial` names the column a sequence numbers on PostgreSQL. */
interface Table {
  readonly name: string
  readonly columns: readonly string[]
  readonly order: string
  readonly serial?: string
  /** How SQLite gives a column it does not store under that name (mx_addresses' id is its rowid). */
  readonly from?: Readonly<Record<string, string>>
}

const TABLES: readonly Table[] = [
  { name: 'registrations', columns: ['selector', 'username', 'matrix_user_id', 'token_msgs', 'app_id_msgs', 'token_calls', 'app_id_calls', 'created_at', 'updated_at'], order: 'selector' },
  // lease_until is not copied (here nor for mx_jobs): a lease of the process that wrote the file means nothing to the new instances.
  { name: 'pusher_jobs', columns: ['id', 'selector', 'action', 'user_id', 'app_id', 'pushkey', 'attempts', 'next_attempt_at', 'last_error', 'created_at'], order: 'id', serial: 'id' },
  // The message index and the send outbox.
  { name: 'mx_events', columns: ['ord', 'event_id', 'room_id', 'sender', 'ts', 'text', 'author_name', 'edit_of', 'redacted', 'stored_at'], order: 'ord', serial: 'ord' },
  { name: 'mx_redacted', columns: ['event_id', 'redacted_at'], order: 'event_id' },
  { name: 'mx_rooms', columns: ['room_id', 'kind', 'is_direct', 'name', 'canonical_alias', 'conversation', 'predecessor', 'successor', 'updated_at'], order: 'room_id' },
  { name: 'mx_members', columns: ['room_id', 'user_id', 'membership', 'display_name', 'since_ord', 'from_stream', 'updated_at'], order: 'room_id, user_id' },
  { name: 'mx_enrolled', columns: ['user_id', 'enrolled_at', 'caught_up_at'], order: 'user_id' },
  { name: 'mx_deliveries', columns: ['seq', 'user_id', 'event_id', 'ord', 'sent', 'created_at'], order: 'seq', serial: 'seq' },
  { name: 'mx_addresses', columns: ['id', 'user_id', 'address', 'conversation', 'assigned_at'], order: 'id', serial: 'id', from: { id: 'rowid' } },
  { name: 'mx_device_cursors', columns: ['user_id', 'device', 'received_seq', 'sent_seq', 'updated_at'], order: 'user_id, device' },
  { name: 'mx_transactions', columns: ['txn_id', 'committed_at'], order: 'txn_id' },
  { name: 'mx_jobs', columns: ['id', 'kind', 'user_id', 'room_id', 'attempts', 'next_attempt_at', 'last_error', 'created_at'], order: 'id', serial: 'id' },
  { name: 'send_outbox', columns: ['txn_id', 'user_id', 'dedupe_key', 'room_id', 'event_id', 'state', 'created_at', 'updated_at'], order: 'txn_id' },
]

const NUMERIC = new Set([
  'created_at', 'updated_at', 'id', 'attempts', 'next_attempt_at', 'ord', 'ts', 'stored_at', 'redacted_at', 'since_ord',
  'enrolled_at', 'caught_up_at', 'seq', 'assigned_at', 'received_seq', 'sent_seq', 'committed_at',
])
/** Flags: 0/1 on SQLite, BOOLEAN on PostgreSQL. */
const BOOLEAN = new Set(['redacted', 'is_direct', 'from_stream', 'sent'])

type Value = string | number | boolean | null
type Row = Record<string, Value>

/** Rows in one comparable form, whichever engine they come from (PostgreSQL gives BIGINT as text). */
const normalize = (rows: Row[], columns: readonly string[]) =>
  rows.map((r) =>
    columns.map((c) => {
      const v = r[c]
      if (v === null || v === undefined) return null
      if (BOOLEAN.has(c)) return Number(v === true || v === 1 || v === '1')
      return NUMERIC.has(c) ? Number(v) : String(v)
    }),
  )

/** A SQLite row as PostgreSQL takes it. */
const forPostgres = (r: Row): Row => Object.fromEntries(Object.entries(r).map(([c, v]) => [c, BOOLEAN.has(c) && v !== null ? v === 1 || v === true : v]))

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b)

export async function runMigrateDb(env: Env, options: { to?: string }, io: CliIo): Promise<ExitCode> {
  const config = configOrReport(env, io)
  if (!config) return EXIT_CONFIG
  const to = options.to
  if (to === undefined) {
    io.err('matrix2acrobits: migrate-db needs --to <postgres URL> (postgres://user:password@host:5432/database)')
    return EXIT_CONFIG
  }
  const problem = databaseUrlProblem(to)
  if (problem !== undefined) {
    io.err(`matrix2acrobits: --to "${redactPassword(to)}" ${problem}`)
    return EXIT_CONFIG
  }
  const target = redactPassword(to)
  if (!existsSync(config.dbPath)) {
    io.err(`matrix2acrobits: no SQLite database at ${config.dbPath} to copy (set PUSH_TOKEN_DB_PATH, or STATE_DIRECTORY as systemd does)`)
    return EXIT_FAILED
  }

  const source = new Map<string, Row[]>()
  /** Where each sequence of the file stands (AUTOINCREMENT never reuses a number, even after deletes). */
  const sequences = new Map<string, number>()
  try {
    // Brings an older file's schema up to date first, as the service would at start.
    await openSqliteStore(config.dbPath).close()
    const db = new Database(config.dbPath, { readonly: true })
    try {
      for (const t of TABLES) {
        const select = t.columns.map((c) => (t.from?.[c] ? `${t.from[c]} AS ${c}` : c)).join(', ')
        source.set(t.name, db.query(`SELECT ${select} FROM ${t.name} ORDER BY ${t.order}`).all() as Row[])
      }
      for (const r of db.query('SELECT name, seq FROM sqlite_sequence').all() as { name: string; seq: number }[]) sequences.set(r.name, r.seq)
    } finally {
      db.close()
    }
  } catch (e) {
    io.err(`matrix2acrobits: cannot read ${config.dbPath}: ${describeDatabaseError(config.dbPath, e)}`)
    return EXIT_FAILED
  }
  const rowsOf = (name: string) => source.get(name)!

  const sql = connectPostgres(to, { max: 1 })
  try {
    await migratePostgres(sql)
    const outcome = await sql.begin(async (tx) => {
      // One copy at a time, even when the command is started twice; no instance writes meanwhile.
      await tx.unsafe(`LOCK TABLE ${TABLES.map((t) => t.name).join(', ')} IN EXCLUSIVE MODE`)
      const existing = new Map<string, Row[]>()
      for (const t of TABLES) existing.set(t.name, await tx.unsafe(`SELECT ${t.columns.join(', ')} FROM ${t.name} ORDER BY ${t.order}`))
      if ([...existing.values()].some((rows) => rows.length > 0)) {
        const copied = TABLES.every((t) => same(normalize(existing.get(t.name)!, t.columns), normalize(rowsOf(t.name), t.columns)))
        return copied ? ('already' as const) : ('not_empty' as const)
      }
      for (const t of TABLES) {
        for (const r of rowsOf(t.name)) await tx`INSERT INTO ${tx(t.name)} ${tx(forPostgres(r), ...t.columns)}`
        if (t.serial === undefined) continue
        // Numbers were copied as they were: new rows continue after the highest the file ever gave.
        const copiedMax = rowsOf(t.name).reduce((max, r) => Math.max(max, Number(r[t.serial!])), 0)
        const highest = Math.max(copiedMax, sequences.get(t.name) ?? 0)
        if (highest > 0) await tx`SELECT setval(pg_get_serial_sequence(${t.name}, ${t.serial}), ${highest}, true)`
      }
      return 'copied' as const
    })
    if (outcome === 'not_empty') {
      io.err(`matrix2acrobits: ${target} already holds other data: migrate-db copies only into an empty database (nothing changed)`)
      return EXIT_FAILED
    }
    if (outcome === 'already') {
      io.out(`${target} already holds this copy of ${config.dbPath}: nothing changed`)
      return EXIT_OK
    }
    io.out(`copied ${rowsOf('registrations').length} registrations and ${rowsOf('pusher_jobs').length} pending pusher calls from ${config.dbPath} to ${target}`)
    io.out(
      `copied the message index (${rowsOf('mx_events').length} messages, ${rowsOf('mx_deliveries').length} deliveries, ${rowsOf('mx_rooms').length} rooms, ${rowsOf('mx_enrolled').length} enrolled users) and ${rowsOf('send_outbox').length} send outbox rows`,
    )
    io.out('next: set DATABASE_URL to this URL for every instance and start them; keep the SQLite file until they run')
    return EXIT_OK
  } catch (e) {
    io.err(`matrix2acrobits: cannot copy into ${target}: ${describePostgresError(to, e)}`)
    return EXIT_FAILED
  } finally {
    await sql.end({ timeout: 5 }).catch(() => {})
  }
}
