/**
 * The message index on SQLite (bun:sqlite), in the same file as the token store, on its own
 * connection. bun:sqlite is synchronous; the Promise interface is for the PostgreSQL engine
 * (pg-index.ts). A write transaction may span awaits, so writers take turns through one queue.
 */
import { Database } from 'bun:sqlite'
import { migrate } from '../store/migrations.ts'
import type { IndexTx, MessageIndex, NewMessage, Room } from './index-store.ts'
import { toDelivery, toJob, toMember, toMessage, toRoom, type Big, type DeliveryJoinRow, type JobRow, type MemberRow, type MessageRow, type RoomRow } from './index-rows.ts'

export function openSqliteIndex(path: string, options: { busyTimeoutMs?: number } = {}): MessageIndex {
  const db = new Database(path, { create: true, strict: true })
  db.run(`PRAGMA busy_timeout = ${options.busyTimeoutMs ?? 1000}`)
  db.run('PRAGMA journal_mode = WAL')
  db.run('PRAGMA synchronous = NORMAL')
  // 64 MiB of page cache instead of 2: with a million messages the pages a fetch and an ingested
  // event touch (the delivery list, the message rows, the room's members) stay in memory.
  db.run('PRAGMA cache_size = -65536')
  migrate(db)

  const q = {
    txnDone: db.prepare<{ n: number }, [string]>('SELECT count(*) AS n FROM mx_transactions WHERE txn_id = ?'),
    txnRecord: db.prepare<null, [string, number]>('INSERT OR IGNORE INTO mx_transactions (txn_id, committed_at) VALUES (?, ?)'),
    message: db.prepare<MessageRow, [string]>('SELECT * FROM mx_events WHERE event_id = ?'),
    redacted: db.prepare<{ n: number }, [string]>('SELECT count(*) AS n FROM mx_redacted WHERE event_id = ?'),
    insertMessage: db.prepare<{ ord: number }, Record<string, string | number | null>>(`
      INSERT INTO mx_events (event_id, room_id, sender, ts, text, author_name, edit_of, stored_at)
      VALUES ($event_id, $room_id, $sender, $ts, $text, $author_name, $edit_of, $now)
      ON CONFLICT (event_id) DO NOTHING RETURNING ord`),
    redact: db.prepare<null, [string]>("UPDATE mx_events SET redacted = 1, text = '' WHERE event_id = ?1 OR edit_of = ?1"),
    remember: db.prepare<null, [string, number]>('INSERT OR IGNORE INTO mx_redacted (event_id, redacted_at) VALUES (?, ?)'),
    lastOrd: db.prepare<{ o: number | null }, []>('SELECT max(ord) AS o FROM mx_events'),
    // AUTOINCREMENT never reuses a position, even after the newest messages were pruned.
    lastOrdSeq: db.prepare<{ seq: number }, []>("SELECT seq FROM sqlite_sequence WHERE name = 'mx_events'"),
    room: db.prepare<RoomRow, [string]>('SELECT * FROM mx_rooms WHERE room_id = ?'),
    insertRoom: db.prepare<null, [string, string, number]>(
      'INSERT OR IGNORE INTO mx_rooms (room_id, conversation, updated_at) VALUES (?, ?, ?)',
    ),
    updateRoom: db.prepare<null, Record<string, string | number | null>>(`
      UPDATE mx_rooms SET kind = $kind, is_direct = $is_direct, name = $name, canonical_alias = $canonical_alias,
        conversation = $conversation, predecessor = $predecessor, successor = $successor, updated_at = $now
      WHERE room_id = $room_id`),
    member: db.prepare<MemberRow, [string, string]>('SELECT * FROM mx_members WHERE room_id = ? AND user_id = ?'),
    setMember: db.prepare<null, Record<string, string | number | null>>(`
      INSERT INTO mx_members (room_id, user_id, membership, display_name, since_ord, from_stream, updated_at)
      VALUES ($room_id, $user_id, $membership, $display_name, $since_ord, $from_stream, $updated_at)
      ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership,
        display_name = excluded.display_name, since_ord = excluded.since_ord,
        from_stream = excluded.from_stream, updated_at = excluded.updated_at`),
    members: db.prepare<MemberRow, [string]>('SELECT * FROM mx_members WHERE room_id = ? ORDER BY updated_at, user_id'),
    enrolled: db.prepare<{ n: number }, [string]>('SELECT count(*) AS n FROM mx_enrolled WHERE user_id = ?'),
    enrol: db.prepare<null, [string, number]>('INSERT OR IGNORE INTO mx_enrolled (user_id, enrolled_at) VALUES (?, ?)'),
    caughtUp: db.prepare<null, [number, string]>('UPDATE mx_enrolled SET caught_up_at = ? WHERE user_id = ?'),
    enrolledUsers: db.prepare<{ user_id: string }, []>('SELECT user_id FROM mx_enrolled ORDER BY user_id'),
    roomsWith: db.prepare<{ room_id: string }, [string, string]>('SELECT room_id FROM mx_members WHERE user_id = ? AND membership = ? ORDER BY room_id'),
    enrolledMembers: db.prepare<{ user_id: string }, [string]>(`
      SELECT m.user_id FROM mx_members m JOIN mx_enrolled e ON e.user_id = m.user_id
      WHERE m.room_id = ? AND m.membership IN ('join', 'invite') ORDER BY m.user_id`),
    deliver: db.prepare<{ seq: number }, [string, string, number, number]>(`
      INSERT INTO mx_deliveries (user_id, event_id, ord, sent, created_at)
      SELECT ?1, event_id, ord, ?3, ?4 FROM mx_events WHERE event_id = ?2
      ON CONFLICT (user_id, event_id) DO NOTHING RETURNING seq`),
    messagesSince: db.prepare<MessageRow, [string, number]>('SELECT * FROM mx_events WHERE room_id = ? AND ord > ? ORDER BY ord'),
    addressTaken: db.prepare<{ conversation: string }, [string, string]>(
      'SELECT conversation FROM mx_addresses WHERE user_id = ? AND address = ?',
    ),
    currentAddress: db.prepare<{ address: string }, [string, string]>(
      'SELECT address FROM mx_addresses WHERE user_id = ? AND conversation = ? ORDER BY assigned_at DESC, rowid DESC LIMIT 1',
    ),
    // Replaced, not updated: a re-given address becomes the newest row (rowid breaks ties in time).
    assignAddress: db.prepare<null, [string, string, string, number]>(
      'INSERT OR REPLACE INTO mx_addresses (user_id, address, conversation, assigned_at) VALUES (?, ?, ?, ?)',
    ),
    addressHolders: db.prepare<{ user_id: string }, [string]>('SELECT DISTINCT user_id FROM mx_addresses WHERE conversation = ?'),
    queueJob: db.prepare<null, [string, string, string, number]>(`
      INSERT INTO mx_jobs (kind, user_id, room_id, next_attempt_at, created_at) VALUES (?1, ?2, ?3, ?4, ?4)
      ON CONFLICT (kind, user_id, room_id) DO UPDATE SET next_attempt_at = min(next_attempt_at, excluded.next_attempt_at)`),
    deliverySeq: db.prepare<{ seq: number }, [string, string]>('SELECT seq FROM mx_deliveries WHERE user_id = ? AND event_id = ?'),
    // Send Message: the pair's direct chats, the most recently active first.
    directRooms: db.prepare<{ room_id: string }, [string, string]>(`
      SELECT r.room_id FROM mx_rooms r
      JOIN mx_members a ON a.room_id = r.room_id AND a.user_id = ?1
      JOIN mx_members b ON b.room_id = r.room_id AND b.user_id = ?2
      WHERE r.kind = 'direct' OR r.is_direct = 1
      ORDER BY coalesce((SELECT max(e.ord) FROM mx_events e WHERE e.room_id = r.room_id), 0) DESC, r.updated_at DESC`),
    deliveriesAfter: db.prepare<DeliveryJoinRow, [string, number, number, number]>(`
      SELECT d.seq, d.sent, e.* FROM mx_deliveries d JOIN mx_events e ON e.ord = d.ord
      WHERE d.user_id = ? AND d.sent = ? AND d.seq > ? AND e.redacted = 0 ORDER BY d.seq LIMIT ?`),
    newestDeliveries: db.prepare<DeliveryJoinRow, [string, number, number, number]>(`
      SELECT * FROM (
        SELECT d.seq, d.sent, e.* FROM mx_deliveries d JOIN mx_events e ON e.ord = d.ord
        WHERE d.user_id = ? AND d.sent = ? AND e.redacted = 0 AND e.ts >= ? ORDER BY d.seq DESC LIMIT ?
      ) ORDER BY seq`),
    deviceCursor: db.prepare<{ received_seq: number; sent_seq: number }, [string, string]>(
      'SELECT received_seq, sent_seq FROM mx_device_cursors WHERE user_id = ? AND device = ?',
    ),
    advanceCursor: db.prepare<null, [string, string, number, number, number]>(`
      INSERT INTO mx_device_cursors (user_id, device, received_seq, sent_seq, updated_at) VALUES (?, ?, ?, ?, ?)
      ON CONFLICT (user_id, device) DO UPDATE SET received_seq = max(received_seq, excluded.received_seq),
        sent_seq = max(sent_seq, excluded.sent_seq), updated_at = excluded.updated_at`),
    claimable: db.prepare<JobRow, [number]>(
      'SELECT id, kind, user_id, room_id, attempts FROM mx_jobs WHERE next_attempt_at <= ?1 AND lease_until <= ?1 ORDER BY next_attempt_at, id LIMIT 1',
    ),
    lease: db.prepare<null, [number, number]>('UPDATE mx_jobs SET lease_until = ? WHERE id = ?'),
    completeJob: db.prepare<null, [number]>('DELETE FROM mx_jobs WHERE id = ?'),
    rescheduleJob: db.prepare<null, [number, string, number]>(
      'UPDATE mx_jobs SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, lease_until = 0 WHERE id = ?',
    ),
    nextJobDue: db.prepare<{ t: number | null }, []>('SELECT min(max(next_attempt_at, lease_until)) AS t FROM mx_jobs'),
    pendingJobs: db.prepare<JobRow, []>('SELECT id, kind, user_id, room_id, attempts FROM mx_jobs ORDER BY id'),
    pruneDeliveries: db.prepare<null, [number]>(
      'DELETE FROM mx_deliveries WHERE event_id IN (SELECT event_id FROM mx_events WHERE ts < ?)',
    ),
    pruneMessages: db.prepare<null, [number]>('DELETE FROM mx_events WHERE ts < ?'),
    pruneTxns: db.prepare<null, [number]>('DELETE FROM mx_transactions WHERE committed_at < ?'),
    pruneRedacted: db.prepare<null, [number]>('DELETE FROM mx_redacted WHERE redacted_at < ?'),
    countMessages: db.prepare<{ n: number }, []>('SELECT count(*) AS n FROM mx_events'),
    begin: db.prepare('BEGIN IMMEDIATE'),
    commit: db.prepare('COMMIT'),
    savepoint: db.prepare('SAVEPOINT event'),
    release: db.prepare('RELEASE event'),
    rollbackTo: db.prepare('ROLLBACK TO event'),
  }

  const getRoom = (roomId: string) => {
    const row = q.room.get(roomId)
    return row ? toRoom(row) : undefined
  }

  const tx: IndexTx = {
    transactionDone: async (txnId) => q.txnDone.get(txnId)!.n > 0,
    recordTransaction: async (txnId, now) => void q.txnRecord.run(txnId, now),
    getMessage: async (eventId) => {
      const row = q.message.get(eventId)
      return row ? toMessage(row) : undefined
    },
    isRedacted: async (eventId) => q.redacted.get(eventId)!.n > 0,
    insertMessage: async (m: NewMessage, now) =>
      q.insertMessage.get({
        event_id: m.eventId,
        room_id: m.roomId,
        sender: m.sender,
        ts: m.ts,
        text: m.text,
        author_name: m.authorName,
        edit_of: m.editOf ?? null,
        now,
      })?.ord,
    redact: async (eventId, now) => {
      q.redact.run(eventId)
      q.remember.run(eventId, now)
    },
    lastOrd: async () => q.lastOrdSeq.get()?.seq ?? q.lastOrd.get()?.o ?? 0,
    getRoom: async (roomId) => getRoom(roomId),
    updateRoom: async (roomId, fields, now) => {
      q.insertRoom.run(roomId, roomId, now)
      const room = { ...getRoom(roomId)!, ...fields }
      q.updateRoom.run({
        room_id: roomId,
        kind: room.kind ?? null,
        is_direct: room.isDirect ? 1 : 0,
        name: room.name ?? null,
        canonical_alias: room.canonicalAlias ?? null,
        conversation: room.conversation,
        predecessor: room.predecessor ?? null,
        successor: room.successor ?? null,
        now,
      })
      return room
    },
    getMember: async (roomId, userId) => {
      const row = q.member.get(roomId, userId)
      return row ? toMember(row) : undefined
    },
    setMember: async (m) =>
      void q.setMember.run({
        room_id: m.roomId,
        user_id: m.userId,
        membership: m.membership,
        display_name: m.displayName ?? null,
        since_ord: m.sinceOrd,
        from_stream: m.fromStream ? 1 : 0,
        updated_at: m.updatedAt,
      }),
    members: async (roomId) => q.members.all(roomId).map(toMember),
    isEnrolled: async (userId) => q.enrolled.get(userId)!.n > 0,
    enrol: async (userId, now) => q.enrol.run(userId, now).changes > 0,
    markCaughtUp: async (userId, now) => void q.caughtUp.run(now, userId),
    enrolledMembers: async (roomId) => q.enrolledMembers.all(roomId).map((r) => r.user_id),
    deliver: async (userId, eventId, sent, now) => q.deliver.get(userId, eventId, sent ? 1 : 0, now)?.seq,
    messagesSince: async (roomId, afterOrd) => q.messagesSince.all(roomId, afterOrd).map(toMessage),
    addressTaken: async (userId, address) => q.addressTaken.get(userId, address)?.conversation,
    currentAddress: async (userId, conversation) => q.currentAddress.get(userId, conversation)?.address,
    assignAddress: async (userId, address, conversation, now) => void q.assignAddress.run(userId, address, conversation, now),
    addressHolders: async (conversation) => q.addressHolders.all(conversation).map((r) => r.user_id),
    directRooms: async (userId, peer) => q.directRooms.all(userId, peer).map((r) => r.room_id),
    queueJob: async (kind, userId, roomId, now) => void q.queueJob.run(kind, userId, roomId, now),
  }

  // Writers take turns: a transaction stays open across the awaits of its function, and a write
  // outside it must not land inside it.
  let queue: Promise<unknown> = Promise.resolve()
  function serial<T>(run: () => T | Promise<T>): Promise<T> {
    const next = queue.then(run, run)
    queue = next.catch(() => {})
    return next
  }

  return {
    inTurn: serial,
    write<T>(fn: (tx: IndexTx) => Promise<T>): Promise<T> {
      return serial(async () => {
        q.begin.run()
        try {
          const result = await fn(tx)
          q.commit.run()
          return result
        } catch (e) {
          if (db.inTransaction) db.run('ROLLBACK')
          throw e
        }
      })
    },
    async savepoint<T>(_tx: IndexTx, fn: () => Promise<T>): Promise<T> {
      // One name for every level: ROLLBACK TO and RELEASE act on the innermost savepoint of that name.
      q.savepoint.run()
      try {
        const result = await fn()
        q.release.run()
        return result
      } catch (e) {
        if (db.inTransaction) {
          q.rollbackTo.run()
          q.release.run()
        }
        throw e
      }
    },
    message: tx.getMessage,
    deliverySeq: async (userId, eventId) => q.deliverySeq.get(userId, eventId)?.seq,
    directRooms: tx.directRooms,
    conversationOf: tx.addressTaken,
    deliveriesAfter: async (userId, sent, afterSeq, limit) => q.deliveriesAfter.all(userId, sent ? 1 : 0, afterSeq, limit).map(toDelivery),
    newestDeliveries: async (userId, sent, sinceTs, limit) => q.newestDeliveries.all(userId, sent ? 1 : 0, sinceTs, limit).map(toDelivery),
    deviceCursor: async (userId, device) => {
      const row = q.deviceCursor.get(userId, device)
      return row ? { received: row.received_seq, sent: row.sent_seq } : undefined
    },
    advanceDeviceCursor: (userId, device, received, sent, now) => serial(() => void q.advanceCursor.run(userId, device, received, sent, now)),
    rooms: async (roomIds) => {
      const map = new Map<string, Room>()
      for (const id of roomIds) {
        const room = getRoom(id)
        if (room) map.set(id, room)
      }
      return map
    },
    members: tx.members,
    currentAddress: tx.currentAddress,
    isEnrolled: tx.isEnrolled,
    enrolledUsers: async () => q.enrolledUsers.all().map((r) => r.user_id),
    roomsWith: async (userId, membership) => q.roomsWith.all(userId, membership).map((r) => r.room_id),
    claimJob: (now, leaseMs) =>
      serial(() => {
        const row = db.transaction(() => {
          const job = q.claimable.get(now)
          if (job) q.lease.run(now + leaseMs, Number(job.id))
          return job
        }).immediate()
        return row ? toJob(row) : undefined
      }),
    completeJob: (id) => serial(() => void q.completeJob.run(id)),
    rescheduleJob: (id, at, error) => serial(() => void q.rescheduleJob.run(at, error, id)),
    nextJobDue: async () => q.nextJobDue.get()!.t ?? undefined,
    pendingJobs: async () => q.pendingJobs.all().map(toJob),
    prune: (beforeTs) => serial(() => {
      const messages = db.transaction(() => {
        q.pruneDeliveries.run(beforeTs)
        const n = q.pruneMessages.run(beforeTs).changes
        q.pruneTxns.run(beforeTs)
        q.pruneRedacted.run(beforeTs)
        return n
      }).immediate()
      return { messages }
    }),
    countMessages: async () => q.countMessages.get()!.n,
    isStoreFailure: (e) => String((e as { code?: unknown } | undefined)?.code ?? '').startsWith('SQLITE'),
    close: () => db.close(true),
  }
}
