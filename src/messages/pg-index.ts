/**
 * The message index on PostgreSQL, shared by every instance on the database (Bun.SQL pool of the
 * token store). What SQLite gets from its single writer is made explicit: each write transaction
 * first takes one advisory lock (LOCK_CLASS.ingest) and holds it to its commit, so
 * - a transaction id another instance is applying is seen as done once that one commits (the copy
 *   waits for the lock, then finds the row), never applied twice;
 * - message positions and delivery numbers are handed out in commit order: a cursor that read
 *   delivery n never misses one below n that was still being written.
 * Within the process, writes also take turns, so one write holds one connection at a time and the
 * savepoints of the transaction under way know where to go.
 */
import type { SQL } from 'bun'
import { LOCK_CLASS } from '../store/pg-migrations.ts'
import type { IndexTx, MessageIndex, NewMessage, Room } from './index-store.ts'
import { toDelivery, toJob, toMember, toMessage, toRoom, type Big, type DeliveryJoinRow, type JobRow, type MemberRow, type MessageRow, type RoomRow } from './index-rows.ts'
import { TimeoutError } from '../timeout.ts'

const MESSAGE_COLUMNS = 'e.ord, e.event_id, e.room_id, e.sender, e.ts, e.text, e.author_name, e.edit_of, e.redacted'

/** Errors of the database or of the connection to it, as Bun.SQL raises them. */
/** The database failed or did not answer in time (store/bounded.ts): never the event's fault. */
export const isPostgresFailure = (e: unknown) => e instanceof TimeoutError || String((e as { code?: unknown } | undefined)?.code ?? '').startsWith('ERR_POSTGRES')

/**
 * How long a write waits for the ingestion lock before it fails (a store failure: the transaction
 * answers 503 and Synapse retries). An instance stuck inside a write, its host cut off, must not
 * hold every other instance's feed until its connection is found dead.
 */
export const INGEST_LOCK_TIMEOUT_MS = 20_000

