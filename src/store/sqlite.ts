/**
 * The embedded SQLite token store (bun:sqlite). WAL with a busy timeout lets several processes
 * share one file; hot statements are prepared once.
 */
import { Database, type Statement } from 'bun:sqlite'
import { accessSync, closeSync, constants, mkdirSync, openSync, chmodSync, existsSync } from 'node:fs'
import { basename, dirname } from 'node:path'
import { migrate } from './migrations.ts'
import { createLookupCache } from './lookup-cache.ts'
import { orUndefined, toDelivery, toJob, toRegistration, type DeliveryRow, type JobRow, type RegistrationRow } from './rows.ts'
import { JOURNAL_ROWS_PER_ACCOUNT, type ChangeGuard, type Delivery, type PusherJob, type PusherOp, type PusherPlanner, type Registration, type RegistrationInput, type SaveOptions, type SharedPusherLookup, type SyncTokenStore, type TokenStore } from './types.ts'

/** Creates the parent folder and the file itself, readable by the owner only (it holds push tokens). */
function createPrivateFile(path: string) {
  if (path === ':memory:' || existsSync(path)) return
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
  closeSync(openSync(path, 'a', 0o600))
  chmodSync(path, 0o600)
}

/**
 * A commit by another process is seen by the notifications that arrive this long after it; this
 * connection's own writes at once. (A removal's pusher deletion reaches Synapse far later.)
 */
export const LOOKUP_CHECK_EVERY_MS = 5
/** About 400 bytes each: a few MiB for the phones that receive pushes at a time. */
export const LOOKUP_CACHE_ENTRIES = 16_384

/**
 * One key per lookup, each part preceded by its length: Synapse's pushkeys and app ids may hold any
 * character, so a separator could make ("app", "tok\0SEL") the key of ("app", "tok", "SEL").
 */
const lookupKey = (appId: string, pushkey: string, selector?: string) =>
  `${appId.length}:${appId}${pushkey.length}:${pushkey}${selector === undefined ? '' : `${selector.length}:${selector}`}`

