/**
 * The PostgreSQL schema, as numbered migrations recorded in schema_migrations. Each runs once; all
 * pending ones run in one transaction under an advisory lock, so that several instances starting
 * together apply them exactly once (the others wait, then find nothing left to do).
 * Never edit a released migration: append a new one. The checksum of each applied migration is
 * kept, and a released one that was edited is refused at start (see migratePostgres).
 */
import type { SQL } from 'bun'

/** Times are milliseconds since the epoch (bigint), as in the SQLite schema. */
export const PG_MIGRATIONS: readonly string[] = [
  `CREATE TABLE registrations (
     selector       TEXT PRIMARY KEY,
     username       TEXT,
     matrix_user_id TEXT NOT NULL,
     token_msgs     TEXT,
     app_id_msgs    TEXT,
     token_calls    TEXT,
     app_id_calls   TEXT,
     created_at     BIGINT NOT NULL,
     updated_at     BIGINT NOT NULL
   );
   -- The pushkey lookup wants the newest row first (findByPushkey), read from the index without a sort.
   CREATE INDEX registrations_pushkey_newest ON registrations (token_msgs, app_id_msgs, updated_at DESC);
   CREATE INDEX registrations_user ON registrations (matrix_user_id, updated_at);
   CREATE TABLE pusher_jobs (
     id              BIGSERIAL PRIMARY KEY,
     selector        TEXT NOT NULL,
     action          TEXT NOT NULL CHECK (action IN ('set', 'delete')),
     user_id         TEXT NOT NULL,
     app_id          TEXT NOT NULL,
     pushkey         TEXT NOT NULL,
     attempts        INTEGER NOT NULL DEFAULT 0,
     next_attempt_at BIGINT NOT NULL,
     lease_until     BIGINT NOT NULL DEFAULT 0,
     last_error      TEXT,
     created_at      BIGINT NOT NULL
   );
   CREATE INDEX pusher_jobs_due ON pusher_jobs (next_attempt_at);
   CREATE INDEX pusher_jobs_selector ON pusher_jobs (selector, id);
   -- One row, written by the readiness probe: a write that proves the database accepts writes.
   CREATE TABLE probe (id INTEGER PRIMARY KEY, at BIGINT NOT NULL);
   -- The duplicate filter every instance shares: one claim per (pushkey, event), taken before the
   -- PNM call ('sending'), kept an hour once delivered.
   CREATE TABLE notify_claims (
     pushkey    TEXT NOT NULL,
     event_id   TEXT NOT NULL,
     state      TEXT NOT NULL CHECK (state IN ('sending', 'delivered')),
     expires_at BIGINT NOT NULL,
     PRIMARY KEY (pushkey, event_id)
   );
   CREATE INDEX notify_claims_expiry ON notify_claims (expires_at);
   -- Password checks, shared by every instance: a row per check under way or failed, keyed by a
   -- hash of the username (and of the username with the client's address group).
   CREATE TABLE auth_attempts (
     id     BIGSERIAL PRIMARY KEY,
     key    TEXT NOT NULL,
     at     BIGINT NOT NULL,
     failed BOOLEAN NOT NULL DEFAULT false
   );
   CREATE INDEX auth_attempts_key ON auth_attempts (key, at);`,
  // Several accounts on one phone. A row without a Matrix user is one imported from the Go proxy's SQLite table (the
  // import itself is SQLite-only); `migrate-db` may bring such rows here. The delivery journal:
  // the last outcomes of each account (`tokens show`).
  `ALTER TABLE registrations ALTER COLUMN matrix_user_id DROP NOT NULL;
   CREATE TABLE deliveries (
     id         BIGSERIAL PRIMARY KEY,
     selector   TEXT NOT NULL,
     at         BIGINT NOT NULL,
     event_id   TEXT,
     outcome    TEXT NOT NULL,
     pnm_status INTEGER,
     latency_ms INTEGER NOT NULL,
     detail     TEXT
   );
   CREATE INDEX deliveries_selector ON deliveries (selector, id);`,
  // The message index and Send Message's outbox, as on SQLite. Writers of the
  // index take LOCK_CLASS.ingest first: positions and delivery numbers are handed out in commit
  // order, so a cursor never passes a delivery that commits late.
  `CREATE TABLE mx_events (
     ord         BIGSERIAL PRIMARY KEY,
     event_id    TEXT NOT NULL UNIQUE,
     room_id     TEXT NOT NULL,
     sender      TEXT NOT NULL,
     ts          BIGINT NOT NULL,
     text        TEXT NOT NULL,
     author_name TEXT NOT NULL,
     edit_of     TEXT,
     redacted    BOOLEAN NOT NULL DEFAULT false,
     stored_at   BIGINT NOT NULL
   );
   CREATE INDEX mx_events_room ON mx_events (room_id, ord);
   CREATE INDEX mx_events_edit_of ON mx_events (edit_of) WHERE edit_of IS NOT NULL;
   CREATE INDEX mx_events_ts ON mx_events (ts);
   CREATE TABLE mx_redacted (event_id TEXT PRIMARY KEY, redacted_at BIGINT NOT NULL);
   CREATE TABLE mx_rooms (
     room_id         TEXT PRIMARY KEY,
     kind            TEXT CHECK (kind IN ('direct', 'group')),
     is_direct       BOOLEAN NOT NULL DEFAULT false,
     name            TEXT,
     canonical_alias TEXT,
     conversation    TEXT NOT NULL,
     predecessor     TEXT,
     successor       TEXT,
     updated_at      BIGINT NOT NULL
   );
   CREATE TABLE mx_members (
     room_id      TEXT NOT NULL,
     user_id      TEXT NOT NULL,
     membership   TEXT NOT NULL,
     display_name TEXT,
     since_ord    BIGINT NOT NULL DEFAULT 0,
     from_stream  BOOLEAN NOT NULL,
     updated_at   BIGINT NOT NULL,
     PRIMARY KEY (room_id, user_id)
   );
   CREATE INDEX mx_members_user ON mx_members (user_id);
   CREATE TABLE mx_enrolled (user_id TEXT PRIMARY KEY, enrolled_at BIGINT NOT NULL, caught_up_at BIGINT);
   -- ord repeats the message's position: a page of a user's list joins its messages by integer key.
   CREATE TABLE mx_deliveries (
     seq        BIGSERIAL PRIMARY KEY,
     user_id    TEXT NOT NULL,
     event_id   TEXT NOT NULL,
     ord        BIGINT NOT NULL,
     sent       BOOLEAN NOT NULL,
     created_at BIGINT NOT NULL,
     UNIQUE (user_id, event_id)
   );
   CREATE INDEX mx_deliveries_list ON mx_deliveries (user_id, sent, seq, ord);
   CREATE INDEX mx_deliveries_event ON mx_deliveries (event_id);
   -- id orders addresses given at the same millisecond (SQLite's rowid).
   CREATE TABLE mx_addresses (
     id           BIGSERIAL NOT NULL,
     user_id      TEXT NOT NULL,
     address      TEXT NOT NULL,
     conversation TEXT NOT NULL,
     assigned_at  BIGINT NOT NULL,
     PRIMARY KEY (user_id, address)
   );
   CREATE INDEX mx_addresses_conversation ON mx_addresses (user_id, conversation, assigned_at);
   CREATE TABLE mx_device_cursors (
     user_id      TEXT NOT NULL,
     device       TEXT NOT NULL,
     received_seq BIGINT NOT NULL DEFAULT 0,
     sent_seq     BIGINT NOT NULL DEFAULT 0,
     updated_at   BIGINT NOT NULL,
     PRIMARY KEY (user_id, device)
   );
   CREATE TABLE mx_transactions (txn_id TEXT PRIMARY KEY, committed_at BIGINT NOT NULL);
   CREATE TABLE mx_jobs (
     id              BIGSERIAL PRIMARY KEY,
     kind            TEXT NOT NULL,
     user_id         TEXT NOT NULL,
     room_id         TEXT NOT NULL DEFAULT '',
     attempts        INTEGER NOT NULL DEFAULT 0,
     next_attempt_at BIGINT NOT NULL,
     lease_until     BIGINT NOT NULL DEFAULT 0,
     last_error      TEXT,
     created_at      BIGINT NOT NULL,
     UNIQUE (kind, user_id, room_id)
   );
   CREATE TABLE send_outbox (
     txn_id     TEXT PRIMARY KEY,
     user_id    TEXT NOT NULL,
     dedupe_key TEXT NOT NULL,
     room_id    TEXT,
     event_id   TEXT,
     state      TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
     created_at BIGINT NOT NULL,
     updated_at BIGINT NOT NULL
   );
   CREATE INDEX send_outbox_key ON send_outbox (dedupe_key, updated_at);
   CREATE INDEX send_outbox_created ON send_outbox (created_at);`,
]

