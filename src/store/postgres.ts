/**
 * The token store on PostgreSQL (Bun.SQL, a connection pool), shared by several instances of the
 * service. What SQLite gets from its single writer is made explicit here: a change to an account
 * holds an advisory lock on its selector (and on its user, whose other rows it may evict), and a
 * pusher job is claimed by one instance with FOR UPDATE SKIP LOCKED plus a lease that lets any
 * other instance take it over once it runs out.
 */
import { SQL } from 'bun'
import { redactPassword } from '../secrets.ts'
import { LOCK_CLASS, migratePostgres } from './pg-migrations.ts'
import type { ChangeResult, PusherJob, PusherOp, Registration, TokenStore } from './types.ts'

interface RegistrationRow {
  selector: string
  username: string | null
  matrix_user_id: string
  token_msgs: string | null
  app_id_msgs: string | null
  token_calls: string | null
  app_id_calls: string | null
  created_at: string | number
  updated_at: string | number
}

interface JobRow {
  id: string | number
  selector: string
  action: 'set' | 'delete'
  user_id: string
  app_id: string
  pushkey: string
  attempts: number
  next_attempt_at: string | number
  last_error: string | null
}

const orUndefined = <T>(v: T | null): T | undefined => (v === null ? undefined : v)

// BIGINT arrives as a string (it may exceed 2^53); these are milliseconds and ids, well within.
const toRegistration = (r: RegistrationRow): Registration => ({
  selector: r.selector,
  username: orUndefined(r.username),
  matrixUserId: r.matrix_user_id,
  tokenMsgs: orUndefined(r.token_msgs),
  appIdMsgs: orUndefined(r.app_id_msgs),
  tokenCalls: orUndefined(r.token_calls),
  appIdCalls: orUndefined(r.app_id_calls),
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
})

const toJob = (r: JobRow): PusherJob => ({
  id: Number(r.id),
  selector: r.selector,
  action: r.action,
  userId: r.user_id,
  appId: r.app_id,
  pushkey: r.pushkey,
  attempts: r.attempts,
  nextAttemptAt: Number(r.next_attempt_at),
  lastError: orUndefined(r.last_error),
})

export interface PostgresOptions {
  /** Connections in the pool (default 10). */
  max?: number
  /** Seconds to wait for a connection to open (default 5). */
  connectionTimeoutS?: number
}

export const isPostgresUrl = (url: string) => /^postgres(ql)?:\/\//i.test(url)

/** A Bun.SQL pool for the URL. Bun prints its options with the password as [REDACTED]. */
export function connectPostgres(url: string, options: PostgresOptions = {}): SQL {
  return new SQL(url, { max: options.max ?? 10, connectionTimeout: options.connectionTimeoutS ?? 5, idleTimeout: 60 })
}

/**
 * What went wrong with the database, in words that never hold the password: Bun's errors do not
 * quote the URL, but a message is checked anyway before it reaches a log line or an answer.
 */
export function describePostgresError(url: string, e: unknown): string {
  let message = e instanceof Error ? e.message : String(e)
  const code = (e as { code?: unknown; errno?: unknown } | undefined)?.errno ?? (e as { code?: unknown } | undefined)?.code
  let password = ''
  try {
    password = decodeURIComponent(new URL(url).password)
  } catch {
    // Not a URL: config.ts refused it already.
  }
  if (password.length > 0) message = message.split(password).join('[REDACTED]')
  message = redactPassword(message)
  return typeof code === 'string' && code !== '' && !message.includes(code) ? `${message} (${code})` : message
}

/** Serialization failures and deadlocks: the same write may succeed if tried again shortly. */
export const isPostgresRetryable = (e: unknown) => {
  const errno = String((e as { errno?: unknown } | undefined)?.errno ?? '')
  return errno === '40001' || errno === '40P01' || errno === '55P03'
}

/**
 * Opens the pool and brings the schema up to date (once, whichever instance starts first). The
 * pool also serves what the instances share beyond the store (the duplicate filter, the
 * password-check ledger); closing the store ends it.
 */
export async function openPostgres(url: string, options: PostgresOptions = {}): Promise<{ sql: SQL; store: TokenStore }> {
  const sql = connectPostgres(url, options)
  try {
    await migratePostgres(sql)
  } catch (e) {
    await sql.end().catch(() => {})
    throw e
  }
  return { sql, store: createPostgresStore(sql) }
}

