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
import { orUndefined, toDelivery, toJob, toRegistration, type DeliveryRow, type JobRow, type RegistrationRow } from './rows.ts'
import { JOURNAL_ROWS_PER_ACCOUNT, type ChangeResult, type PusherJob, type PusherOp, type Registration, type SharedPusherLookup, type TokenStore } from './types.ts'
import { bounded } from './bounded.ts'
import { parsePostgresUrl } from '../config.ts'

export interface PostgresOptions {
  /** Connections in the pool (default 10). */
  max?: number
  /** Seconds to wait for a connection to open (default 5). */
  connectionTimeoutS?: number
  /** How long an operation of the store may take (store/bounded.ts); unbounded when not given. */
  timeoutMs?: number
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
    password = decodeURIComponent(parsePostgresUrl(url).password)
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
  const store = createPostgresStore(sql)
  return { sql, store: options.timeoutMs === undefined ? store : bounded(store, 'the database', options.timeoutMs) }
}

export const openPostgresStore = async (url: string, options: PostgresOptions = {}): Promise<TokenStore> => (await openPostgres(url, options)).store

export function createPostgresStore(sql: SQL): TokenStore {
  type Tx = SQL

  async function queue(tx: Tx, changed: string, ops: PusherOp[], now: number): Promise<PusherJob[]> {
    const jobs: PusherJob[] = []
    for (const op of ops) {
      // A call may be for another account than the changed one (a pusher two accounts share).
      const selector = op.selector ?? changed
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

  /**
   * The planner asks synchronously, inside the transaction, for another account of the same user
   * with the pusher `row` had (plan.ts asks about the row before the change only): read here
   * beforehand, so the planner's question is answered from memory.
   */
  async function sharingFor(tx: Tx, row: Registration | undefined): Promise<SharedPusherLookup> {
    if (row?.tokenMsgs === undefined || row.appIdMsgs === undefined || row.matrixUserId === undefined) return () => undefined
    const [other]: RegistrationRow[] = await tx`
      SELECT * FROM registrations WHERE token_msgs = ${row.tokenMsgs} AND app_id_msgs = ${row.appIdMsgs}
        AND matrix_user_id = ${row.matrixUserId} AND selector <> ${row.selector}
      ORDER BY updated_at DESC, selector LIMIT 1`
    const found = other ? toRegistration(other) : undefined
    return (userId, appId, pushkey, exceptSelector) => {
      if (userId !== row.matrixUserId || appId !== row.appIdMsgs || pushkey !== row.tokenMsgs || exceptSelector !== row.selector) {
        throw new Error('the pusher planner asked about a pusher the PostgreSQL store did not read beforehand')
      }
      return found
    }
  }

  /** What goes with a removed account: its journal, and its pending `set`s (they would register it again). */
  async function dropAccount(tx: Tx, selector: string) {
    await tx`DELETE FROM registrations WHERE selector = ${selector}`
    await tx`DELETE FROM deliveries WHERE selector = ${selector}`
    await tx`DELETE FROM pusher_jobs WHERE selector = ${selector} AND action = 'set'`
  }

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
        const jobs = await queue(tx, input.selector, plan(previous, toRegistration(nextRow!), await sharingFor(tx, previous)), now)
        const evicted: Registration[] = []
        if (options.maxPerUser !== undefined) {
          const [{ n } = { n: 0 }]: { n: number }[] = await tx`SELECT count(*)::int AS n FROM registrations WHERE matrix_user_id = ${input.matrixUserId}`
          const excess = n - options.maxPerUser
          if (excess > 0) {
            const rows: RegistrationRow[] = await tx`
              SELECT * FROM registrations WHERE matrix_user_id = ${input.matrixUserId} AND selector <> ${input.selector}
              ORDER BY updated_at, selector LIMIT ${excess}`
            for (const row of rows.map(toRegistration)) {
              await dropAccount(tx, row.selector)
              jobs.push(...(await queue(tx, row.selector, plan(row, undefined, await sharingFor(tx, row)), now)))
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
        if (previous) await dropAccount(tx, selector)
        return { previous, jobs: await queue(tx, selector, plan(previous, undefined, await sharingFor(tx, previous)), now), refused: false, evicted: [] }
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
    findBySelector: async (appId, pushkey, selector) => {
      const [row]: RegistrationRow[] = await sql`
        SELECT * FROM registrations WHERE selector = ${selector} AND token_msgs = ${pushkey} AND app_id_msgs = ${appId}`
      return row ? toRegistration(row) : undefined
    },
    listByPushkey: async (appId, pushkey) =>
      ((await sql`SELECT * FROM registrations WHERE token_msgs = ${pushkey} AND app_id_msgs = ${appId} ORDER BY selector`) as RegistrationRow[]).map(toRegistration),
    recordDeliveries: async (deliveries) => {
      if (deliveries.length === 0) return
      await sql.begin(async (tx) => {
        const selectors = [...new Set(deliveries.map((d) => d.selector))]
        // Only accounts still stored get rows; FOR SHARE holds off their removal (which deletes
        // the journal) until these rows are in.
        const stored = new Set(
          ((await tx`SELECT selector FROM registrations WHERE selector IN ${tx(selectors)} ORDER BY selector FOR SHARE`) as { selector: string }[]).map((r) => r.selector),
        )
        const rows = deliveries
          .filter((d) => stored.has(d.selector))
          .map((d) => ({
            selector: d.selector,
            at: d.at,
            event_id: d.eventId ?? null,
            outcome: d.outcome,
            pnm_status: d.pnmStatus ?? null,
            latency_ms: Math.round(d.latencyMs),
            detail: d.detail ?? null,
          }))
        if (rows.length === 0) return
        await tx`INSERT INTO deliveries ${tx(rows, 'selector', 'at', 'event_id', 'outcome', 'pnm_status', 'latency_ms', 'detail')}`
        // One statement prunes every account written: each keeps its newest rows.
        await tx`
          DELETE FROM deliveries d USING (
            SELECT id, row_number() OVER (PARTITION BY selector ORDER BY id DESC) AS n
            FROM deliveries WHERE selector IN ${tx([...stored])}
          ) old
          WHERE d.id = old.id AND old.n > ${JOURNAL_ROWS_PER_ACCOUNT}`
      })
    },
    deliveries: async (selector) =>
      ((await sql`SELECT * FROM deliveries WHERE selector = ${selector} ORDER BY id DESC LIMIT ${JOURNAL_ROWS_PER_ACCOUNT}`) as DeliveryRow[]).map(toDelivery),
    deliveredSince: async (since) =>
      (
        (await sql`
          SELECT d.selector, r.token_msgs AS pushkey, d.event_id, d.at FROM deliveries d JOIN registrations r ON r.selector = d.selector
          WHERE d.outcome = 'delivered' AND d.at >= ${since} AND d.event_id IS NOT NULL AND r.token_msgs IS NOT NULL ORDER BY d.at`) as {
          selector: string
          pushkey: string
          event_id: string
          at: number | string
        }[]
      ).map((r) => ({ selector: r.selector, pushkey: r.pushkey, eventId: r.event_id, at: Number(r.at) })),
    // The Go proxy's table is imported on SQLite only (its database was a SQLite file).
    migrationNotes: async () => [],
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
