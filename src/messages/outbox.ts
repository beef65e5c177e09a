/**
 * The send outbox: one row per message the proxy sends, written before Synapse is called, with the
 * transaction id (UUIDv7) every retry of that message reuses. Synapse deduplicates /send by path
 * (room and transaction id), so a retry with the row's id and room never makes a second event.
 * Rows hold a keyed digest of (user, to, content type, body), never the body: a repeat of the same
 * message within SEND_DEDUPE_SECONDS finds the row and gets its event id.
 */
import { Database } from 'bun:sqlite'
import type { SQL } from 'bun'
import { migrate } from '../store/migrations.ts'

export type OutboxState = 'pending' | 'sent' | 'failed'

export interface OutboxRow {
  readonly txnId: string
  readonly userId: string
  readonly dedupeKey: string
  readonly roomId?: string
  readonly eventId?: string
  readonly state: OutboxState
  readonly createdAt: number
  /** The last change: a repeat within the window of the last answer counts as a repeat. */
  readonly updatedAt: number
}

export interface OutboxStore {
  /** The newest row of this key changed at or after `since`. */
  recent(dedupeKey: string, since: number): Promise<OutboxRow | undefined>
  create(row: { txnId: string; userId: string; dedupeKey: string; now: number }): Promise<void>
  setRoom(txnId: string, roomId: string, now: number): Promise<void>
  markSent(txnId: string, eventId: string, now: number): Promise<void>
  markFailed(txnId: string, now: number): Promise<void>
  /** Forgets rows older than `before`; Synapse forgets its transaction ids after ~30 minutes. */
  prune(before: number): Promise<number>
}

/**
 * The outbox on its own connection to the service's database (WAL: the token store and the message
 * index use theirs); the table comes from the schema migrations.
 */
export function openSqliteOutbox(
  path: string,
  options: { busyTimeoutMs?: number; inTurn?: <T>(fn: () => T | Promise<T>) => Promise<T> } = {},
): OutboxStore & { close(): void } {
  const db = new Database(path, { create: true, strict: true })
  db.run(`PRAGMA busy_timeout = ${options.busyTimeoutMs ?? 1000}`)
  db.run('PRAGMA journal_mode = WAL')
  db.run('PRAGMA synchronous = NORMAL')
  migrate(db)
  const rows = sqliteOutbox(db)
  // Writes wait for the message index's open transaction to end (MessageIndex.inTurn); reads
  // never wait in WAL mode.
  const turn = options.inTurn ?? (async <T>(fn: () => T | Promise<T>) => fn())
  return {
    recent: rows.recent,
    create: (row) => turn(() => rows.create(row)),
    setRoom: (txnId, roomId, now) => turn(() => rows.setRoom(txnId, roomId, now)),
    markSent: (txnId, eventId, now) => turn(() => rows.markSent(txnId, eventId, now)),
    markFailed: (txnId, now) => turn(() => rows.markFailed(txnId, now)),
    prune: (before) => turn(() => rows.prune(before)),
    close: () => db.close(),
  }
}

/** A row as either engine returns it: PostgreSQL gives BIGINT as a string. */
interface Raw {
  txn_id: string
  user_id: string
  dedupe_key: string
  room_id: string | null
  event_id: string | null
  state: OutboxState
  created_at: number | string
  updated_at: number | string
}

const toOutboxRow = (r: Raw): OutboxRow => ({
  txnId: r.txn_id,
  userId: r.user_id,
  dedupeKey: r.dedupe_key,
  roomId: r.room_id ?? undefined,
  eventId: r.event_id ?? undefined,
  state: r.state,
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
})

/** The outbox on a migrated bun:sqlite database. */
export function sqliteOutbox(db: Database): OutboxStore {
  const recent = db.prepare<Raw, [string, number]>(
    'SELECT * FROM send_outbox WHERE dedupe_key = ? AND updated_at >= ? ORDER BY updated_at DESC, created_at DESC LIMIT 1',
  )
  const insert = db.prepare("INSERT INTO send_outbox (txn_id, user_id, dedupe_key, state, created_at, updated_at) VALUES (?, ?, ?, 'pending', ?, ?)")
  const setRoom = db.prepare('UPDATE send_outbox SET room_id = ?, updated_at = ? WHERE txn_id = ?')
  const sent = db.prepare("UPDATE send_outbox SET state = 'sent', event_id = ?, updated_at = ? WHERE txn_id = ?")
  const failed = db.prepare("UPDATE send_outbox SET state = 'failed', updated_at = ? WHERE txn_id = ? AND state <> 'sent'")
  const prune = db.prepare('DELETE FROM send_outbox WHERE created_at < ?')
  return {
    async recent(key, since) {
      const r = recent.get(key, since)
      return r ? toOutboxRow(r) : undefined
    },
    async create(row) {
      insert.run(row.txnId, row.userId, row.dedupeKey, row.now, row.now)
    },
    async setRoom(txnId, roomId, now) {
      setRoom.run(roomId, now, txnId)
    },
    async markSent(txnId, eventId, now) {
      sent.run(eventId, now, txnId)
    },
    async markFailed(txnId, now) {
      failed.run(now, txnId)
    },
    async prune(before) {
      return prune.run(before).changes
    },
  }
}

/**
 * The outbox on PostgreSQL (the pool every instance shares): a repeat sent to another instance
 * finds the row the first one wrote, and reuses its transaction id.
 */
export function postgresOutbox(sql: SQL): OutboxStore & { close(): void } {
  return {
    // The pool belongs to the token store, which ends it.
    close: () => {},
    async recent(key, since) {
      const [r]: Raw[] = await sql`
        SELECT * FROM send_outbox WHERE dedupe_key = ${key} AND updated_at >= ${since} ORDER BY updated_at DESC, created_at DESC LIMIT 1`
      return r ? toOutboxRow(r) : undefined
    },
    async create(row) {
      await sql`INSERT INTO send_outbox (txn_id, user_id, dedupe_key, state, created_at, updated_at)
                VALUES (${row.txnId}, ${row.userId}, ${row.dedupeKey}, 'pending', ${row.now}, ${row.now})`
    },
    async setRoom(txnId, roomId, now) {
      await sql`UPDATE send_outbox SET room_id = ${roomId}, updated_at = ${now} WHERE txn_id = ${txnId}`
    },
    async markSent(txnId, eventId, now) {
      await sql`UPDATE send_outbox SET state = 'sent', event_id = ${eventId}, updated_at = ${now} WHERE txn_id = ${txnId}`
    },
    async markFailed(txnId, now) {
      await sql`UPDATE send_outbox SET state = 'failed', updated_at = ${now} WHERE txn_id = ${txnId} AND state <> 'sent'`
    },
    async prune(before) {
      return (await sql`DELETE FROM send_outbox WHERE created_at < ${before}`).count as number
    },
  }
}
