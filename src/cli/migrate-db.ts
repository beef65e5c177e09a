/**
 * `migrate-db --to <postgres URL>`: copies the SQLite database (PUSH_TOKEN_DB_PATH) into an empty
 * PostgreSQL database, for the move from one instance to several. Everything is copied in one
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

const REGISTRATION_COLUMNS = ['selector', 'username', 'matrix_user_id', 'token_msgs', 'app_id_msgs', 'token_calls', 'app_id_calls', 'created_at', 'updated_at'] as const
// lease_until is not copied: a lease of the process that wrote the file means nothing to the new instances.
const JOB_COLUMNS = ['id', 'selector', 'action', 'user_id', 'app_id', 'pushkey', 'attempts', 'next_attempt_at', 'last_error', 'created_at'] as const
const NUMERIC = new Set(['created_at', 'updated_at', 'id', 'attempts', 'next_attempt_at'])

type Row = Record<string, string | number | null>

/** Rows in one comparable form, whichever engine they come from (PostgreSQL gives BIGINT as text). */
const normalize = (rows: Row[], columns: readonly string[]) =>
  rows.map((r) => columns.map((c) => (r[c] === null || r[c] === undefined ? null : NUMERIC.has(c) ? Number(r[c]) : String(r[c]))))

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

  let registrations: Row[]
  let jobs: Row[]
  try {
    // Brings an older file's schema up to date first, as the service would at start.
    await openSqliteStore(config.dbPath).close()
    const db = new Database(config.dbPath, { readonly: true })
    try {
      registrations = db.query(`SELECT ${REGISTRATION_COLUMNS.join(', ')} FROM registrations ORDER BY selector`).all() as Row[]
      jobs = db.query(`SELECT ${JOB_COLUMNS.join(', ')} FROM pusher_jobs ORDER BY id`).all() as Row[]
    } finally {
      db.close()
    }
  } catch (e) {
    io.err(`matrix2acrobits: cannot read ${config.dbPath}: ${describeDatabaseError(config.dbPath, e)}`)
    return EXIT_FAILED
  }

  const sql = connectPostgres(to, { max: 1 })
  try {
    await migratePostgres(sql)
    const outcome = await sql.begin(async (tx) => {
      // One copy at a time, even when the command is started twice.
      await tx`LOCK TABLE registrations, pusher_jobs IN EXCLUSIVE MODE`
      const existing: Row[] = await tx.unsafe(`SELECT ${REGISTRATION_COLUMNS.join(', ')} FROM registrations ORDER BY selector`)
      const existingJobs: Row[] = await tx.unsafe(`SELECT ${JOB_COLUMNS.join(', ')} FROM pusher_jobs ORDER BY id`)
      if (existing.length > 0 || existingJobs.length > 0) {
        const copied =
          same(normalize(existing, REGISTRATION_COLUMNS), normalize(registrations, REGISTRATION_COLUMNS)) &&
          same(normalize(existingJobs, JOB_COLUMNS), normalize(jobs, JOB_COLUMNS))
        return copied ? ('already' as const) : ('not_empty' as const)
      }
      for (const r of registrations) {
        await tx`INSERT INTO registrations ${tx(r, ...REGISTRATION_COLUMNS)}`
      }
      for (const j of jobs) {
        await tx`INSERT INTO pusher_jobs ${tx(j, ...JOB_COLUMNS)}`
      }
      // Ids were copied as they were: new jobs continue after the highest.
      await tx`SELECT setval(pg_get_serial_sequence('pusher_jobs', 'id'), GREATEST((SELECT max(id) FROM pusher_jobs), 1), (SELECT count(*) > 0 FROM pusher_jobs))`
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
    io.out(`copied ${registrations.length} registrations and ${jobs.length} pending pusher calls from ${config.dbPath} to ${target}`)
    io.out('next: set DATABASE_URL to this URL for every instance and start them; keep the SQLite file until they run')
    return EXIT_OK
  } catch (e) {
    io.err(`matrix2acrobits: cannot copy into ${target}: ${describePostgresError(to, e)}`)
    return EXIT_FAILED
  } finally {
    await sql.end({ timeout: 5 }).catch(() => {})
  }
}