function openConnection(path: string, options: { busyTimeoutMs?: number }): SyncTokenStore {
  createPrivateFile(path)
  const db = new Database(path, { create: true, strict: true })
  db.run(`PRAGMA busy_timeout = ${options.busyTimeoutMs ?? 5000}`)
  db.run('PRAGMA journal_mode = WAL')
  db.run('PRAGMA synchronous = NORMAL')
  db.run('PRAGMA foreign_keys = ON')
  // 16 MiB of page cache instead of 2: the index pages every pushkey lookup walks stay in memory
  // with a million tokens (the lookup grew to 10-14 µs there with the default). Only pages read
  // are held, so a small database costs no more.
  db.run('PRAGMA cache_size = -16384')
  const { notes } = migrate(db)

  const q = {
    get: db.prepare<RegistrationRow, [string]>('SELECT * FROM registrations WHERE selector = ?'),
    upsert: db.prepare<null, Record<string, string | number | null>>(`
      INSERT INTO registrations (selector, username, matrix_user_id, token_msgs, app_id_msgs, token_calls, app_id_calls, created_at, updated_at)
      VALUES ($selector, $username, $matrix_user_id, $token_msgs, $app_id_msgs, $token_calls, $app_id_calls, $now, $now)
      ON CONFLICT (selector) DO UPDATE SET
        username = excluded.username, matrix_user_id = excluded.matrix_user_id,
        token_msgs = excluded.token_msgs, app_id_msgs = excluded.app_id_msgs,
        token_calls = excluded.token_calls, app_id_calls = excluded.app_id_calls,
        updated_at = excluded.updated_at`),
    delete: db.prepare<null, [string]>('DELETE FROM registrations WHERE selector = ?'),
    list: db.prepare<RegistrationRow, []>('SELECT * FROM registrations ORDER BY selector'),
    count: db.prepare<{ n: number }, []>('SELECT count(*) AS n FROM registrations'),
    countOfUser: db.prepare<{ n: number }, [string]>('SELECT count(*) AS n FROM registrations WHERE matrix_user_id = ?'),
    oldestOfUser: db.prepare<RegistrationRow, [string, string, number]>(
      'SELECT * FROM registrations WHERE matrix_user_id = ? AND selector <> ? ORDER BY updated_at, selector LIMIT ?',
    ),
    // The newest row, the first of its index entries (migration 3): no sort, one row read.
    byPushkey: db.prepare<RegistrationRow, [string, string]>(
      'SELECT * FROM registrations WHERE token_msgs = ? AND app_id_msgs = ? ORDER BY updated_at DESC LIMIT 1',
    ),
    sharing: db.prepare<RegistrationRow, [string, string, string, string]>(
      'SELECT * FROM registrations WHERE token_msgs = ? AND app_id_msgs = ? AND matrix_user_id = ? AND selector <> ? ORDER BY updated_at DESC, selector LIMIT 1',
    ),
    // Every account of one phone's token (the pusher migration); the lookup above wants one row.
    allByPushkey: db.prepare<RegistrationRow, [string, string]>('SELECT * FROM registrations WHERE token_msgs = ? AND app_id_msgs = ?'),
    bySelector: db.prepare<RegistrationRow, [string, string, string]>(
      'SELECT * FROM registrations WHERE selector = ? AND token_msgs = ? AND app_id_msgs = ?',
    ),
    // The journal is a ring per account (migration 7): where its next outcome goes, and whether
    // the account is still stored (a removal may race a notification: it gets no rows then).
    journalHead: db.prepare<{ stored: number | null; seq: number | null }, [string]>(`
      SELECT (SELECT 1 FROM registrations WHERE selector = ?1) AS stored, (SELECT max(seq) FROM deliveries WHERE selector = ?1) AS seq`),
    writeDelivery: db.prepare<null, [string, number, number, number, string | null, string, number | null, number, string | null]>(`
      INSERT INTO deliveries (selector, slot, seq, at, event_id, outcome, pnm_status, latency_ms, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT (selector, slot) DO UPDATE SET seq = excluded.seq, at = excluded.at, event_id = excluded.event_id, outcome = excluded.outcome,
        pnm_status = excluded.pnm_status, latency_ms = excluded.latency_ms, detail = excluded.detail`),
    deleteDeliveries: db.prepare<null, [string]>('DELETE FROM deliveries WHERE selector = ?'),
    deliveredSince: db.prepare<{ selector: string; pushkey: string; event_id: string; at: number }, [number]>(`
      SELECT d.selector, r.token_msgs AS pushkey, d.event_id, d.at FROM deliveries d JOIN registrations r ON r.selector = d.selector
      WHERE d.outcome = 'delivered' AND d.at >= ? AND d.event_id IS NOT NULL AND r.token_msgs IS NOT NULL ORDER BY d.at`),
    deliveries: db.prepare<DeliveryRow, [string]>(
      `SELECT * FROM deliveries WHERE selector = ? ORDER BY seq DESC LIMIT ${JOURNAL_ROWS_PER_ACCOUNT}`,
    ),
    forget: db.prepare<null, [number, string, string]>(
      'UPDATE registrations SET token_msgs = NULL, app_id_msgs = NULL, updated_at = ? WHERE token_msgs = ? AND app_id_msgs = ?',
    ),
    // A new `set` makes every older pending call of its selector pointless, except deletes of
    // other pushers; a pending delete of the very pusher being set again would undo it.
    supersede: db.prepare<null, Record<string, string>>(`
      DELETE FROM pusher_jobs WHERE selector = $selector
        AND (action = 'set' OR (user_id = $user_id AND app_id = $app_id AND pushkey = $pushkey))`),
    // A removed account's pending `set`s would register its pusher again after its removal (or
    // name it in a pusher it shared with another account of the same user).
    dropSets: db.prepare<null, [string]>("DELETE FROM pusher_jobs WHERE selector = ? AND action = 'set'"),
    insertJob: db.prepare<JobRow, Record<string, string | number>>(`
      INSERT INTO pusher_jobs (selector, action, user_id, app_id, pushkey, next_attempt_at, created_at)
      VALUES ($selector, $action, $user_id, $app_id, $pushkey, $now, $now) RETURNING *`),
    // Accounts whose oldest job is due and none of whose jobs is leased: calls for one account
    // reach the homeserver in the order they were decided.
    dueSelectors: db.prepare<{ selector: string }, [number, number]>(`
      SELECT j.selector FROM pusher_jobs j
      WHERE j.next_attempt_at <= ?1
        AND j.id = (SELECT min(id) FROM pusher_jobs k WHERE k.selector = j.selector)
        AND NOT EXISTS (SELECT 1 FROM pusher_jobs k WHERE k.selector = j.selector AND k.lease_until > ?1)
      ORDER BY j.next_attempt_at LIMIT ?2`),
    nextOfSelector: db.prepare<JobRow, [string]>('SELECT * FROM pusher_jobs WHERE selector = ? ORDER BY id LIMIT 1'),
    anyLeased: db.prepare<{ n: number }, [string, number]>(
      'SELECT count(*) AS n FROM pusher_jobs WHERE selector = ? AND lease_until > ?',
    ),
    lease: db.prepare<null, [number, number]>('UPDATE pusher_jobs SET lease_until = ? WHERE id = ?'),
    complete: db.prepare<null, [number]>('DELETE FROM pusher_jobs WHERE id = ?'),
    reschedule: db.prepare<null, [number, string, number]>(
      'UPDATE pusher_jobs SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, lease_until = 0 WHERE id = ?',
    ),
    // A selector is due when its oldest job is, but not before a lease on it (held by this or
    // another process) runs out: a job being worked elsewhere must not make this process spin.
    nextDue: db.prepare<{ t: number | null }, []>(`
      SELECT min(max(j.next_attempt_at, (SELECT max(lease_until) FROM pusher_jobs k WHERE k.selector = j.selector))) AS t
      FROM pusher_jobs j WHERE j.id = (SELECT min(id) FROM pusher_jobs k WHERE k.selector = j.selector)`),
    pending: db.prepare<JobRow, []>('SELECT * FROM pusher_jobs ORDER BY id'),
    pendingCount: db.prepare<{ n: number }, []>('SELECT count(*) AS n FROM pusher_jobs'),
  }

  const queue = (changed: string, ops: PusherOp[], now: number): PusherJob[] =>
    ops.map((op) => {
      const selector = op.selector ?? changed
      if (op.action === 'set') {
        q.supersede.run({ selector, user_id: op.userId, app_id: op.appId, pushkey: op.pushkey })
      }
      return toJob(
        q.insertJob.get({ selector, action: op.action, user_id: op.userId, app_id: op.appId, pushkey: op.pushkey, now })!,
      )
    })

  const sharing: SharedPusherLookup = (userId, appId, pushkey, exceptSelector) => {
    const row = q.sharing.get(pushkey, appId, userId, exceptSelector)
    return row ? toRegistration(row) : undefined
  }

  const get = (selector: string) => {
    const row = q.get.get(selector)
    return row ? toRegistration(row) : undefined
  }

  const save = db.transaction((input: RegistrationInput, now: number, plan: PusherPlanner, options: SaveOptions) => {
    const previous = get(input.selector)
    if (previous && options.guard && !options.guard(previous)) return { previous, jobs: [], refused: true, evicted: [] }
    q.upsert.run({
      selector: input.selector,
      username: input.username ?? null,
      matrix_user_id: input.matrixUserId,
      token_msgs: input.tokenMsgs ?? null,
      app_id_msgs: input.appIdMsgs ?? null,
      token_calls: input.tokenCalls ?? null,
      app_id_calls: input.appIdCalls ?? null,
      now,
    })
    const next = get(input.selector)!
    const jobs = queue(input.selector, plan(previous, next, sharing), now)
    const evicted: Registration[] = []
    if (options.maxPerUser !== undefined) {
      const excess = q.countOfUser.get(input.matrixUserId)!.n - options.maxPerUser
      if (excess > 0) {
        for (const row of q.oldestOfUser.all(input.matrixUserId, input.selector, excess).map(toRegistration)) {
          q.delete.run(row.selector)
          q.deleteDeliveries.run(row.selector)
          q.dropSets.run(row.selector)
          jobs.push(...queue(row.selector, plan(row, undefined, sharing), now))
          evicted.push(row)
        }
      }
    }
    return { previous, jobs, refused: false, evicted }
  })

  const remove = db.transaction((selector: string, now: number, plan: PusherPlanner, guard?: ChangeGuard) => {
    const previous = get(selector)
    if (previous && guard && !guard(previous)) return { previous, jobs: [], refused: true, evicted: [] }
    if (previous) {
      q.delete.run(selector)
      q.deleteDeliveries.run(selector)
      q.dropSets.run(selector)
    }
    return { previous, jobs: queue(selector, plan(previous, undefined, sharing), now), refused: false, evicted: [] }
  })


  // This connection's own commits leave data_version as it is: its writes of registrations forget
  // the remembered lookups themselves (a failed one too: what it left is not worth a doubt).
  const dataVersion = db.prepare<{ data_version: number }, []>('PRAGMA data_version')
  let seenVersion = dataVersion.get()!.data_version
  const lookups = createLookupCache<Registration>({
    changed: () => {
      const version = dataVersion.get()!.data_version
      if (version === seenVersion) return false
      seenVersion = version
      return true
    },
    now: () => performance.now(),
    checkEveryMs: LOOKUP_CHECK_EVERY_MS,
    maxEntries: LOOKUP_CACHE_ENTRIES,
  })
  function afterWrite<T>(write: () => T): T {
    try {
      return write()
    } finally {
      lookups.clear()
    }
  }

  // Each account's newest slot is read once per write, inside its transaction, so that another
  // process writing the same file (a second service on it, by mistake) cannot make two outcomes
  // share a slot unnoticed: the later one simply follows the earlier.
  const record = db.transaction((deliveries: readonly Delivery[]) => {
    // Each account's next seq; undefined for an account that is not stored (it gets no rows).
    const next = new Map<string, number | undefined>()
    for (const d of deliveries) {
      if (!next.has(d.selector)) {
        const head = q.journalHead.get(d.selector)!
        next.set(d.selector, head.stored === null ? undefined : (head.seq ?? 0) + 1)
      }
      const seq = next.get(d.selector)
      if (seq === undefined) continue
      next.set(d.selector, seq + 1)
      q.writeDelivery.run(d.selector, seq % JOURNAL_ROWS_PER_ACCOUNT, seq, d.at, d.eventId ?? null, d.outcome, d.pnmStatus ?? null, Math.round(d.latencyMs), d.detail ?? null)
    }
  })

  return {
    saveRegistration: (input, now, plan, options = {}) => afterWrite(() => save.immediate(input, now, plan, options)),
    removeRegistration: (selector, now, plan, guard) => afterWrite(() => remove.immediate(selector, now, plan, guard)),
    getRegistration: get,
    listRegistrations: () => q.list.all().map(toRegistration),
    countRegistrations: () => q.count.get()!.n,
    // Shared by every caller of the same key until a change: frozen, so none can alter another's.
    findByPushkey: (appId, pushkey) =>
      lookups.read(lookupKey(appId, pushkey), () => {
        const row = q.byPushkey.get(pushkey, appId)
        return row ? Object.freeze(toRegistration(row)) : undefined
      }),
    findBySelector: (appId, pushkey, selector) =>
      lookups.read(lookupKey(appId, pushkey, selector), () => {
        const row = q.bySelector.get(selector, pushkey, appId)
        return row ? Object.freeze(toRegistration(row)) : undefined
      }),
    listByPushkey: (appId, pushkey) => q.allByPushkey.all(pushkey, appId).map(toRegistration),
    recordDeliveries: (deliveries) => record.immediate(deliveries),
    deliveries: (selector) => q.deliveries.all(selector).map(toDelivery),
    deliveredSince: (since) => q.deliveredSince.all(since).map((r) => ({ selector: r.selector, pushkey: r.pushkey, eventId: r.event_id, at: r.at })),
    migrationNotes: () => notes,
    forgetPushkey: (appId, pushkey, now) => afterWrite(() => q.forget.run(now, pushkey, appId).changes),
    dueSelectors: (now, limit) => q.dueSelectors.all(now, limit).map((r) => r.selector),
    claimNextJob: (selector, now, leaseMs) =>
      db
        .transaction(() => {
          if (q.anyLeased.get(selector, now)!.n > 0) return undefined
          const row = q.nextOfSelector.get(selector)
          const job = row ? toJob(row) : undefined
          if (!job || job.nextAttemptAt > now) return undefined
          q.lease.run(now + leaseMs, job.id)
          return job
        })
        .immediate(),
    completeJob: (id) => void q.complete.run(id),
    rescheduleJob: (id, nextAttemptAt, error) => void q.reschedule.run(nextAttemptAt, error, id),
    nextJobDue: () => orUndefined(q.nextDue.get()!.t),
    pendingJobs: () => q.pending.all().map(toJob),
    countPendingJobs: () => q.pendingCount.get()!.n,
    probeWritable: () => void db.run('PRAGMA user_version = ' + (db.query('PRAGMA user_version').get() as { user_version: number }).user_version),
    // close() alone leaves the connection open while prepared statements live (sqlite3_close_v2):
    // the WAL would stay unmerged at shutdown and a reopened connection would leak the old one.
    close: () => db.close(true),
  }
}