/** Advisory lock keys (pg_advisory_xact_lock(class, key)); the class keeps them apart from other applications'. */
export const LOCK_CLASS = {
  migrations: 0x6d326100,
  selector: 0x6d326101,
  user: 0x6d326102,
  auth: 0x6d326103,
  ingest: 0x6d326104,
} as const

const checksum = (text: string) => new Bun.CryptoHasher('sha256').update(text).digest('hex').slice(0, 16)

export class MigrationError extends Error {}

/** The first applied migration whose text is not this release's any more, if any. */
const editedMigration = (applied: readonly { version: number; checksum: string }[]) =>
  applied.find((row) => row.version <= PG_MIGRATIONS.length && checksum(PG_MIGRATIONS[row.version - 1]!) !== row.checksum)?.version

export const editedMessage = (version: number) => `migration ${version} differs from the one applied to this database: a released migration was edited`

/** Applies what is missing; returns the versions before and after. */
export async function migratePostgres(sql: SQL): Promise<{ from: number; to: number }> {
  return sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${LOCK_CLASS.migrations}, 0)`
    await tx`CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, checksum TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())`
    const applied: { version: number; checksum: string }[] = await tx`SELECT version, checksum FROM schema_migrations ORDER BY version`
    const from = applied.length
    if (from > PG_MIGRATIONS.length) {
      throw new MigrationError(`database schema version ${from} is newer than this release knows (${PG_MIGRATIONS.length}); upgrade matrix2acrobits`)
    }
    const edited = editedMigration(applied)
    if (edited !== undefined) throw new MigrationError(editedMessage(edited))
    for (let version = from; version < PG_MIGRATIONS.length; version++) {
      await tx.unsafe(PG_MIGRATIONS[version]!)
      await tx`INSERT INTO schema_migrations (version, checksum) VALUES (${version + 1}, ${checksum(PG_MIGRATIONS[version]!)})`
    }
    return { from, to: PG_MIGRATIONS.length }
  })
}

/** The versions applied and known, and an edited one, without changing anything (for `check`). */
export async function migrationState(sql: SQL): Promise<{ applied: number; known: number; edited?: number }> {
  const [exists]: { t: string | null }[] = await sql`SELECT to_regclass('schema_migrations')::text AS t`
  if (!exists?.t) return { applied: 0, known: PG_MIGRATIONS.length }
  const applied: { version: number; checksum: string }[] = await sql`SELECT version, checksum FROM schema_migrations ORDER BY version`
  return { applied: applied.length, known: PG_MIGRATIONS.length, edited: editedMigration(applied) }
}
