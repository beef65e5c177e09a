/**
 * The token store: what the proxy keeps about each Acrobits account (keyed by selector), and the
 * outbox of pusher calls still owed to the homeserver. Pusher calls are written in the same
 * transaction as the report that causes them, so a crash or a homeserver outage never loses one.
 */
export interface Registration {
  readonly selector: string
  readonly username?: string
  readonly matrixUserId: string
  readonly tokenMsgs?: string
  readonly appIdMsgs?: string
  readonly tokenCalls?: string
  readonly appIdCalls?: string
  readonly createdAt: number
  readonly updatedAt: number
}

export type RegistrationInput = Omit<Registration, 'createdAt' | 'updatedAt'>

export interface PusherOp {
  readonly action: 'set' | 'delete'
  readonly userId: string
  readonly appId: string
  readonly pushkey: string
}

export interface PusherJob extends PusherOp {
  readonly id: number
  readonly selector: string
  readonly attempts: number
  readonly nextAttemptAt: number
  readonly lastError?: string
}

/** Decides, from the row before and after a change, which pusher calls it owes. */
export type PusherPlanner = (previous: Registration | undefined, next: Registration | undefined) => PusherOp[]

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
