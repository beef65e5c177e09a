/**
 * The embedded SQLite token store (bun:sqlite). WAL with a busy timeout lets several processes
 * share one file; hot statements are prepared once.
 */
import { Database, type Statement } from 'bun:sqlite'
import { closeSync, mkdirSync, openSync, chmodSync, existsSync } from 'node:fs'
import { dirname } from 'node:path'
import { migrate } from './migrations.ts'
import type { PusherJob, PusherOp, PusherPlanner, Registration, RegistrationInput, TokenStore } from './types.ts'

interface RegistrationRow {
  selector: string
  username: string | null
  matrix_user_id: string
  token_msgs: string | null
  app_id_msgs: string | null
  token_calls: string | null
  app_id_calls: string | null
  created_at: number
  updated_at: number
}

interface JobRow {
  id: number
  selector: string
  action: 'set' | 'delete'
  user_id: string
  app_id: string
  pushkey: string
  attempts: number
  next_attempt_at: number
  last_error: string | null
}

const orUndefined = <T>(v: T | null): T | undefined => (v === null ? undefined : v)

const toRegistration = (r: RegistrationRow): Registration => ({
  selector: r.selector,
  username: orUndefined(r.username),
  matrixUserId: r.matrix_user_id,
  tokenMsgs: orUndefined(r.token_msgs),
  appIdMsgs: orUndefined(r.app_id_msgs),
  tokenCalls: orUndefined(r.token_calls),
  appIdCalls: orUndefined(r.app_id_calls),
  createdAt: r.created_at,
  updatedAt: r.updated_at,
})

const toJob = (r: JobRow): PusherJob => ({
  id: r.id,
  selector: r.selector,
  action: r.action,
  userId: r.user_id,
  appId: r.app_id,
  pushkey: r.pushkey,
  attempts: r.attempts,
  nextAttemptAt: r.next_attempt_at,
  lastError: orUndefined(r.last_error),
})

/** Creates the parent folder and the file itself, readable by the owner only (it holds push tokens). */
function createPrivateFile(path: string) {
  if (path === ':memory:' || existsSync(path)) return
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
  closeSync(openSync(path, 'a', 0o600))
  chmodSync(path, 0o600)
}

export function openSqliteStore(path: string, options: { busyTimeoutMs?: number } = {}): TokenStore {
  createPrivateFile(path)
  const db = new Database(path, { create: true, strict: true })
  db.run(`PRAGMA busy_timeout = ${options.busyTimeoutMs ?? 5000}`)
  db.run('PRAGMA journal_mode = WAL')
  db.run('PRAGMA synchronous = NORMAL')
  db.run('PRAGMA foreign_keys = ON')
  migrate(db)

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
    byPushkey: db.prepare<RegistrationRow, [string, string]>(
      'SELECT * FROM registrations WHERE token_msgs = ? AND app_id_msgs = ? ORDER BY updated_at DESC LIMIT 1',
    ),
    forget: db.prepare<null, [number, string, string]>(
      'UPDATE registrations SET token_msgs = NULL, app_id_msgs = NULL, updated_at = ? WHERE token_msgs = ? AND app_id_msgs = ?',
    ),
    // A new `set` makes every older pending call of its selector pointless, except deletes of
    // other pushers; a pending delete of the very pusher being set again would undo it.
    supersede: db.prepare<null, Record<string, string>>(`
      DELETE FROM pusher_jobs WHERE selector = $selector
        AND (action = 'set' OR (user_id = $user_id AND app_id = $app_id AND pushkey = $pushkey))`),
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
    nextDue: db.prepare<{ t: number | null }, []>('SELECT min(next_attempt_at) AS t FROM pusher_jobs'),
    pending: db.prepare<JobRow, []>('SELECT * FROM pusher_jobs ORDER BY id'),
  }

  const queue = (selector: string, ops: PusherOp[], now: number): PusherJob[] =>
    ops.map((op) => {
      if (op.action === 'set') {
        q.supersede.run({ selector, user_id: op.userId, app_id: op.appId, pushkey: op.pushkey })
      }
      return toJob(
        q.insertJob.get({ selector, action: op.action, user_id: op.userId, app_id: op.appId, pushkey: op.pushkey, now })!,
      )
    })

  const get = (selector: string) => {
    const row = q.get.get(selector)
    return row ? toRegistration(row) : undefined
  }

  const save = db.transaction((input: RegistrationInput, now: number, plan: PusherPlanner) => {
    const previous = get(input.selector)
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
    return { previous, jobs: queue(input.selector, plan(previous, next), now) }
  })

  const remove = db.transaction((selector: string, now: number, plan: PusherPlanner) => {
    const previous = get(selector)
    if (previous) q.delete.run(selector)
    return { previous, jobs: queue(selector, plan(previous, undefined), now) }
  })


  return {
    saveRegistration: (input, now, plan) => save.immediate(input, now, plan),
    removeRegistration: (selector, now, plan) => remove.immediate(selector, now, plan),
    getRegistration: get,
    listRegistrations: () => q.list.all().map(toRegistration),
    countRegistrations: () => q.count.get()!.n,
    findByPushkey: (appId, pushkey) => {
      const row = q.byPushkey.get(pushkey, appId)
      return row ? toRegistration(row) : undefined
    },
    forgetPushkey: (appId, pushkey, now) => q.forget.run(now, pushkey, appId).changes,
    dueSelectors: (now, limit) => q.dueSelectors.all(now, limit).map((r) => r.selector),
    claimNextJob: (selector, now, leaseMs) =>
      db
        .transaction(() => {
          if (q.anyLeased.get(selector, now)!.n > 0) return undefined
          const job = q.nextOfSelector.get(selector)
          if (!job || job.next_attempt_at > now) return undefined
          q.lease.run(now + leaseMs, job.id)
          return toJob(job)
        })
        .immediate(),
    completeJob: (id) => void q.complete.run(id),
    rescheduleJob: (id, nextAttemptAt, error) => void q.reschedule.run(nextAttemptAt, error, id),
    nextJobDue: () => orUndefined(q.nextDue.get()!.t),
    pendingJobs: () => q.pending.all().map(toJob),
    probeWritable: () => void db.run('PRAGMA user_version = ' + (db.query('PRAGMA user_version').get() as { user_version: number }).user_version),
    close: () => db.close(),
  }
}
