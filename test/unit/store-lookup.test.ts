/**
 * The pushkey lookup every notification makes: the newest row for (pushkey, app id), read from its
 * index without a sort, on a new database and on one made by the first schema version.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { Database } from 'bun:sqlite'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { MIGRATIONS, migrate } from '../../src/store/migrations.ts'
import { openSqliteStore } from '../../src/store/sqlite.ts'
import { tempDir } from '../harness.ts'

const dir = tempDir('m2a-lookup-')
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const LOOKUP = 'SELECT * FROM registrations WHERE token_msgs = ? AND app_id_msgs = ? ORDER BY updated_at DESC LIMIT 1'
const insert = (db: Database, selector: string, token: string, updatedAt: number) =>
  db.run(
    `INSERT INTO registrations (selector, matrix_user_id, token_msgs, app_id_msgs, created_at, updated_at) VALUES (?, '@a:x', ?, 'app', 0, ?)`,
    [selector, token, updatedAt],
  )

describe('pushkey lookup', () => {
  test('uses the index and no sort', () => {
    const db = new Database(':memory:')
    migrate(db)
    const plan = db.query<{ detail: string }, [string, string]>(`EXPLAIN QUERY PLAN ${LOOKUP}`).all('t', 'app').map((r) => r.detail).join('; ')
    expect(plan).toContain('USING INDEX registrations_pushkey_newest')
    expect(plan).not.toContain('TEMP B-TREE')
    db.close()
  })

  test('a database of schema version 1 is upgraded, and the newest of several rows wins', async () => {
    const path = join(dir, 'v1.db')
    const db = new Database(path, { create: true })
    db.transaction(() => {
      MIGRATIONS[0]!(db)
      db.run('PRAGMA user_version = 1')
    })()
    insert(db, 'OLD', 'tok', 100)
    insert(db, 'NEW', 'tok', 300)
    insert(db, 'MID', 'tok', 200)
    db.close()
    const store = openSqliteStore(path)
    try {
      expect((await store.findByPushkey('app', 'tok'))?.selector).toBe('NEW')
      expect(await store.findByPushkey('other-app', 'tok')).toBeUndefined()
    } finally {
      store.close()
    }
    const again = new Database(path)
    expect(again.query<{ user_version: number }, []>('PRAGMA user_version').get()!.user_version).toBe(MIGRATIONS.length)
    const indexes = again.query<{ name: string }, []>("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'registrations'").all().map((r) => r.name)
    expect(indexes).toContain('registrations_pushkey_newest')
    expect(indexes).not.toContain('registrations_token_msgs')
    again.close()
  })
})
