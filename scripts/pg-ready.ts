/**
 * Exits 0 when the PostgreSQL server at the URL given (TEST_DATABASE_URL) answers, else prints
 * one line saying so and exits 1. `.ci/run` runs it before the tests, so that a missing server
 * fails CI instead of skipping the PostgreSQL tests silently.
 */
import { SQL } from 'bun'
import { redactPassword } from '../src/secrets.ts'
import { describePostgresError } from '../src/store/postgres.ts'

const url = process.argv[2] ?? process.env.TEST_DATABASE_URL
if (!url) {
  console.error('pg-ready: no URL given (argument or TEST_DATABASE_URL)')
  process.exit(1)
}
const sql = new SQL(url, { max: 1, connectionTimeout: 5 })
try {
  const [row]: { v: string }[] = await sql`SELECT current_setting('server_version') AS v`
  console.log(`PostgreSQL ${row!.v} reachable at ${redactPassword(url)}`)
} catch (e) {
  console.error(`PostgreSQL is not reachable at ${redactPassword(url)}: ${describePostgresError(url, e)}; the PostgreSQL tests need it (start PostgreSQL 15 there, trust authentication, database test)`)
  process.exit(1)
} finally {
  await sql.end({ timeout: 1 }).catch(() => {})
}