export const openPostgresStore = async (url: string, options: PostgresOptions = {}): Promise<TokenStore> => (await openPostgres(url, options)).store

export function createPostgresStore(sql: SQL): TokenStore {
  type Tx = SQL

  async function queue(tx: Tx, selector: string, ops: PusherOp[], now: number): Promise<PusherJob[]> {
    const jobs: PusherJob[] = []
    for (const op of ops) {
      if (op.action === 'set') {
        // As on SQLite: a new `set` makes every older pending call of its selector pointless,
        // except deletes of other pushers.
        await tx`DELETE FROM pusher_jobs WHERE selector = ${selector}
          AND (action = 'set' OR (user_id = ${op.userId} AND app_id = ${op.appId} AND pushkey = ${op.pushkey}))`
      }
      const [row]: JobRow[] = await tx`
        INSERT INTO pusher_jobs (selector, action, user_id, app_id, pushkey, next_attempt_at, created_at)
        VALUES (${selector}, ${op.action}, ${op.userId}, ${op.appId}, ${op.pushkey}, ${now}, ${now}) RETURNING *`
      jobs.push(toJob(row!))
    }
    return jobs
  }

  async function lockedRow(tx: Tx, selector: string): Promise<Registration | undefined> {
    // The advisory lock covers a selector with no row yet, which FOR UPDATE cannot.
    await tx`SELECT pg_advisory_xact_lock(${LOCK_CLASS.selector}, hashtext(${selector}))`
    const [row]: RegistrationRow[] = await tx`SELECT * FROM registrations WHERE selector = ${selector}`
    return row ? toRegistration(row) : undefined
  }

  const refused = (previous: Registration): ChangeResult => ({ previous, jobs: [], refused: true, evicted: [] })

  return {
    saveRegistration: (input, now, plan, options = {}) =>
      sql.begin(async (tx) => {
        const previous = await lockedRow(tx, input.selector)
        if (previous && options.guard && !options.guard(previous)) return refused(previous)
        // Eviction below deletes other rows of this user: one change per user at a time. Taken
        // after the selector's lock, always in that order, so two changes never wait on each other.
        if (options.maxPerUser !== undefined) await tx`SELECT pg_advisory_xact_lock(${LOCK_CLASS.user}, hashtext(${input.matrixUserId}))`
        const [nextRow]: RegistrationRow[] = await tx`
          INSERT INTO registrations (selector, username, matrix_user_id, token_msgs, app_id_msgs, token_calls, app_id_calls, created_at, updated_at)
          VALUES (${input.selector}, ${input.username ?? null}, ${input.matrixUserId}, ${input.tokenMsgs ?? null}, ${input.appIdMsgs ?? null},
                  ${input.tokenCalls ?? null}, ${input.appIdCalls ?? null}, ${now}, ${now})
          ON CONFLICT (selector) DO UPDATE SET
            username = excluded.username, matrix_user_id = excluded.matrix_user_id,
            token_msgs = excluded.token_msgs, app_id_msgs = excluded.app_id_msgs,
            token_calls = excluded.token_calls, app_id_calls = excluded.app_id_calls,
            updated_at = excluded.updated_at
          RETURNING *`
        const jobs = await queue(tx, input.selector, plan(previous, toRegistration(nextRow!)), now)
        const evicted: Registration[] = []
        if (options.maxPerUser !== undefined) {
          const [{ n } = { n: 0 }]: { n: number }[] = await tx`SELECT count(*)::int AS n FROM registrations WHERE matrix_user_id = ${input.matrixUserId}`
          const excess = n - options.maxPerUser
          if (excess > 0) {
            const rows: RegistrationRow[] = await tx`
              SELECT * FROM registrations WHERE matrix_user_id = ${input.matrixUserId} AND selector <> ${input.selector}
              ORDER BY updated_at, selector LIMIT ${excess}`
            for (const row of rows.map(toRegistration)) {
              await tx`DELETE FROM registrations WHERE selector = ${row.selector}`
              jobs.push(...(await queue(tx, row.selector, plan(row, undefined), now)))
              evicted.push(row)
            }
          }
        }
        return { previous, jobs, refused: false, evicted }
      }),
    removeRegistration: (selector, now, plan, guard) =>
      sql.begin(async (tx) => {
        const previous = await lockedRow(tx, selector)
        if (previous && guard && !guard(previous)) return refused(previous)
        if (previous) await tx`DELETE FROM registrations WHERE selector = ${selector}`
        return { previous, jobs: await queue(tx, selector, plan(previous, undefined), now), refused: false, evicted: [] }
      }),
    getRegistration: async (selector) => {
      const [row]: RegistrationRow[] = await sql`SELECT * FROM registrations WHERE selector = ${selector}`
      return row ? toRegistration(row) : undefined
    },
    listRegistrations: async () => ((await sql`SELECT * FROM registrations ORDER BY selector`) as RegistrationRow[]).map(toRegistration),
    countRegistrations: async () => ((await sql`SELECT count(*)::int AS n FROM registrations`) as { n: number }[])[0]!.n,
    findByPushkey: async (appId, pushkey) => {
      const [row]: RegistrationRow[] = await sql`
        SELECT * FROM registrations WHERE token_msgs = ${pushkey} AND app_id_msgs = ${appId} ORDER BY updated_at DESC LIMIT 1`
      return row ? toRegistration(row) : undefined
    },
    forgetPushkey: async (appId, pushkey, now) =>
      (await sql`UPDATE registrations SET token_msgs = NULL, app_id_msgs = NULL, updated_at = ${now}
                 WHERE token_msgs = ${pushkey} AND app_id_msgs = ${appId}`).count,
    dueSelectors: async (now, limit) =>
      ((await sql`
        SELECT j.selector FROM pusher_jobs j
        WHERE j.next_attempt_at <= ${now}
          AND j.id = (SELECT min(id) FROM pusher_jobs k WHERE k.selector = j.selector)
          AND NOT EXISTS (SELECT 1 FROM pusher_jobs k WHERE k.selector = j.selector AND k.lease_until > ${now})
        ORDER BY j.next_attempt_at LIMIT ${limit}`) as { selector: string }[]).map((r) => r.selector),
    claimNextJob: async (selector, now, leaseMs) => {
      // One statement: the selector's oldest job, locked without waiting (another instance
      // claiming it at this moment wins, and this one gets nothing rather than the next job, which
      // must wait for its turn), leased if it is due and no job of the selector is leased.
      const [row]: JobRow[] = await sql`
        UPDATE pusher_jobs SET lease_until = ${now + leaseMs}
        WHERE id = (SELECT id FROM pusher_jobs
                    WHERE id = (SELECT min(id) FROM pusher_jobs WHERE selector = ${selector})
                    FOR UPDATE SKIP LOCKED)
          AND next_attempt_at <= ${now}
          -- Checked on the row itself too: PostgreSQL re-reads a row another claim just committed
          -- (EvalPlanQual) but not the subquery below, which still sees the statement's snapshot.
          AND lease_until <= ${now}
          AND NOT EXISTS (SELECT 1 FROM pusher_jobs k WHERE k.selector = ${selector} AND k.lease_until > ${now})
        RETURNING *`
      return row ? toJob(row) : undefined
    },
    completeJob: async (id) => void (await sql`DELETE FROM pusher_jobs WHERE id = ${id}`),
    rescheduleJob: async (id, nextAttemptAt, error) =>
      void (await sql`UPDATE pusher_jobs SET attempts = attempts + 1, next_attempt_at = ${nextAttemptAt}, last_error = ${error}, lease_until = 0 WHERE id = ${id}`),
    nextJobDue: async () => {
      // A selector is due when its oldest job is, but not before its lease (held by any instance) runs out.
      const [row]: { t: string | null }[] = await sql`
        SELECT min(GREATEST(j.next_attempt_at, (SELECT max(lease_until) FROM pusher_jobs k WHERE k.selector = j.selector))) AS t
        FROM pusher_jobs j WHERE j.id = (SELECT min(id) FROM pusher_jobs k WHERE k.selector = j.selector)`
      return row?.t === null || row?.t === undefined ? undefined : Number(row.t)
    },
    pendingJobs: async () => ((await sql`SELECT * FROM pusher_jobs ORDER BY id`) as JobRow[]).map(toJob),
    countPendingJobs: async () => ((await sql`SELECT count(*)::int AS n FROM pusher_jobs`) as { n: number }[])[0]!.n,
    probeWritable: async () =>
      void (await sql`INSERT INTO probe (id, at) VALUES (1, ${Date.now()}) ON CONFLICT (id) DO UPDATE SET at = excluded.at`),
    close: async () => {
      await sql.end({ timeout: 5 })
    },
  }
}
