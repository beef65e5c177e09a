/**
 * What only the PostgreSQL engine has: migrations under an advisory lock when several instances
 * start together, the edited-migration refusal, passwords kept out of every message, and the
 * service riding out a lost database connection (503, /ready says so, then recovery by itself).
 */
import { describe, expect, test } from 'bun:test'
import { SQL } from 'bun'
import { PG_MIGRATIONS } from '../../src/store/pg-migrations.ts'
import { describePostgresError, openPostgresStore } from '../../src/store/postgres.ts'
import { APP_ID, SELECTOR, TOKEN, startHarness, type Harness } from '../harness.ts'
import { pgSkipped, pgTestScope, startPgRelay } from '../pg.ts'

const { cleanups, schema } = pgTestScope()

describe.skipIf(pgSkipped())('PostgreSQL engine', () => {
  test('instances starting together apply each migration once, and start', async () => {
    const s = await schema()
    const stores = await Promise.all(Array.from({ length: 5 }, () => openPostgresStore(s.url)))
    for (const store of stores) cleanups.push(() => store.close())
    const sql = new SQL(s.url, { max: 1 })
    cleanups.push(() => sql.end())
    const rows: { version: number }[] = await sql`SELECT version FROM schema_migrations ORDER BY version`
    expect(rows.map((r) => r.version)).toEqual(PG_MIGRATIONS.map((_, i) => i + 1))
    await stores[0]!.saveRegistration({ selector: 'S', matrixUserId: '@a:example.org' }, 1, () => [])
    expect(await stores[4]!.countRegistrations()).toBe(1)
  })

  test('a released migration that was edited, or a schema newer than this release, stops the start', async () => {
    const s = await schema()
    await (await openPostgresStore(s.url)).close()
    const sql = new SQL(s.url, { max: 1 })
    cleanups.push(() => sql.end())
    await sql`UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1`
    await expect(openPostgresStore(s.url)).rejects.toThrow('migration 1 differs from the one applied to this database: a released migration was edited')
    await sql`DELETE FROM schema_migrations`
    for (let v = 1; v <= PG_MIGRATIONS.length + 1; v++) await sql`INSERT INTO schema_migrations (version, checksum) VALUES (${v}, 'x')`
    await expect(openPostgresStore(s.url)).rejects.toThrow(`is newer than this release knows (${PG_MIGRATIONS.length})`)
  })

  test('errors never carry the password', () => {
    const url = 'postgres://app:s3cr%40t-pw@db.example.org:5432/push'
    const message = describePostgresError(url, new Error('connect failed for postgres://app:s3cr@t-pw@db.example.org:5432/push using s3cr@t-pw'))
    expect(message).not.toContain('s3cr')
    expect(message).toContain('[REDACTED]')
    // The Unix-socket form too, whose empty host a URL parser refuses.
    const socket = describePostgresError('postgres://app:pl41n-pw@/push?host=/run/postgresql', new Error('auth failed: pl41n-pw'))
    expect(socket).toBe('auth failed: [REDACTED]')
  })

  test('connection lost: reports, notifications and /ready answer 503; back by itself when the database returns', async () => {
    const s = await schema()
    const relay = startPgRelay(s.url)
    cleanups.push(() => relay.stop())
    const h: Harness = await startHarness({ env: { AUTH_MODE: 'none', DATABASE_URL: relay.url() } })
    cleanups.push(() => h.close())
    const report = (token: string) => h.report({ selector: SELECTOR, token_msgs: token, app_id_msgs: APP_ID, username: 'alice' })
    const notification = (id: string) => ({ event_id: id, room_id: '!r:example.org', counts: { unread: 1 }, devices: [{ app_id: APP_ID, pushkey: TOKEN }] })

    expect((await report(TOKEN)).status).toBe(200)
    expect((await h.request('GET', '/ready')).json).toEqual({ status: 'ready' })

    relay.cut()
    const refused = await report(`${TOKEN}-new`)
    expect(refused.status).toBe(503)
    expect(refused.headers.get('retry-after')).toBe('5')
    const notify = await h.notify(notification('$lost'))
    expect(notify.status).toBe(503)
    expect(h.pnm.bodies()).toHaveLength(0)
    const ready = await h.request('GET', '/ready')
    expect(ready.status).toBe(503)
    expect(ready.json.status).toBe('database unavailable')
    expect(h.logs.lines.some((l) => l.includes('token store unavailable; report not stored'))).toBe(true)

    relay.restore()
    const back = await (async () => {
      for (let i = 0; i < 50; i++) {
        const r = await h.request('GET', '/ready')
        if (r.status === 200) return r
        await Bun.sleep(100)
      }
      throw new Error('/ready did not recover')
    })()
    expect(back.json).toEqual({ status: 'ready' })
    expect((await h.notify(notification('$back'))).status).toBe(200)
    expect(h.pnm.bodies().map((b) => b.Id)).toEqual(['$back'])
    expect((await report(`${TOKEN}-new`)).status).toBe(200)
    expect((await h.store.getRegistration(SELECTOR))?.tokenMsgs).toBe(`${TOKEN}-new`)
  })
})
