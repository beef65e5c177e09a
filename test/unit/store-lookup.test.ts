/**
 * The pushkey lookup every notification makes: the newest row for (pushkey, app id), read from its
 * index without a sort, on a new database and on one made by the first schema version.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { Database } from 'bun:sqlite'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { MIGRATIONS, migrate } from '../../src/store/migrations.ts'
import { LOOKUP_CHECK_EVERY_MS, openSqliteStore } from '../../src/store/sqlite.ts'
import { tempDir } from '../harness.ts'

const dir = tempDir('m2a-lookup-')
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const LOOKUP = 'SELECT * FROM registrations WHERE token_msgs = ? AND app_id_msgs = ? ORDER BY updated_at DESC LIMIT 1'
const insert = (db: Database, selector: string, token: string, updatedAt: number) =>
  db.run(
    `INSERT INTO registrations (selector, matrix_user_id, token_msgs, app_id_msgs, created_at, updated_at) VALUES (?, '@a:x', ?, 'app', 0, ?)`,
    [selector, token, updatedAt],
  )

/** A store on a new file `name` holding one account, SEL with pushkey `tok` of app `app`. */
function storeHoldingOneRow(name: string) {
  const path = join(dir, name)
  const db = new Database(path, { create: true })
  migrate(db)
  insert(db, 'SEL', 'tok', 100)
  db.close()
  return openSqliteStore(path)
}

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

describe('remembered lookups', () => {
  test("another connection's commit is seen within LOOKUP_CHECK_EVERY_MS; this connection's own writes at once", async () => {
    const path = join(dir, 'cache.db')
    const store = openSqliteStore(path)
    const other = new Database(path)
    try {
      // A miss, remembered; then the row arrives from elsewhere.
      expect(await store.findByPushkey('app', 'tok')).toBeUndefined()
      insert(other, 'SEL', 'tok', 100)
      await Bun.sleep(LOOKUP_CHECK_EVERY_MS * 2)
      expect((await store.findByPushkey('app', 'tok'))?.selector).toBe('SEL')
      expect((await store.findBySelector('app', 'tok', 'SEL'))?.selector).toBe('SEL')

      // Changed elsewhere (a new token), then deleted elsewhere (`tokens delete`).
      other.run("UPDATE registrations SET token_msgs = 'tok2' WHERE selector = 'SEL'")
      await Bun.sleep(LOOKUP_CHECK_EVERY_MS * 2)
      expect(await store.findByPushkey('app', 'tok')).toBeUndefined()
      expect(await store.findBySelector('app', 'tok', 'SEL')).toBeUndefined()
      expect((await store.findBySelector('app', 'tok2', 'SEL'))?.tokenMsgs).toBe('tok2')

      // This connection forgets the token (a PNM 404): no wait.
      expect(await store.forgetPushkey('app', 'tok2', 200)).toBe(1)
      expect(await store.findBySelector('app', 'tok2', 'SEL')).toBeUndefined()
      expect(await store.findByPushkey('app', 'tok2')).toBeUndefined()

      other.run("UPDATE registrations SET token_msgs = 'tok3', app_id_msgs = 'app' WHERE selector = 'SEL'")
      await Bun.sleep(LOOKUP_CHECK_EVERY_MS * 2)
      expect((await store.findByPushkey('app', 'tok3'))?.selector).toBe('SEL')
      other.run("DELETE FROM registrations WHERE selector = 'SEL'")
      await Bun.sleep(LOOKUP_CHECK_EVERY_MS * 2)
      expect(await store.findByPushkey('app', 'tok3')).toBeUndefined()
      expect(await store.findBySelector('app', 'tok3', 'SEL')).toBeUndefined()
    } finally {
      other.close()
      await store.close()
    }
  })

  test('lookups of different parts never share a remembered answer, whatever characters the parts hold', async () => {
    const store = storeHoldingOneRow('keys.db')
    try {
      expect((await store.findBySelector('app', 'tok', 'SEL'))?.selector).toBe('SEL')
      expect((await store.findByPushkey('app', 'tok'))?.selector).toBe('SEL')
      // Synapse passes pushkeys and app ids as sent: a separator character is just a character.
      expect(await store.findByPushkey('app', 'tok\u0000SEL')).toBeUndefined()
      expect(await store.findByPushkey('app\u0000tok', '')).toBeUndefined()
      expect(await store.findBySelector('app', 'tok\u0000', 'SEL')).toBeUndefined()
      expect(await store.findBySelector('ap', 'p', 'tok')).toBeUndefined()
    } finally {
      await store.close()
    }
  })

  test('a remembered account cannot be altered by the caller it was handed to', async () => {
    const store = storeHoldingOneRow('frozen.db')
    try {
      const first = (await store.findByPushkey('app', 'tok'))!
      expect(() => ((first as { selector: string }).selector = 'X')).toThrow()
      expect((await store.findByPushkey('app', 'tok'))?.selector).toBe('SEL')
    } finally {
      await store.close()
    }
  })
})
