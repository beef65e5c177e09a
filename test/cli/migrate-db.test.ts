/** `migrate-db --to <postgres URL>` on the built executable: SQLite copied into PostgreSQL, idempotent. */
import { afterAll, describe, expect, test } from 'bun:test'
import { existsSync, rmSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { planPusherCalls } from '../../src/report/plan.ts'
import { openPostgresStore } from '../../src/store/postgres.ts'
import { openSqliteStore } from '../../src/store/sqlite.ts'
import { tempDir } from '../harness.ts'
import { pgSkipped, pgTestScope } from '../pg.ts'
import { runCommand } from './run.ts'

const PASSWORD = 'migrate-Pa55word'
const dir = tempDir('m2a-migrate-')
afterAll(() => rmSync(dir, { recursive: true, force: true }))
const { cleanups, schema } = pgTestScope()

const withPassword = (url: string) => {
  const u = new URL(url)
  u.password = PASSWORD
  return u.toString()
}

async function seededSqlite(): Promise<string> {
  const path = join(tempDir('m2a-migrate-db-'), 'push_tokens.db')
  const store = openSqliteStore(path)
  const plan = planPusherCalls(true)
  await store.saveRegistration({ selector: 'SEL-A', username: 'alice', matrixUserId: '@alice:example.org', tokenMsgs: 'tok-a', appIdMsgs: 'app', tokenCalls: 'voip-a', appIdCalls: 'app.voip' }, 1_700_000_000_000, plan)
  await store.saveRegistration({ selector: 'SEL-B', matrixUserId: '@bob:example.org', tokenMsgs: 'tok-b', appIdMsgs: 'app' }, 1_700_000_100_000, plan)
  await store.saveRegistration({ selector: 'SEL-B', matrixUserId: '@bob:example.org', tokenMsgs: 'tok-b2', appIdMsgs: 'app' }, 1_700_000_200_000, plan)
  const job = (await store.claimNextJob('SEL-A', 1_700_000_300_000, 60_000))!
  await store.rescheduleJob(job.id, 1_700_000_400_000, 'homeserver unreachable')
  await store.close()
  return path
}

describe('migrate-db: usage', () => {
  test('without --to, or with a URL that is not PostgreSQL: exit 2, nothing printed of the password', async () => {
    const none = await runCommand(['migrate-db'], { PUSH_TOKEN_DB_PATH: join(dir, 'x.db') })
    expect(none.exitCode).toBe(2)
    expect(none.stderr).toContain('migrate-db needs --to <postgres URL>')
    const bad = await runCommand(['migrate-db', '--to', `mysql://u:${PASSWORD}@h/d`], { PUSH_TOKEN_DB_PATH: join(dir, 'x.db') })
    expect(bad.exitCode).toBe(2)
    expect(bad.stderr).toContain('must start with postgres://')
    expect(bad.stderr).not.toContain(PASSWORD)
  })

  test('no SQLite file: exit 1 naming it, none created', async () => {
    const path = join(dir, 'missing', 'push_tokens.db')
    const r = await runCommand(['migrate-db', '--to', 'postgres://u@127.0.0.1:1/d'], { PUSH_TOKEN_DB_PATH: path })
    expect(r.exitCode).toBe(1)
    expect(r.stderr).toContain(`no SQLite database at ${path}`)
    expect(existsSync(dirname(path))).toBe(false)
  })
})

describe.skipIf(pgSkipped())('migrate-db into PostgreSQL', () => {
  test('copies registrations and pending pusher calls; a second run changes nothing; new jobs continue the ids', async () => {
    const path = await seededSqlite()
    const s = await schema()
    const source = openSqliteStore(path)
    const [rows, jobs] = [await source.listRegistrations(), await source.pendingJobs()]
    await source.close()
    expect(jobs.length).toBe(3)

    const first = await runCommand(['migrate-db', '--to', withPassword(s.url)], { PUSH_TOKEN_DB_PATH: path })
    expect(first.stderr).toBe('')
    expect(first.exitCode).toBe(0)
    expect(first.stdout).toContain(`copied 2 registrations and 3 pending pusher calls from ${path} to postgres://postgres:[REDACTED]@`)
    expect(first.stdout + first.stderr).not.toContain(PASSWORD)

    const target = await openPostgresStore(s.url)
    cleanups.push(() => target.close())
    expect(await target.listRegistrations()).toEqual(rows)
    expect(await target.pendingJobs()).toEqual(jobs)

    const second = await runCommand(['migrate-db', '--to', withPassword(s.url)], { PUSH_TOKEN_DB_PATH: path })
    expect(second.exitCode).toBe(0)
    expect(second.stdout).toContain('already holds this copy')
    expect(await target.listRegistrations()).toEqual(rows)
    expect(await target.pendingJobs()).toEqual(jobs)

    const { jobs: added } = await target.saveRegistration({ selector: 'SEL-C', matrixUserId: '@carol:example.org', tokenMsgs: 'tok-c', appIdMsgs: 'app' }, 1_700_000_500_000, planPusherCalls(true))
    expect(added[0]!.id).toBeGreaterThan(Math.max(...jobs.map((j) => j.id)))
  })

  test('a database holding other data is refused and left as it was', async () => {
    const path = await seededSqlite()
    const s = await schema()
    const target = await openPostgresStore(s.url)
    cleanups.push(() => target.close())
    await target.saveRegistration({ selector: 'OTHER', matrixUserId: '@zed:example.org' }, 1, () => [])
    const r = await runCommand(['migrate-db', '--to', s.url], { PUSH_TOKEN_DB_PATH: path })
    expect(r.exitCode).toBe(1)
    expect(r.stderr).toContain('already holds other data: migrate-db copies only into an empty database (nothing changed)')
    expect((await target.listRegistrations()).map((x) => x.selector)).toEqual(['OTHER'])
    expect(await target.pendingJobs()).toEqual([])
  })
})
