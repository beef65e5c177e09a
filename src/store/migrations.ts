/**
 * Schema upgrades, in order. The database records how many have run in PRAGMA user_version;
 * each runs once, in its own transaction. Never edit a released migration: append a new one.
 */
import type { Database } from 'bun:sqlite'
import { importGoPushTokens } from './go-import.ts'
import { JOURNAL_ROWS_PER_ACCOUNT } from './types.ts'

/** A migration may return a sentence for the operator (logged at start). */
export const MIGRATIONS: ReadonlyArray<(db: Database) => void | string> = [
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
  // The message index: what the appservice feed brings in, and what each user is shown.
  (db) => {
    // Message events only (state is folded into rooms and members); `ord` is the order of arrival.
    db.run(`CREATE TABLE mx_events (
      ord         INTEGER PRIMARY KEY AUTOINCREMENT,
      event_id    TEXT NOT NULL UNIQUE,
      room_id     TEXT NOT NULL,
      sender      TEXT NOT NULL,
      ts          INTEGER NOT NULL,
      text        TEXT NOT NULL,
      author_name TEXT NOT NULL,
      edit_of     TEXT,
      redacted    INTEGER NOT NULL DEFAULT 0,
      stored_at   INTEGER NOT NULL
    )`)
    db.run('CREATE INDEX mx_events_room ON mx_events (room_id, ord)')
    db.run('CREATE INDEX mx_events_edit_of ON mx_events (edit_of) WHERE edit_of IS NOT NULL')
    db.run('CREATE INDEX mx_events_ts ON mx_events (ts)')
    db.run('CREATE TABLE mx_redacted (event_id TEXT PRIMARY KEY, redacted_at INTEGER NOT NULL)')
    db.run(`CREATE TABLE mx_rooms (
      room_id         TEXT PRIMARY KEY,
      kind            TEXT CHECK (kind IN ('direct', 'group')),
      is_direct       INTEGER NOT NULL DEFAULT 0,
      name            TEXT,
      canonical_alias TEXT,
      conversation    TEXT NOT NULL,
      predecessor     TEXT,
      successor       TEXT,
      updated_at      INTEGER NOT NULL
    )`)
    db.run(`CREATE TABLE mx_members (
      room_id      TEXT NOT NULL,
      user_id      TEXT NOT NULL,
      membership   TEXT NOT NULL,
      display_name TEXT,
      since_ord    INTEGER NOT NULL DEFAULT 0,
      from_stream  INTEGER NOT NULL,
      updated_at   INTEGER NOT NULL,
      PRIMARY KEY (room_id, user_id)
    ) WITHOUT ROWID`)
    db.run('CREATE INDEX mx_members_user ON mx_members (user_id)')
    db.run('CREATE TABLE mx_enrolled (user_id TEXT PRIMARY KEY, enrolled_at INTEGER NOT NULL, caught_up_at INTEGER)')
    // `ord` repeats the message's position: a page of a user's list is read from the covering
    // index and joined to its messages by integer key, whatever the size of the index.
    db.run(`CREATE TABLE mx_deliveries (
      seq        INTEGER PRIMARY KEY AUTOINCREMENT,
      user_id    TEXT NOT NULL,
      event_id   TEXT NOT NULL,
      ord        INTEGER NOT NULL,
      sent       INTEGER NOT NULL,
      created_at INTEGER NOT NULL,
      UNIQUE (user_id, event_id)
    )`)
    db.run('CREATE INDEX mx_deliveries_list ON mx_deliveries (user_id, sent, seq, ord)')
    db.run('CREATE INDEX mx_deliveries_event ON mx_deliveries (event_id)')
    db.run(`CREATE TABLE mx_addresses (
      user_id      TEXT NOT NULL,
      address      TEXT NOT NULL,
      conversation TEXT NOT NULL,
      assigned_at  INTEGER NOT NULL,
      PRIMARY KEY (user_id, address)
    )`)
    db.run('CREATE INDEX mx_addresses_conversation ON mx_addresses (user_id, conversation, assigned_at)')
    db.run(`CREATE TABLE mx_device_cursors (
      user_id      TEXT NOT NULL,
      device       TEXT NOT NULL,
      received_seq INTEGER NOT NULL DEFAULT 0,
      sent_seq     INTEGER NOT NULL DEFAULT 0,
      updated_at   INTEGER NOT NULL,
      PRIMARY KEY (user_id, device)
    ) WITHOUT ROWID`)
    db.run('CREATE TABLE mx_transactions (txn_id TEXT PRIMARY KEY, committed_at INTEGER NOT NULL)')
    db.run(`CREATE TABLE mx_jobs (
      id              INTEGER PRIMARY KEY AUTOINCREMENT,
      kind            TEXT NOT NULL,
      user_id         TEXT NOT NULL,
      room_id         TEXT NOT NULL DEFAULT '',
      attempts        INTEGER NOT NULL DEFAULT 0,
      next_attempt_at INTEGER NOT NULL,
      lease_until     INTEGER NOT NULL DEFAULT 0,
      last_error      TEXT,
      created_at      INTEGER NOT NULL,
      UNIQUE (kind, user_id, room_id)
    )`)
  },
  // Send Message's outbox: one row per message, written before Synapse is called.
  (db) => {
    db.run(`CREATE TABLE send_outbox (
      txn_id     TEXT PRIMARY KEY,
      user_id    TEXT NOT NULL,
      dedupe_key TEXT NOT NULL,
      room_id    TEXT,
      event_id   TEXT,
      state      TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
      created_at INTEGER NOT NULL,
      updated_at INTEGER NOT NULL
    )`)
    db.run('CREATE INDEX send_outbox_key ON send_outbox (dedupe_key, updated_at)')
    db.run('CREATE INDEX send_outbox_created ON send_outbox (created_at)')
  },
  // Several accounts on one phone, the delivery journal, the Go proxy's table.
  (db) => {
    // matrix_user_id may be NULL: rows imported from the Go proxy (below) have no Matrix user
    // until the app reports again. SQLite cannot drop a NOT NULL: the table is copied.
    db.run(`CREATE TABLE registrations_new (
      selector       TEXT PRIMARY KEY,
      username       TEXT,
      matrix_user_id TEXT,
      token_msgs     TEXT,
      app_id_msgs    TEXT,
      token_calls    TEXT,
      app_id_calls   TEXT,
      created_at     INTEGER NOT NULL,
      updated_at     INTEGER NOT NULL
    )`)
    db.run('INSERT INTO registrations_new SELECT selector, username, matrix_user_id, token_msgs, app_id_msgs, token_calls, app_id_calls, created_at, updated_at FROM registrations')
    db.run('DROP TABLE registrations')
    db.run('ALTER TABLE registrations_new RENAME TO registrations')
    db.run('CREATE INDEX registrations_pushkey_newest ON registrations (token_msgs, app_id_msgs, updated_at DESC)')
    db.run('CREATE INDEX registrations_user ON registrations (matrix_user_id, updated_at)')
    // The delivery journal: the last outcomes of each account (`tokens show`).
    db.run(`CREATE TABLE deliveries (
      id          INTEGER PRIMARY KEY AUTOINCREMENT,
      selector    TEXT NOT NULL,
      at          INTEGER NOT NULL,
      event_id    TEXT,
      outcome     TEXT NOT NULL,
      pnm_status  INTEGER,
      latency_ms  INTEGER NOT NULL,
      detail      TEXT
    )`)
    db.run('CREATE INDEX deliveries_selector ON deliveries (selector, id)')
    // The Go proxy's database (PUSH_TOKEN_DB_PATH pointing at it): its rows, once.
    const imported = importGoPushTokens(db)
    if (imported !== undefined) {
      return `imported ${imported.imported} of ${imported.found} rows of the Go proxy's push_tokens table (left unchanged); they have no Matrix user until the app reports again`
    }
  },
  // The delivery journal as a ring of JOURNAL_ROWS_PER_ACCOUNT slots per account, stored together
  // (WITHOUT ROWID, keyed by selector first): a new outcome overwrites the account's oldest slot in
  // place. Rows appended in time order and pruned per account touched a different page for nearly
  // every row, and each second's write of a busy gateway stalled its event loop for 50-170 ms.
  (db) => {
    db.run(`CREATE TABLE deliveries_ring (
      selector    TEXT NOT NULL,
      slot        INTEGER NOT NULL,
      seq         INTEGER NOT NULL,
      at          INTEGER NOT NULL,
      event_id    TEXT,
      outcome     TEXT NOT NULL,
      pnm_status  INTEGER,
      latency_ms  INTEGER NOT NULL,
      detail      TEXT,
      PRIMARY KEY (selector, slot)
    ) WITHOUT ROWID`)
    // The newest JOURNAL_ROWS_PER_ACCOUNT of each account, numbered oldest first.
    db.run(`INSERT INTO deliveries_ring (selector, slot, seq, at, event_id, outcome, pnm_status, latency_ms, detail)
      SELECT selector, seq % ${JOURNAL_ROWS_PER_ACCOUNT}, seq, at, event_id, outcome, pnm_status, latency_ms, detail FROM (
        SELECT *, row_number() OVER (PARTITION BY selector ORDER BY id) AS seq,
                  row_number() OVER (PARTITION BY selector ORDER BY id DESC) AS age
        FROM deliveries)
      WHERE age <= ${JOURNAL_ROWS_PER_ACCOUNT}`)
    db.run('DROP TABLE deliveries')
    db.run('ALTER TABLE deliveries_ring RENAME TO deliveries')
  },
]

export function migrate(db: Database): { from: number; to: number; notes: string[] } {
  const from = (db.query('PRAGMA user_version').get() as { user_version: number }).user_version
  if (from > MIGRATIONS.length) {
    throw new Error(`database schema version ${from} is newer than this release knows (${MIGRATIONS.length}); upgrade matrix2acrobits`)
  }
  const notes: string[] = []
  for (let version = from; version < MIGRATIONS.length; version++) {
    db.transaction(() => {
      const note = MIGRATIONS[version]!(db)
      if (typeof note === 'string') notes.push(note)
      db.run(`PRAGMA user_version = ${version + 1}`)
    }).immediate()
  }
  return { from, to: MIGRATIONS.length, notes }
}
