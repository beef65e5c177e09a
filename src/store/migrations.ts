/**
 * Schema upgrades, in order. The database records how many have run in PRAGMA user_version;
 * each runs once, in its own transaction. Never edit a released migration: append a new one.
 */
import type { Database } from 'bun:sqlite'

export const MIGRATIONS: ReadonlyArray<(db: Database) => void> = [
  (db) => {
    db.run(`CREATE TABLE registrations (
      selector       TEXT PRIMARY KEY,
      username       TEXT,
      matrix_user_id TEXT NOT NULL,
      token_msgs     TEXT,
      app_id_msgs    TEXT,
      token_calls    TEXT,
      app_id_calls   TEXT,
      created_at     INTEGER NOT NULL,
      updated_at     INTEGER NOT NULL
    )`)
    // Every notification looks its pushkey up: this index keeps that independent of the table size.
    db.run('CREATE INDEX registrations_token_msgs ON registrations (token_msgs, app_id_msgs)')
    db.run(`CREATE TABLE pusher_jobs (
      id              INTEGER PRIMARY KEY AUTOINCREMENT,
      selector        TEXT NOT NULL,
      action          TEXT NOT NULL CHECK (action IN ('set', 'delete')),
      user_id         TEXT NOT NULL,
      app_id          TEXT NOT NULL,
      pushkey         TEXT NOT NULL,
      attempts        INTEGER NOT NULL DEFAULT 0,
      next_attempt_at INTEGER NOT NULL,
      lease_until     INTEGER NOT NULL DEFAULT 0,
      last_error      TEXT,
      created_at      INTEGER NOT NULL
    )`)
    db.run('CREATE INDEX pusher_jobs_due ON pusher_jobs (next_attempt_at)')
    db.run('CREATE INDEX pusher_jobs_selector ON pusher_jobs (selector, id)')
  },
  (db) => {
    // MAX_DEVICES_PER_USER counts a user's rows and evicts the least recently reported one.
    db.run('CREATE INDEX registrations_user ON registrations (matrix_user_id, updated_at)')
  },
  (db) => {
    // The pushkey lookup wants the newest row: with updated_at in the index it is the first entry,
    // read without a sort (the sorter tripled the cost of the lookup every notification makes).
    db.run('CREATE INDEX registrations_pushkey_newest ON registrations (token_msgs, app_id_msgs, updated_at DESC)')
    db.run('DROP INDEX registrations_token_msgs')
  },
]

export function migrate(db: Database): { from: number; to: number } {
  const from = (db.query('PRAGMA user_version').get() as { user_version: number }).user_version
  if (from > MIGRATIONS.length) {
    throw new Error(`database schema version ${from} is newer than this release knows (${MIGRATIONS.length}); upgrade matrix2acrobits`)
  }
  for (let version = from; version < MIGRATIONS.length; version++) {
    db.transaction(() => {
      MIGRATIONS[version]!(db)
      db.run(`PRAGMA user_version = ${version + 1}`)
    }).immediate()
  }
  return { from, to: MIGRATIONS.length }
}
