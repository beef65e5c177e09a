/**
 * The token store: what the proxy keeps about each Acrobits account (keyed by selector), and the
 * outbox of pusher calls still owed to the homeserver. Pusher calls are written in the same
 * transaction as the report that causes them, so a crash or a homeserver outage never loses one.
 */
export interface Registration {
  readonly selector: string
  readonly username?: string
  /**
   * Undefined only for a row imported from the Go proxy's table, which never knew the Matrix
   * user: the app's next report fills it in (store/go-import.ts).
   */
  readonly matrixUserId?: string
  readonly tokenMsgs?: string
  readonly appIdMsgs?: string
  readonly tokenCalls?: string
  readonly appIdCalls?: string
  readonly createdAt: number
  readonly updatedAt: number
}

export type RegistrationInput = Omit<Registration, 'createdAt' | 'updatedAt' | 'matrixUserId'> & { readonly matrixUserId: string }

/** One outcome of one notification for one account: the delivery journal (`tokens show`). */
export interface Delivery {
  readonly selector: string
  /** When the outcome was known, ms since the epoch. */
  readonly at: number
  readonly eventId?: string
  readonly outcome: string
  /** HTTP status of the PNM's last answer; undefined when none came (or none was asked). */
  readonly pnmStatus?: number
  /** From the notification's arrival to its outcome. */
  readonly latencyMs: number
  /** Why, when it was not delivered: the PNM's answer or the failure, never message text. */
  readonly detail?: string
}

/** Rows of the delivery journal kept per account; older ones are pruned as new ones arrive. */
export const JOURNAL_ROWS_PER_ACCOUNT = 50

export interface PusherOp {
  readonly action: 'set' | 'delete'
  readonly userId: string
  readonly appId: string
  readonly pushkey: string
  /**
   * The account the call is for (its selector goes into the pusher's data, and the call is queued
   * behind that account's others); the changed account when unset.
   */
  readonly selector?: string
}

export interface PusherJob extends PusherOp {
  readonly id: number
  readonly selector: string
  readonly attempts: number
  readonly nextAttemptAt: number
  readonly lastError?: string
}

/**
 * Another account of the same Matrix user with the same message token (two accounts of one user
 * on one phone share one Synapse pusher), the most recently reported; asked inside the transaction.
 */
export type SharedPusherLookup = (userId: string, appId: string, pushkey: string, exceptSelector: string) => Registration | undefined

/** Decides, from the row before and after a change, which pusher calls it owes. */
export type PusherPlanner = (previous: Registration | undefined, next: Registration | undefined, sharing?: SharedPusherLookup) => PusherOp[]

/**
 * Whether a change may touch the row stored before it (the account's owner, say). Asked inside the
 * transaction, so no other write slips between the decision and the change.
 */
export type ChangeGuard = (previous: Registration) => boolean

export interface SaveOptions {
  guard?: ChangeGuard
  /**
   * Registrations one Matrix user may have; past it the least recently reported of that user's
   * other rows are deleted, with their pusher deletions queued, in the same transaction.
   */
  maxPerUser?: number
}

export interface ChangeResult {
  previous?: Registration
  jobs: PusherJob[]
  /** The guard refused: nothing was written. */
  refused: boolean
  /** Rows deleted to keep the user within maxPerUser; their pusher calls are in `jobs`. */
  evicted: Registration[]
}

/**
 * Every operation answers with a promise, so that an engine reached over the network (PostgreSQL)
 * and the embedded one (SQLite, whose calls complete at once) implement the same interface. The
 * planner and guard passed in still run synchronously, inside the engine's transaction.
 */
export interface TokenStore {
  /** Upserts the row and queues the planned pusher calls, in one transaction. */
  saveRegistration(input: RegistrationInput, now: number, plan: PusherPlanner, options?: SaveOptions): Promise<ChangeResult>
  /** Deletes the row and queues the planned pusher calls, in one transaction. */
  removeRegistration(selector: string, now: number, plan: PusherPlanner, guard?: ChangeGuard): Promise<ChangeResult>
  getRegistration(selector: string): Promise<Registration | undefined>
  listRegistrations(): Promise<Registration[]>
  countRegistrations(): Promise<number>
  /** The most recently updated account whose message token is this pushkey for this app. */
  findByPushkey(appId: string, pushkey: string): Promise<Registration | undefined>
  /** The account `selector` if its message token is this pushkey for this app. */
  findBySelector(appId: string, pushkey: string, selector: string): Promise<Registration | undefined>
  /** Every account whose message token is this pushkey for this app (one phone, several accounts). */
  listByPushkey(appId: string, pushkey: string): Promise<Registration[]>
  /**
   * Appends outcomes to the delivery journal in one transaction, keeping the newest
   * JOURNAL_ROWS_PER_ACCOUNT of each account; outcomes of accounts no longer stored are dropped.
   */
  recordDeliveries(deliveries: readonly Delivery[]): Promise<void>
  /** The account's journal, newest first. */
  deliveries(selector: string): Promise<Delivery[]>
  /**
   * Deliveries the journal holds from `since` on, oldest first, with the message token of the
   * account as stored now: what the duplicate filter of a new process starts from.
   */
  deliveredSince(since: number): Promise<{ selector: string; pushkey: string; eventId: string; at: number }[]>
  /** What the schema upgrades of this opening did that an operator should hear of (an import). */
  migrationNotes(): Promise<string[]>
  /** Forgets a message token the PNM no longer knows; returns the rows changed. */
  forgetPushkey(appId: string, pushkey: string, now: number): Promise<number>
  /** Accounts whose oldest pending job is due and not being worked on. */
  dueSelectors(now: number, limit: number): Promise<string[]>
  /** Claims the oldest job of one selector if it is due and none of its jobs is leased. */
  claimNextJob(selector: string, now: number, leaseMs: number): Promise<PusherJob | undefined>
  completeJob(id: number): Promise<void>
  rescheduleJob(id: number, nextAttemptAt: number, error: string): Promise<void>
  /** Earliest time a pending job becomes due, if any. */
  nextJobDue(): Promise<number | undefined>
  pendingJobs(): Promise<PusherJob[]>
  countPendingJobs(): Promise<number>
  /** A cheap write that tells whether the database accepts writes now. */
  probeWritable(): Promise<void>
  close(): Promise<void>
}

/** The same operations answered at once: what one SQLite connection does under the interface. */
export type SyncTokenStore = {
  [K in keyof TokenStore]: TokenStore[K] extends (...args: infer A) => Promise<infer R> ? (...args: A) => R : never
}
