/**
 * The executable on PostgreSQL (DATABASE_URL): `check` probes it, `serve` migrates it and works
 * on it, and the password (here one the trust-authenticated test server ignores) never appears in
 * any output.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { SQL } from 'bun'
import { runCommand } from '../cli/run.ts'
import { startFakePnm } from '../fakes/pnm.ts'
import { startFakeSynapse } from '../fakes/synapse.ts'
import { APP_ID, SELECTOR, TOKEN, readAnswer } from '../harness.ts'
import { pgSkipped, pgTestScope } from '../pg.ts'
import { PG_MIGRATIONS } from '../../src/store/pg-migrations.ts'
import { openPostgresStore } from '../../src/store/postgres.ts'
import { startBinary, type RunningBinary } from './binary.ts'

const PASSWORD = 'pg-Pa55word-never-printed'
const synapse = startFakeSynapse()
const pnm = startFakePnm()
afterAll(() => {
  synapse.stop()
  pnm.stop()
})
const { cleanups, schema } = pgTestScope()

const withPassword = (url: string) => {
  const u = new URL(url)
  u.password = PASSWORD
  return u.toString()
}

const env = (databaseUrl: string, extra: Record<string, string> = {}) => ({
  MATRIX_HOMESERVER_URL: synapse.url,
  MATRIX_AS_TOKEN: synapse.asToken,
  MATRIX_SERVER_NAME: synapse.serverName,
  PROXY_URL: 'https://push.example.org',
  PNM_URL: pnm.url,
  DATABASE_URL: databaseUrl,
  AUTH_MODE: 'none',
  ...extra,
})

describe('DATABASE_URL', () => {
  test('not a PostgreSQL URL: exit 2 naming the variable, without the password', async () => {
    for (const url of [`mysql://app:${PASSWORD}@db/x`, `sqlite:///tmp/x.db`, 'not a url']) {
      const r = await runCommand([], env(url))
      expect(r.exitCode).toBe(2)
      expect(r.stderr).toContain('invalid configuration: DATABASE_URL')
      expect(r.stdout + r.stderr).not.toContain(PASSWORD)
    }
  })

  test('an unreachable server: `serve` exits 1 and `check` fails, one line each, no password', async () => {
    const url = `postgres://app:${PASSWORD}@127.0.0.1:1/db`
    const serve = await runCommand([], env(url))
    expect(serve.exitCode).toBe(1)
    expect(serve.stderr).toContain('cannot open the database postgres://app:[REDACTED]@127.0.0.1:1/db')
    const check = await runCommand(['check'], env(url))
    expect(check.exitCode).toBe(1)
    expect(check.stdout).toContain('  FAIL  postgres://app:[REDACTED]@127.0.0.1:1/db: cannot connect')
    expect(serve.stdout + serve.stderr + check.stdout + check.stderr).not.toContain(PASSWORD)
  })
})

describe.skipIf(pgSkipped())('the executable on PostgreSQL', () => {
  test('check fails, as serve does, when a released migration applied to the database was edited', async () => {
    const s = await schema()
    const sql = new SQL(s.url, { max: 1 })
    cleanups.push(() => sql.end())
    await (await openPostgresStore(s.url)).close()
    expect((await runCommand(['check'], env(s.url))).exitCode).toBe(0)
    await sql`UPDATE schema_migrations SET checksum = '0000' WHERE version = 2`
    const check = await runCommand(['check'], env(s.url))
    expect(check.exitCode).toBe(1)
    expect(check.stdout).toContain('FAIL  migration 2 differs from the one applied to this database: a released migration was edited; the service refuses to start on it')
    const serve = await runCommand([], env(s.url))
    expect(serve.exitCode).toBe(1)
    expect(serve.stderr).toContain('migration 2 differs from the one applied to this database')
  })

  test('check on an empty database: connected, version, migrations pending, writable; nothing created', async () => {
    const s = await schema()
    const r = await runCommand(['check'], env(withPassword(s.url)))
    expect(r.stdout).not.toContain('FAIL')
    expect(r.exitCode).toBe(0)
    expect(r.stdout).toMatch(/ok {4}postgres:\/\/postgres:\[REDACTED\]@127\.0\.0\.1:5432\/test\?search_path=m2a_test_\w+: connected \(PostgreSQL \d+/)
    expect(r.stdout).toContain('schema migrations not applied yet: the service applies them when it starts')
    expect(r.stdout).toContain('is writable')
    expect(r.stdout + r.stderr).not.toContain(PASSWORD)
    const sql = new SQL(s.url, { max: 1 })
    cleanups.push(() => sql.end())
    expect(await sql`SELECT tablename FROM pg_tables WHERE schemaname = ${s.name}`).toEqual([])
  })

  test('serve migrates, stores reports and delivers notifications; check then finds the schema current and the rows', async () => {
    const s = await schema()
    const binary: RunningBinary = await startBinary(env(withPassword(s.url)))
    cleanups.push(() => binary.stop('SIGKILL'))
    const listening = binary.lines.find((l) => l.includes('matrix2acrobits listening'))!
    expect(JSON.parse(listening).database).toBe(withPassword(s.url).replace(PASSWORD, '[REDACTED]'))
    const report = await fetch(`${binary.url}/api/client/push_token_report`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, username: 'alice' }),
    })
    expect(report.status).toBe(200)
    const notify = await readAnswer(
      await fetch(`${binary.url}/_matrix/push/v1/notify`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ notification: { event_id: '$e1', room_id: '!r:example.org', counts: { unread: 1 }, devices: [{ app_id: APP_ID, pushkey: TOKEN }] } }),
      }),
    )
    expect(notify.json).toEqual({ rejected: [] })
    expect(pnm.bodies().filter((b) => b.Id === '$e1')).toHaveLength(1)
    expect((await fetch(`${binary.url}/ready`)).status).toBe(200)

    const check = await runCommand(['check'], env(withPassword(s.url)))
    expect(check.stdout).toContain(`schema current (version ${PG_MIGRATIONS.length})`)
    expect(check.stdout).toMatch(/is writable: 1 accounts, \d+ pusher calls pending/)
    expect(check.exitCode).toBe(0)
    const list = await runCommand(['tokens', 'list', '--json'], env(withPassword(s.url)))
    expect(JSON.parse(list.stdout).map((r: { selector: string }) => r.selector)).toEqual([SELECTOR])
    expect(binary.lines.join('\n') + check.stdout + check.stderr + list.stderr).not.toContain(PASSWORD)
    expect(await binary.stop()).toBe(0)

    // The delivery journal is in the database (written at the latest at shutdown), and push-test
    // reads the account from it.
    const show = await runCommand(['tokens', 'show', SELECTOR, '--json'], env(withPassword(s.url)))
    expect(show.exitCode).toBe(0)
    expect(JSON.parse(show.stdout).deliveries).toEqual([expect.objectContaining({ event_id: '$e1', outcome: 'delivered', pnm_status: 200 })])
    const pushTest = await runCommand(['push-test', SELECTOR], env(withPassword(s.url)))
    expect(pushTest.exitCode).toBe(0)
    expect(pnm.bodies().at(-1)).toMatchObject({ verb: 'NotifyGenericTextMessage', Selector: SELECTOR, Message: 'Test from matrix2acrobits' })
  })
})