/** The index through the pool `sql` (migrated by openPostgres). Closing the store ends the pool. */
export function createPostgresIndex(sql: SQL, options: { lockTimeoutMs?: number } = {}): MessageIndex {
  const lockTimeout = `${Math.max(1, Math.round(options.lockTimeoutMs ?? INGEST_LOCK_TIMEOUT_MS))}ms`
  const indexTx = (tx: SQL): IndexTx => {
    const getRoom = async (roomId: string) => {
      const [row]: RoomRow[] = await tx`SELECT * FROM mx_rooms WHERE room_id = ${roomId}`
      return row ? toRoom(row) : undefined
    }
    return {
      transactionDone: async (txnId) => ((await tx`SELECT 1 FROM mx_transactions WHERE txn_id = ${txnId}`) as unknown[]).length > 0,
      recordTransaction: async (txnId, now) =>
        void (await tx`INSERT INTO mx_transactions (txn_id, committed_at) VALUES (${txnId}, ${now}) ON CONFLICT (txn_id) DO NOTHING`),
      getMessage: (eventId) => message(tx, eventId),
      isRedacted: async (eventId) => ((await tx`SELECT 1 FROM mx_redacted WHERE event_id = ${eventId}`) as unknown[]).length > 0,
      insertMessage: async (m: NewMessage, now) => {
        const [row]: { ord: Big }[] = await tx`
          INSERT INTO mx_events (event_id, room_id, sender, ts, text, author_name, edit_of, stored_at)
          VALUES (${m.eventId}, ${m.roomId}, ${m.sender}, ${m.ts}, ${m.text}, ${m.authorName}, ${m.editOf ?? null}, ${now})
          ON CONFLICT (event_id) DO NOTHING RETURNING ord`
        return row ? Number(row.ord) : undefined
      },
      redact: async (eventId, now) => {
        await tx`UPDATE mx_events SET redacted = true, text = '' WHERE event_id = ${eventId} OR edit_of = ${eventId}`
        await tx`INSERT INTO mx_redacted (event_id, redacted_at) VALUES (${eventId}, ${now}) ON CONFLICT (event_id) DO NOTHING`
      },
      // The sequence, not max(ord): a position is never given twice, even after the newest messages were pruned.
      lastOrd: async () => {
        const [row]: { o: Big }[] = await tx`SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS o FROM mx_events_ord_seq`
        return Number(row?.o ?? 0)
      },
      getRoom,
      updateRoom: async (roomId, fields, now) => {
        await tx`INSERT INTO mx_rooms (room_id, conversation, updated_at) VALUES (${roomId}, ${roomId}, ${now}) ON CONFLICT (room_id) DO NOTHING`
        const room = { ...(await getRoom(roomId))!, ...fields }
        await tx`
          UPDATE mx_rooms SET kind = ${room.kind ?? null}, is_direct = ${room.isDirect}, name = ${room.name ?? null},
            canonical_alias = ${room.canonicalAlias ?? null}, conversation = ${room.conversation},
            predecessor = ${room.predecessor ?? null}, successor = ${room.successor ?? null}, updated_at = ${now}
          WHERE room_id = ${roomId}`
        return room
      },
      getMember: async (roomId, userId) => {
        const [row]: MemberRow[] = await tx`SELECT * FROM mx_members WHERE room_id = ${roomId} AND user_id = ${userId}`
        return row ? toMember(row) : undefined
      },
      setMember: async (m) =>
        void (await tx`
          INSERT INTO mx_members (room_id, user_id, membership, display_name, since_ord, from_stream, updated_at)
          VALUES (${m.roomId}, ${m.userId}, ${m.membership}, ${m.displayName ?? null}, ${m.sinceOrd}, ${m.fromStream}, ${m.updatedAt})
          ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership,
            display_name = excluded.display_name, since_ord = excluded.since_ord,
            from_stream = excluded.from_stream, updated_at = excluded.updated_at`),
      members: (roomId) => members(tx, roomId),
      isEnrolled: (userId) => isEnrolled(tx, userId),
      enrol: async (userId, now) =>
        (await tx`INSERT INTO mx_enrolled (user_id, enrolled_at) VALUES (${userId}, ${now}) ON CONFLICT (user_id) DO NOTHING`).count > 0,
      markCaughtUp: async (userId, now) => void (await tx`UPDATE mx_enrolled SET caught_up_at = ${now} WHERE user_id = ${userId}`),
      enrolledMembers: async (roomId) =>
        ((await tx`
          SELECT m.user_id FROM mx_members m JOIN mx_enrolled e ON e.user_id = m.user_id
          WHERE m.room_id = ${roomId} AND m.membership IN ('join', 'invite') ORDER BY m.user_id`) as { user_id: string }[]).map((r) => r.user_id),
      deliver: async (userId, eventId, sent, now) => {
        const [row]: { seq: Big }[] = await tx`
          INSERT INTO mx_deliveries (user_id, event_id, ord, sent, created_at)
          SELECT ${userId}, event_id, ord, ${sent}, ${now} FROM mx_events WHERE event_id = ${eventId}
          ON CONFLICT (user_id, event_id) DO NOTHING RETURNING seq`
        return row ? Number(row.seq) : undefined
      },
      messagesSince: async (roomId, afterOrd) =>
        ((await tx`SELECT * FROM mx_events WHERE room_id = ${roomId} AND ord > ${afterOrd} ORDER BY ord`) as MessageRow[]).map(toMessage),
      addressTaken: (userId, address) => conversationOf(tx, userId, address),
      currentAddress: (userId, conversation) => currentAddress(tx, userId, conversation),
      // Replaced, not updated: a re-given address becomes the newest row (its id breaks ties in time).
      assignAddress: async (userId, address, conversation, now) => {
        await tx`DELETE FROM mx_addresses WHERE user_id = ${userId} AND address = ${address}`
        await tx`INSERT INTO mx_addresses (user_id, address, conversation, assigned_at) VALUES (${userId}, ${address}, ${conversation}, ${now})`
      },
      addressHolders: async (conversation) =>
        ((await tx`SELECT DISTINCT user_id FROM mx_addresses WHERE conversation = ${conversation}`) as { user_id: string }[]).map((r) => r.user_id),
      directRooms: (userId, peer) => directRooms(tx, userId, peer),
      queueJob: async (kind, userId, roomId, now) =>
        void (await tx`
          INSERT INTO mx_jobs (kind, user_id, room_id, next_attempt_at, created_at) VALUES (${kind}, ${userId}, ${roomId}, ${now}, ${now})
          ON CONFLICT (kind, user_id, room_id) DO UPDATE SET next_attempt_at = LEAST(mx_jobs.next_attempt_at, excluded.next_attempt_at)`),
    }
  }

  async function message(db: SQL, eventId: string) {
    const [row]: MessageRow[] = await db`SELECT * FROM mx_events WHERE event_id = ${eventId}`
    return row ? toMessage(row) : undefined
  }
  const members = async (db: SQL, roomId: string) =>
    ((await db`SELECT * FROM mx_members WHERE room_id = ${roomId} ORDER BY updated_at, user_id`) as MemberRow[]).map(toMember)
  const isEnrolled = async (db: SQL, userId: string) => ((await db`SELECT 1 FROM mx_enrolled WHERE user_id = ${userId}`) as unknown[]).length > 0
  async function directRooms(db: SQL, userId: string, peer: string) {
    const rows: { room_id: string }[] = await db`
      SELECT r.room_id FROM mx_rooms r
      JOIN mx_members a ON a.room_id = r.room_id AND a.user_id = ${userId}
      JOIN mx_members b ON b.room_id = r.room_id AND b.user_id = ${peer}
      WHERE r.kind = 'direct' OR r.is_direct
      ORDER BY coalesce((SELECT max(e.ord) FROM mx_events e WHERE e.room_id = r.room_id), 0) DESC, r.updated_at DESC`
    return rows.map((r) => r.room_id)
  }
  async function conversationOf(db: SQL, userId: string, address: string) {
    const [row]: { conversation: string }[] = await db`SELECT conversation FROM mx_addresses WHERE user_id = ${userId} AND address = ${address}`
    return row?.conversation
  }
  async function currentAddress(db: SQL, userId: string, conversation: string) {
    const [row]: { address: string }[] = await db`
      SELECT address FROM mx_addresses WHERE user_id = ${userId} AND conversation = ${conversation} ORDER BY assigned_at DESC, id DESC LIMIT 1`
    return row?.address
  }

  // Writes take turns in this process; `current` is the connection of the one under way.
  let queue: Promise<unknown> = Promise.resolve()
  let current: SQL | undefined
  function serial<T>(run: () => Promise<T>): Promise<T> {
    const next = queue.then(run, run)
    queue = next.catch(() => {})
    return next
  }
  /** One write transaction of the index: the ingestion lock first, held until commit or rollback. */
  const locked = <T>(fn: (tx: SQL) => Promise<T>): Promise<T> =>
    sql.begin(async (tx) => {
      await tx`SELECT set_config('lock_timeout', ${lockTimeout}, true)`
      await tx`SELECT pg_advisory_xact_lock(${LOCK_CLASS.ingest}, 0)`
      return fn(tx)
    }) as Promise<T>

  return {
    write<T>(fn: (tx: IndexTx) => Promise<T>): Promise<T> {
      return serial(() =>
        locked(async (tx) => {
          current = tx
          try {
            return await fn(indexTx(tx))
          } finally {
            current = undefined
          }
        }),
      )
    },
    async savepoint<T>(_tx: IndexTx, fn: () => Promise<T>): Promise<T> {
      const tx = current
      if (tx === undefined) throw new Error('savepoint outside a write transaction of the message index')
      // One name for every level: ROLLBACK TO and RELEASE act on the innermost savepoint of that name.
      await tx`SAVEPOINT event`
      let result: T
      try {
        result = await fn()
      } catch (e) {
        // After a database error the transaction accepts only the rollback to the savepoint.
        await tx`ROLLBACK TO SAVEPOINT event`
        await tx`RELEASE SAVEPOINT event`
        throw e
      }
      await tx`RELEASE SAVEPOINT event`
      return result
    },
    message: (eventId) => message(sql, eventId),
    deliverySeq: async (userId, eventId) => {
      const [row]: { seq: Big }[] = await sql`SELECT seq FROM mx_deliveries WHERE user_id = ${userId} AND event_id = ${eventId}`
      return row ? Number(row.seq) : undefined
    },
    directRooms: (userId, peer) => directRooms(sql, userId, peer),
    conversationOf: (userId, address) => conversationOf(sql, userId, address),
    deliveriesAfter: async (userId, sent, afterSeq, limit) =>
      ((await sql`
        SELECT d.seq, d.sent, ${sql.unsafe(MESSAGE_COLUMNS)} FROM mx_deliveries d JOIN mx_events e ON e.ord = d.ord
        WHERE d.user_id = ${userId} AND d.sent = ${sent} AND d.seq > ${afterSeq} AND NOT e.redacted ORDER BY d.seq LIMIT ${limit}`) as DeliveryJoinRow[]).map(
        toDelivery,
      ),
    newestDeliveries: async (userId, sent, sinceTs, limit) =>
      ((await sql`
        SELECT * FROM (
          SELECT d.seq, d.sent, ${sql.unsafe(MESSAGE_COLUMNS)} FROM mx_deliveries d JOIN mx_events e ON e.ord = d.ord
          WHERE d.user_id = ${userId} AND d.sent = ${sent} AND NOT e.redacted AND e.ts >= ${sinceTs} ORDER BY d.seq DESC LIMIT ${limit}
        ) page ORDER BY seq`) as DeliveryJoinRow[]).map(toDelivery),
    deviceCursor: async (userId, device) => {
      const [row]: { received_seq: Big; sent_seq: Big }[] = await sql`
        SELECT received_seq, sent_seq FROM mx_device_cursors WHERE user_id = ${userId} AND device = ${device}`
      return row ? { received: Number(row.received_seq), sent: Number(row.sent_seq) } : undefined
    },
    advanceDeviceCursor: async (userId, device, received, sent, now) =>
      void (await sql`
        INSERT INTO mx_device_cursors (user_id, device, received_seq, sent_seq, updated_at) VALUES (${userId}, ${device}, ${received}, ${sent}, ${now})
        ON CONFLICT (user_id, device) DO UPDATE SET received_seq = GREATEST(mx_device_cursors.received_seq, excluded.received_seq),
          sent_seq = GREATEST(mx_device_cursors.sent_seq, excluded.sent_seq), updated_at = excluded.updated_at`),
    rooms: async (roomIds) => {
      const map = new Map<string, Room>()
      if (roomIds.length === 0) return map
      const rows: RoomRow[] = await sql`SELECT * FROM mx_rooms WHERE room_id IN ${sql([...roomIds])}`
      for (const row of rows) map.set(row.room_id, toRoom(row))
      return map
    },
    members: (roomId) => members(sql, roomId),
    currentAddress: (userId, conversation) => currentAddress(sql, userId, conversation),
    isEnrolled: (userId) => isEnrolled(sql, userId),
    enrolledUsers: async () => ((await sql`SELECT user_id FROM mx_enrolled ORDER BY user_id`) as { user_id: string }[]).map((r) => r.user_id),
    roomsWith: async (userId, membership) =>
      ((await sql`SELECT room_id FROM mx_members WHERE user_id = ${userId} AND membership = ${membership} ORDER BY room_id`) as { room_id: string }[]).map(
        (r) => r.room_id,
      ),
    // One instance gets a due job: the row is locked without waiting, then leased.
    claimJob: async (now, leaseMs) => {
      const [row]: JobRow[] = await sql`
        UPDATE mx_jobs SET lease_until = ${now + leaseMs}
        WHERE id = (SELECT id FROM mx_jobs WHERE next_attempt_at <= ${now} AND lease_until <= ${now}
                    ORDER BY next_attempt_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
          AND lease_until <= ${now}
        RETURNING id, kind, user_id, room_id, attempts`
      return row ? toJob(row) : undefined
    },
    completeJob: async (id) => void (await sql`DELETE FROM mx_jobs WHERE id = ${id}`),
    rescheduleJob: async (id, at, error) =>
      void (await sql`UPDATE mx_jobs SET attempts = attempts + 1, next_attempt_at = ${at}, last_error = ${error}, lease_until = 0 WHERE id = ${id}`),
    nextJobDue: async () => {
      const [row]: { t: Big | null }[] = await sql`SELECT min(GREATEST(next_attempt_at, lease_until)) AS t FROM mx_jobs`
      return row?.t === null || row?.t === undefined ? undefined : Number(row.t)
    },
    pendingJobs: async () => ((await sql`SELECT id, kind, user_id, room_id, attempts FROM mx_jobs ORDER BY id`) as JobRow[]).map(toJob),
    prune: (beforeTs) =>
      serial(() =>
        locked(async (tx) => {
          await tx`DELETE FROM mx_deliveries WHERE event_id IN (SELECT event_id FROM mx_events WHERE ts < ${beforeTs})`
          const messages = (await tx`DELETE FROM mx_events WHERE ts < ${beforeTs}`).count as number
          await tx`DELETE FROM mx_transactions WHERE committed_at < ${beforeTs}`
          await tx`DELETE FROM mx_redacted WHERE redacted_at < ${beforeTs}`
          return { messages }
        }),
      ),
    countMessages: async () => ((await sql`SELECT count(*)::int AS n FROM mx_events`) as { n: number }[])[0]!.n,
    isStoreFailure: isPostgresFailure,
    // No busy handler to keep away from: a write of another connection just waits for its locks.
    inTurn: async (fn) => fn(),
    // The pool belongs to the token store, which ends it.
    close: () => {},
  }
}
