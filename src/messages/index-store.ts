/**
 * The message index's storage interface: what the appservice feed writes and what Fetch Messages
 * reads. Every method returns a Promise, even on SQLite, so a PostgreSQL engine can sit behind the
 * same interface. The rules (who gets which delivery, edits, redactions) live in ingest.ts and
 * fetch.ts, above this interface; an engine only stores and finds rows.
 */

export type Membership = 'join' | 'invite' | 'leave' | 'ban' | 'knock'
export type RoomKind = 'direct' | 'group'

export interface StoredMessage {
  readonly ord: number
  readonly eventId: string
  readonly roomId: string
  readonly sender: string
  readonly ts: number
  readonly text: string
  readonly authorName: string
  readonly editOf?: string
  readonly redacted: boolean
}

export type NewMessage = Omit<StoredMessage, 'ord' | 'redacted'>

export interface Room {
  readonly roomId: string
  readonly kind?: RoomKind
  /** An is_direct invite or an m.direct entry named this room. */
  readonly isDirect: boolean
  readonly name?: string
  readonly canonicalAlias?: string
  /** The room whose address this room keeps (itself, or the first room before upgrades). */
  readonly conversation: string
  readonly predecessor?: string
  readonly successor?: string
}

export interface Member {
  readonly roomId: string
  readonly userId: string
  readonly membership: Membership
  readonly displayName?: string
  /** Messages stored after this position are the member's since their invite (or join). */
  readonly sinceOrd: number
  /** Written by a stream event (true) or by a catch-up snapshot (false). */
  readonly fromStream: boolean
  readonly updatedAt: number
}

/** One item of a user's list, with what rendering it needs. */
export interface DeliveryRow {
  readonly seq: number
  readonly sent: boolean
  readonly message: StoredMessage
}

export type JobKind = 'catchup' | 'autojoin' | 'follow'

export interface Job {
  readonly id: number
  readonly kind: JobKind
  readonly userId: string
  /** The room of an auto-join or a tombstone follow; '' for a catch-up. */
  readonly roomId: string
  readonly attempts: number
}

/** What one write transaction may do; everything it does commits together or not at all. */
export interface IndexTx {
  transactionDone(txnId: string): Promise<boolean>
  recordTransaction(txnId: string, now: number): Promise<void>

  getMessage(eventId: string): Promise<StoredMessage | undefined>
  isRedacted(eventId: string): Promise<boolean>
  /** Stores a message once; returns its position, or undefined when the event id was already stored. */
  insertMessage(message: NewMessage, now: number): Promise<number | undefined>
  /** Hides the message and every edit of it, forgets their text, remembers the id for good. */
  redact(eventId: string, now: number): Promise<void>
  /** Position of the newest stored message (0 when none). */
  lastOrd(): Promise<number>

  getRoom(roomId: string): Promise<Room | undefined>
  /** Creates the room row when missing, then applies the given fields. */
  updateRoom(roomId: string, fields: Partial<Omit<Room, 'roomId'>>, now: number): Promise<Room>

  getMember(roomId: string, userId: string): Promise<Member | undefined>
  setMember(member: Member): Promise<void>
  members(roomId: string): Promise<Member[]>

  isEnrolled(userId: string): Promise<boolean>
  /** Enrols the user; true when they were not enrolled before. */
  enrol(userId: string, now: number): Promise<boolean>
  markCaughtUp(userId: string, now: number): Promise<void>
  /** Enrolled users who are joined or invited in the room. */
  enrolledMembers(roomId: string): Promise<string[]>

  /** Creates the delivery unless the user has it already; returns its sequence number if new. */
  deliver(userId: string, eventId: string, sent: boolean, now: number): Promise<number | undefined>
  /** Event ids of the room's messages stored after `afterOrd`, oldest first. */
  messagesSince(roomId: string, afterOrd: number): Promise<StoredMessage[]>

  /** The user's addresses for conversations (every one ever given, newest last per conversation). */
  addressTaken(userId: string, address: string): Promise<string | undefined>
  currentAddress(userId: string, conversation: string): Promise<string | undefined>
  assignAddress(userId: string, address: string, conversation: string, now: number): Promise<void>
  /** Users who hold an address for this conversation. */
  addressHolders(conversation: string): Promise<string[]>
  /** Rooms known as direct chats with both users as members, most recently active first. */
  directRooms(userId: string, peer: string): Promise<string[]>

  /** Queues a job once per (kind, user, room); a queued one is made due now. */
  queueJob(kind: JobKind, userId: string, roomId: string, now: number): Promise<void>
}

export interface MessageIndex {
  /** Runs `fn` in one write transaction; a throw rolls back everything it did. */
  write<T>(fn: (tx: IndexTx) => Promise<T>): Promise<T>
  /**
   * Runs `fn` inside a savepoint of the current write transaction: when it throws, only its own
   * writes are undone (one poison event must not undo its transaction's others).
   */
  savepoint<T>(tx: IndexTx, fn: () => Promise<T>): Promise<T>

  /** A stored message by event id. */
  message(eventId: string): Promise<StoredMessage | undefined>
  /** The user's delivery with this event id, if any (redacted or not). */
  deliverySeq(userId: string, eventId: string): Promise<number | undefined>
  /** Send Message: rooms known as direct chats with both users as members, most recently active first. */
  directRooms(userId: string, peer: string): Promise<string[]>
  /** Send Message: the conversation a user's (group) address names. */
  conversationOf(userId: string, address: string): Promise<string | undefined>
  /** The user's visible deliveries of one list after `afterSeq`, oldest first. */
  deliveriesAfter(userId: string, sent: boolean, afterSeq: number, limit: number): Promise<DeliveryRow[]>
  /** The newest `limit` visible deliveries of one list whose message is not older than `sinceTs`, oldest first. */
  newestDeliveries(userId: string, sent: boolean, sinceTs: number, limit: number): Promise<DeliveryRow[]>
  deviceCursor(userId: string, device: string): Promise<{ received: number; sent: number } | undefined>
  /** Moves a device's cursors forward (never back). */
  advanceDeviceCursor(userId: string, device: string, received: number, sent: number, now: number): Promise<void>
  /** For rendering: rooms and members by id. */
  rooms(roomIds: readonly string[]): Promise<Map<string, Room>>
  members(roomId: string): Promise<Member[]>
  currentAddress(userId: string, conversation: string): Promise<string | undefined>

  isEnrolled(userId: string): Promise<boolean>
  enrolledUsers(): Promise<string[]>
  /** Rooms where the stream last saw this membership of the user. */
  roomsWith(userId: string, membership: Membership): Promise<string[]>

  /** The oldest due job not leased by another worker, leased for `leaseMs`. */
  claimJob(now: number, leaseMs: number): Promise<Job | undefined>
  completeJob(id: number): Promise<void>
  rescheduleJob(id: number, nextAttemptAt: number, error: string): Promise<void>
  nextJobDue(): Promise<number | undefined>
  pendingJobs(): Promise<Job[]>

  /** Drops messages older than `beforeTs`, their deliveries, and transaction ids older than it. */
  prune(beforeTs: number): Promise<{ messages: number }>
  countMessages(): Promise<number>
  /** The error came from the database (a retry may succeed), not from the data being applied. */
  isStoreFailure(e: unknown): boolean
  /**
   * Runs `fn` between write transactions, never during one. A write transaction stays open across
   * awaits; another connection to the same SQLite file writing meanwhile would wait in SQLite's
   * synchronous busy handler (freezing the process, then failing). The send outbox writes in turn.
   */
  inTurn<T>(fn: () => T | Promise<T>): Promise<T>
  close(): void
}
