/**
 * The rows of the token tables as both engines return them, and their translation into the
 * store's types. PostgreSQL hands BIGINT columns over as strings (they may exceed 2^53); SQLite
 * gives numbers. These are milliseconds and ids, well within 2^53, so Number() serves both.
 */
import type { Delivery, PusherJob, Registration } from './types.ts'

export interface RegistrationRow {
  selector: string
  username: string | null
  matrix_user_id: string | null
  token_msgs: string | null
  app_id_msgs: string | null
  token_calls: string | null
  app_id_calls: string | null
  created_at: string | number
  updated_at: string | number
}

export interface JobRow {
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

export interface DeliveryRow {
  selector: string
  at: string | number
  event_id: string | null
  outcome: string
  pnm_status: number | null
  latency_ms: number
  detail: string | null
}

/** A NULL column is an absent field. */
export const orUndefined = <T>(v: T | null): T | undefined => (v === null ? undefined : v)

export const toRegistration = (r: RegistrationRow): Registration => ({
  selector: r.selector,
  username: orUndefined(r.username),
  matrixUserId: orUndefined(r.matrix_user_id),
  tokenMsgs: orUndefined(r.token_msgs),
  appIdMsgs: orUndefined(r.app_id_msgs),
  tokenCalls: orUndefined(r.token_calls),
  appIdCalls: orUndefined(r.app_id_calls),
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
})

export const toDelivery = (r: DeliveryRow): Delivery => ({
  selector: r.selector,
  at: Number(r.at),
  eventId: orUndefined(r.event_id),
  outcome: r.outcome,
  pnmStatus: orUndefined(r.pnm_status),
  latencyMs: r.latency_ms,
  detail: orUndefined(r.detail),
})

export const toJob = (r: JobRow): PusherJob => ({
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