/** SQLite's (extended) result code of an error thrown by bun:sqlite, or '' for any other error. */
const sqliteCode = (e: unknown) => String((e as { code?: unknown } | undefined)?.code ?? '')

/**
 * What keeps the database from being used, in the operator's terms. SQLite says "attempt to write
 * a readonly database" both for a read-only file and for a read-only folder; only the second is
 * fixed on the folder: in WAL mode SQLite creates `<file>-wal` and `<file>-shm` beside the file.
 */
export function describeDatabaseError(path: string, e: unknown): string {
  const message = e instanceof Error ? e.message : String(e)
  const code = sqliteCode(e)
  if (path === ':memory:' || !(/^SQLITE_READONLY/.test(code) || /readonly database/.test(message))) return message
  const dir = dirname(path)
  if (code === 'SQLITE_READONLY_DIRECTORY' || !isWritable(dir)) {
    return `${message}: the folder ${dir} must be writable by this user too, for SQLite's WAL files (${basename(path)}-wal and -shm) beside the database`
  }
  if (!isWritable(path)) return `${message}: the file ${path} is read-only for this user`
  return message
}

/** Another connection holds the lock: the write may succeed if tried again shortly. */
export const isBusyError = (e: unknown) => sqliteCode(e).startsWith('SQLITE_BUSY')

