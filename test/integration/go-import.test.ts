/**
 * The Go proxy's rows: how their times are read, and how a row without a Matrix user
 * behaves until the app's next report claims it.
 */
import { Database } from 'bun:sqlite'
import { afterEach, describe, expect, test } from 'bun:test'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { fromGoRow, parseGoTime } from '../../src/store/go-import.ts'
import { openSqliteStore } from '../../src/store/sqlite.ts'
import { loadConfig } from '../../src/config.ts'
import { openPostgresStore } from '../../src/store/postgres.ts'
import { runCommand } from '../cli/run.ts'
import { createTestSchema, pgSkipped } from '../pg.ts'
import { APP_ID, SELECTOR, TOKEN, startHarness, tempDir, type Harness } from '../harness.ts'

const dirs: string[] = []
let h: Harness | undefined
afterEach(async () => {
  await h?.close()
  h = undefined
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
})

function goDb(rows: [string, string | null, string | null][]) {
  const dir = tempDir('m2a-go-')
  dirs.push(dir)
  const path = join(dir, 'push_tokens.db')
  const db = new Database(path, { create: true })
  db.run(`CREATE TABLE push_tokens (id INTEGER PRIMARY KEY AUTOINCREMENT, selector TEXT NOT NULL UNIQUE, token_msgs TEXT, appid_msgs TEXT,
    token_calls TEXT, appid_calls TEXT, created_at DATETIME DEFAULT CURRENT_TIMESTAMP, updated_at DATETIME DEFAULT CURRENT_TIMESTAMP)`)
  for (const [selector, token, appId] of rows) db.run('INSERT INTO push_tokens (selector, token_msgs, appid_msgs) VALUES (?, ?, ?)', [selector, token, appId])
  db.close()
  return path
}

describe('reading the Go rows', () => {
  test('DATETIME as the Go driver, SQLite and time.Time write it; numbers; garbage falls back', () => {
    const at = Date.parse('2025-03-01T10:00:00.123Z')
    expect(parseGoTime('2025-03-01 10:00:00.123456789+00:00', 0)).toBe(at)
    expect(parseGoTime('2025-03-01T12:00:00.123+02:00', 0)).toBe(at)
    expect(parseGoTime('2025-03-01 10:00:00.123456789 +0000 UTC', 0)).toBe(at)
    expect(parseGoTime('2025-03-01 10:00:00', 0)).toBe(Date.parse('2025-03-01T10:00:00Z'))
    expect(parseGoTime(1_740_823_200, 0)).toBe(1_740_823_200_000)
    expect(parseGoTime(1_740_823_200_123, 0)).toBe(1_740_823_200_123)
    expect(parseGoTime('yesterday', 42)).toBe(42)
    expect(parseGoTime(null, 42)).toBe(42)
  })

  test('empty strings are no token; a token without its app id is dropped; no selector, no row', () => {
    const base = { token_calls: '', appid_calls: null, created_at: '2025-03-01 10:00:00', updated_at: null }
    expect(fromGoRow({ ...base, selector: ' S:1 ', token_msgs: 'tok', appid_msgs: APP_ID }, 7)).toEqual({
      selector: 'S:1', tokenMsgs: 'tok', appIdMsgs: APP_ID, tokenCalls: undefined, appIdCalls: undefined, createdAt: Date.parse('2025-03-01T10:00:00Z'), updatedAt: Date.parse('2025-03-01T10:00:00Z'),
    })
    expect(fromGoRow({ ...base, selector: 'S:2', token_msgs: 'tok', appid_msgs: '' }, 7)).toMatchObject({ tokenMsgs: undefined, appIdMsgs: undefined })
    expect(fromGoRow({ ...base, selector: '', token_msgs: 'tok', appid_msgs: APP_ID }, 7)).toBeUndefined()
  })

  test('a database of ours that never had the Go table imports nothing and says nothing', async () => {
    const dir = tempDir('m2a-go-')
    dirs.push(dir)
    const store = openSqliteStore(join(dir, 'fresh.db'))
    expect(await store.migrationNotes()).toEqual([])
    await store.close()
  })
})

describe('an imported row without a Matrix user', () => {
  const report = (token: string) => h!.report({ selector: SELECTOR, token_msgs: token, app_id_msgs: APP_ID, username: 'alice', password: 'alice-password' })

  test('is claimed by the report that carries its token; registered with the selector then', async () => {
    h = await startHarness({ env: { PUSH_TOKEN_DB_PATH: goDb([[SELECTOR, TOKEN, APP_ID]]) } })
    expect(await h!.store.getRegistration(SELECTOR)).toMatchObject({ matrixUserId: undefined, tokenMsgs: TOKEN })
    expect((await report(TOKEN)).status).toBe(200)
    expect((await h.store.getRegistration(SELECTOR))!.matrixUserId).toBe('@alice:example.org')
    // No pusher deletion for the Go row: there was no user to delete it for.
    expect(h.synapse.pusherCalls().map((c) => [c.query.user_id, c.body.kind, c.body.data?.selector])).toEqual([['@alice:example.org', 'http', SELECTOR]])
  })

  test('a report with another token while the imported one is stored: 403, nothing changes', async () => {
    h = await startHarness({ env: { PUSH_TOKEN_DB_PATH: goDb([[SELECTOR, TOKEN, APP_ID]]) } })
    const res = await report('some-other-token-0123456789')
    expect(res.status).toBe(403)
    expect(await h!.store.getRegistration(SELECTOR)).toMatchObject({ matrixUserId: undefined, tokenMsgs: TOKEN })
  })

  test('once its token is gone (the PNM forgot it), any authenticated report claims it', async () => {
    h = await startHarness({ env: { PUSH_TOKEN_DB_PATH: goDb([[SELECTOR, TOKEN, APP_ID]]) } })
    h.pnm.forget(TOKEN)
    const gone = await h.notify({ event_id: '$e', room_id: '!r:example.org', devices: [{ app_id: APP_ID, pushkey: TOKEN, data: { format: 'event_id_only' } }] })
    expect(gone.json).toEqual({ rejected: [TOKEN] })
    expect((await report('the-new-token-0123456789')).status).toBe(200)
    expect(await h!.store.getRegistration(SELECTOR)).toMatchObject({ matrixUserId: '@alice:example.org', tokenMsgs: 'the-new-token-0123456789' })
  })
})

describe.skipIf(pgSkipped())('the Go table and PostgreSQL', () => {
  test('with DATABASE_URL the Go file is not read (noted at start); migrate-db carries the imported rows over, without a Matrix user', async () => {
    const path = goDb([['GO:1', 'tok-go', APP_ID]])
    const schema = await createTestSchema()
    try {
      const r = loadConfig({ DATABASE_URL: schema.url, PUSH_TOKEN_DB_PATH: path }, { readFile: () => '', cwd: '/' })
      expect(r.ok && r.config.notes.filter((n) => n.startsWith('PUSH_TOKEN_DB_PATH is ignored'))).toHaveLength(1)
      const pg = await openPostgresStore(schema.url)
      expect(await pg.migrationNotes()).toEqual([])
      expect(await pg.listRegistrations()).toEqual([])
      await pg.close()
      // Untouched: still only the Go table, none of ours.
      const file = new Database(path, { readonly: true })
      expect((file.query("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").all() as { name: string }[]).map((t) => t.name)).toEqual(['push_tokens'])
      file.close()

      // The way over: one start on SQLite imports the Go rows, then migrate-db copies them.
      const sqlite = openSqliteStore(path)
      expect(await sqlite.migrationNotes()).toEqual([expect.stringContaining('imported 1 of 1 rows')])
      await sqlite.close()
      const copied = await runCommand(['migrate-db', '--to', schema.url], { PUSH_TOKEN_DB_PATH: path })
      expect(copied.exitCode).toBe(0)
      const after = await openPostgresStore(schema.url)
      try {
        const found = await after.findByPushkey(APP_ID, 'tok-go')
        expect(found).toMatchObject({ selector: 'GO:1', tokenMsgs: 'tok-go', appIdMsgs: APP_ID })
        expect(found!.matrixUserId).toBeUndefined()
      } finally {
        await after.close()
      }
    } finally {
      await schema.drop()
    }
  }, 60_000)
})