// Faults after which this connection may stay broken although the file is fine again: SQLite
// falls back to read-only when the file is not writable at open, and stays so after a chmod.
const REOPEN_AFTER = /^SQLITE_(READONLY|IOERR|CANTOPEN)/

/**
 * The token store on one SQLite file. A write refused as read-only (or an I/O error) reopens the
 * connection before the next operation, so the service recovers once the file is writable again
 * without a restart; meanwhile reads keep working and the caller answers 503 for writes.
 */
export function openSqliteStore(path: string, options: { busyTimeoutMs?: number } = {}): TokenStore {
  let current = openConnection(path, options)
  // A connection opened while the file is not writable is read-only for good: it is replaced as
  // soon as the file can be written, so that the first write after the fault already succeeds.
  const readOnlyFile = () => path !== ':memory:' && !isWritable(path)
  let broken = readOnlyFile()
  let closed = false

  function reopen() {
    try {
      current.close()
    } catch {
      // A broken connection may fail to close; the new one does not depend on it.
    }
    // SQLite gives -wal and -shm the mode the database file had: after a read-only spell they
    // stay read-only and would make the new connection read-only too.
    if (path !== ':memory:' && isWritable(path)) {
      for (const suffix of ['-wal', '-shm']) {
        try {
          if (existsSync(path + suffix)) chmodSync(path + suffix, 0o600)
        } catch {
          // Not ours to change: the open below reports what is still wrong.
        }
      }
    }
    current = openConnection(path, options)
    broken = readOnlyFile()
  }

  /**
   * The connection's operation, answered as a settled promise: a failure rejects (never throws
   * at the call), as it would on a networked engine. One promise per call, nothing more: the
   * notify path looks a pushkey up through here on every notification.
   */
  function guarded<K extends keyof SyncTokenStore>(name: K): TokenStore[K] {
    const call = (...args: unknown[]) => {
      try {
        // While the file itself stays read-only, a new connection would be read-only again: keep
        // serving reads from this one and reopen once the file can be written.
        if (broken && !closed && !readOnlyFile()) reopen()
        return Promise.resolve((current[name] as (...a: unknown[]) => unknown)(...args))
      } catch (e) {
        if (REOPEN_AFTER.test(sqliteCode(e))) broken = true
        return Promise.reject(e)
      }
    }
    return call as unknown as TokenStore[K]
  }

  return {
    saveRegistration: guarded('saveRegistration'),
    removeRegistration: guarded('removeRegistration'),
    getRegistration: guarded('getRegistration'),
    listRegistrations: guarded('listRegistrations'),
    countRegistrations: guarded('countRegistrations'),
    findByPushkey: guarded('findByPushkey'),
    findBySelector: guarded('findBySelector'),
    listByPushkey: guarded('listByPushkey'),
    recordDeliveries: guarded('recordDeliveries'),
    deliveries: guarded('deliveries'),
    deliveredSince: guarded('deliveredSince'),
    migrationNotes: guarded('migrationNotes'),
    forgetPushkey: guarded('forgetPushkey'),
    dueSelectors: guarded('dueSelectors'),
    claimNextJob: guarded('claimNextJob'),
    completeJob: guarded('completeJob'),
    rescheduleJob: guarded('rescheduleJob'),
    nextJobDue: guarded('nextJobDue'),
    pendingJobs: guarded('pendingJobs'),
    countPendingJobs: guarded('countPendingJobs'),
    probeWritable: guarded('probeWritable'),
    close: async () => {
      closed = true
      current.close()
    },
  }
}

function isWritable(path: string): boolean {
  try {
    accessSync(path, constants.W_OK)
    return true
  } catch {
    return false
  }
}
