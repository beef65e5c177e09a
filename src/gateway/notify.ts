/**
 * What happens to a notification from Synapse: each device is looked up, translated and sent to
 * the PNM in parallel; the answer to Synapse lists the pushkeys to reject, or is a 5xx when a
 * retry later can still deliver (Synapse then backs off and tries again).
 * A device is an account: its pusher's `data.selector` (echoed by Synapse) names it among the
 * accounts sharing one phone's token; a pusher without one (registered before, or by the Go
 * proxy) is looked up by token alone and registered again in the background. Each account's
 * outcome goes to the delivery journal, which is written later, off this path.
 *
 * Logging: the outcome of every device goes into the request's one access line (app.ts); a line
 * of its own only for what an operator acts on (failures, a forgotten token) and, at DEBUG, the
 * rest. Every line carries the request's `req_id` as a field, not through a child logger per
 * request and device, and the pushkey's hash is computed once, when a line needs it.
 */
import type { Logger } from 'pino'
import type { RequestRecord } from '../app.ts'
import type { Config } from '../config.ts'
import { AppError, badGateway, unavailable } from '../errors.ts'
import type { PnmClient } from '../pnm/client.ts'
import { classifyPnmAnswer, type PnmOutcome } from '../pnm/outcome.ts'
import type { TokenStore } from '../store/types.ts'
import { tokenHash } from '../secrets.ts'
import type { DuplicateFilter } from './dedupe.ts'
import type { DeliveryJournal } from './journal.ts'
import type { PusherMigrator } from './migrate-pushers.ts'
import { SELECTOR_DATA_KEY } from '../pusher/body.ts'
import type { Device, Notification } from './schema.ts'
import { isBadgeOnly, translateNotification } from './translate.ts'
import type { Metrics } from '../metrics.ts'
import { applyPushView, type PushViewLookup } from '../messages/push-view.ts'

/** Synapse waits 60 s for an answer; the proxy answers well before, whatever the PNM does. */
export const NOTIFY_DEADLINE_MS = 25_000
/** Pauses before the second and third PNM attempts. */
export const PNM_RETRY_DELAYS_MS = [250, 1000] as const

export type DeviceOutcome =
  | 'delivered'
  | 'rejected'
  | 'duplicate'
  | 'badge_only'
  | 'dropped'
  | 'failed'
  | 'overloaded'
  | 'store_error'
  | 'sending_elsewhere'

/**
 * What the duplicate filter knows a push by, with the event: two accounts on one phone share its
 * token and may get the same event (a room they are both in), and each account's push is its own.
 * (U+001F: PostgreSQL text holds no NUL.)
 */
export const duplicateKey = (pushkey: string, selector: string) => `${pushkey}\u001f${selector}`

/** Devices listed one by one in the access line; past this, counts per outcome. */
export const LOGGED_DEVICES = 16

/**
 * Pushkey hashes of the access lines, remembered: the same phones get notification after
 * notification, and a SHA-256 per device and line was a measurable part of a notify. Bounded; past
 * it the memory starts over.
 */
const pushkeyHashes = new Map<string, string>()
const PUSHKEY_HASHES_KEPT = 16_384
function pushkeyHash(pushkey: string): string {
  let hash = pushkeyHashes.get(pushkey)
  if (hash === undefined) {
    if (pushkeyHashes.size >= PUSHKEY_HASHES_KEPT) pushkeyHashes.clear()
    pushkeyHashes.set(pushkey, (hash = tokenHash(pushkey)))
  }
  return hash
}

/** One device of one notification, as its log lines name it. */
export class DeviceLog {
  #hash: string | undefined
  selector: string | undefined
  /** Not stored here (rather than forgotten after a PNM 404). */
  unknown = false
  constructor(
    readonly reqId: string,
    readonly device: Device,
    readonly eventId: string | undefined,
  ) {}

  get pushkey(): string {
    return (this.#hash ??= pushkeyHash(this.device.pushkey))
  }

  /** The fields of a line of its own about this device. */
  fields(extra?: Record<string, unknown>): Record<string, unknown> {
    return { req_id: this.reqId, app_id: this.device.app_id, pushkey: this.pushkey, event_id: this.eventId, selector: this.selector, ...extra }
  }

  /** This device in the access line. */
  entry(outcome: DeviceOutcome) {
    return { app_id: this.device.app_id, pushkey: this.pushkey, selector: this.selector, outcome }
  }
}

/**
 * A notify's part of its access line: the event, each device's outcome (the first
 * LOGGED_DEVICES of them, then counts per outcome), and how many pushkeys are not stored here.
 */
export function notifyAccessFields(eventId: string | undefined, devices: DeviceLog[], outcomes: DeviceOutcome[]): Record<string, unknown> {
  const fields: Record<string, unknown> = { event_id: eventId }
  const shown = Math.min(devices.length, LOGGED_DEVICES)
  const entries = new Array(shown)
  for (let i = 0; i < shown; i++) entries[i] = devices[i]!.entry(outcomes[i]!)
  fields.devices = entries
  if (devices.length > shown) {
    const counts: Record<string, number> = {}
    for (const o of outcomes) counts[o] = (counts[o] ?? 0) + 1
    fields.outcomes = counts
    fields.devices_not_listed = devices.length - shown
  }
  let unknown = 0
  for (const d of devices) if (d.unknown) unknown++
  if (unknown > 0) fields.unknown_pushkeys = unknown
  return fields
}

export interface NotifyDeps {
  config: Pick<Config, 'pnmVerb' | 'fallbackText' | 'pnmTimeoutMs'>
  store: TokenStore
  pnm: PnmClient
  dedupe: DuplicateFilter
  journal?: DeliveryJournal
  migrator?: PusherMigrator
  log: Logger
  metrics: Metrics
  now: () => number
  sleep?: (ms: number) => Promise<void>
  deadlineMs?: number
  retryDelaysMs?: readonly number[]
  /** Messaging on: the fetch's view of the message (Id, UserName, ThreadId, text) for the push. */
  pushView?: PushViewLookup
}

export function createNotifyHandler(deps: NotifyDeps) {
  const sleep = deps.sleep ?? ((ms: number) => Bun.sleep(ms))
  const retryDelays = deps.retryDelaysMs ?? PNM_RETRY_DELAYS_MS
  // A retry from Synapse can arrive while the first try is still with the PNM: it waits for that one.
  const inflight = new Map<string, Promise<DeviceOutcome>>()

  const { log } = deps
  const debug = () => log.isLevelEnabled('debug')
  // Label children looked up once: prom-client validates and hashes the labels on every inc().
  const outcomeCounter = new Map<DeviceOutcome, { inc(): void }>()
  const countOutcome = (outcome: DeviceOutcome) => {
    let child = outcomeCounter.get(outcome)
    if (!child) outcomeCounter.set(outcome, (child = deps.metrics.notifications.labels({ outcome })))
    child.inc()
  }
  const answerCounter = new Map<string, { inc(): void }>()
  const countAnswer = (status: string) => {
    let child = answerCounter.get(status)
    if (!child) {
      child = deps.metrics.pnmAnswers.labels({ status })
      // Statuses are the PNM's to choose: only the first few dozen get a cached child.
      if (answerCounter.size < 64) answerCounter.set(status, child)
    }
    child.inc()
  }

  /** The account a pusher's data names, when it names one. */
  const selectorOf = (device: Device): string | undefined => {
    const value = device.data?.[SELECTOR_DATA_KEY]
    return typeof value === 'string' && value !== '' ? value : undefined
  }

  async function deliver(
    request: ReturnType<typeof translateNotification>,
    deadline: number,
    dlog: DeviceLog,
    trace: { status?: number },
  ): Promise<PnmOutcome | 'overloaded'> {
    let outcome: PnmOutcome = { kind: 'transient', detail: 'no attempt made before the deadline' }
    for (let attempt = 0; attempt <= retryDelays.length; attempt++) {
      if (attempt > 0) {
        const pause = retryDelays[attempt - 1]!
        if (deps.now() + pause >= deadline) break
        await sleep(pause)
      }
      const remaining = deadline - deps.now()
      if (remaining <= 0) break
      const started = performance.now()
      const sending = deps.pnm.send(request, Math.min(deps.config.pnmTimeoutMs, remaining))
      if (sending === undefined) return 'overloaded'
      const answer = await sending
      deps.metrics.pnmDuration.observe((performance.now() - started) / 1000)
      countAnswer(answer.kind === 'answer' ? String(answer.status) : answer.kind)
      trace.status = answer.kind === 'answer' ? answer.status : undefined
      outcome = classifyPnmAnswer(answer, request.DeviceToken)
      if (outcome.kind !== 'transient') return outcome
      log.warn(dlog.fields({ attempt: attempt + 1, detail: outcome.detail }), 'PNM attempt failed')
    }
    return outcome
  }

  async function handleDevice(n: Notification, dlog: DeviceLog, deadline: number): Promise<DeviceOutcome> {
    const { device } = dlog
    const named = selectorOf(device)
    let account
    try {
      account = await (named === undefined ? deps.store.findByPushkey(device.app_id, device.pushkey) : deps.store.findBySelector(device.app_id, device.pushkey, named))
    } catch (e) {
      // Never reject on a database error: a rejection switches the user's pushes off for good.
      log.error(dlog.fields({ err: (e as Error).message }), 'token store unavailable; asking Synapse to retry')
      return 'store_error'
    }
    if (!account || account.tokenMsgs === undefined || account.appIdMsgs === undefined) {
      // With a selector: that account is gone or has another token now; its pusher is stale.
      dlog.selector = named
      // One per device: DEBUG, or a body listing thousands of unknown pushkeys writes thousands of
      // lines. The access line counts them (unknown_pushkeys).
      if (debug()) log.debug(dlog.fields(), 'pushkey not registered here; rejecting it')
      dlog.unknown = true
      return 'rejected'
    }
    dlog.selector = account.selector
    if (named === undefined) deps.migrator?.migrate(device.app_id, device.pushkey)
    const started = performance.now()
    const trace: { status?: number; detail?: string } = {}
    const outcome = await deliverToAccount(n, dlog, account as Account, deadline, trace)
    deps.journal?.record({
      selector: account.selector,
      at: deps.now(),
      eventId: n.event_id ?? undefined,
      outcome,
      pnmStatus: trace.status,
      latencyMs: performance.now() - started,
      detail: trace.detail,
    })
    return outcome
  }

  type Account = { selector: string; tokenMsgs: string; appIdMsgs: string; matrixUserId?: string }

  async function deliverToAccount(
    n: Notification,
    dlog: DeviceLog,
    account: Account,
    deadline: number,
    trace: { status?: number; detail?: string },
  ): Promise<DeviceOutcome> {
    const { device } = dlog
    if (isBadgeOnly(n)) {
      if (debug()) log.debug(dlog.fields({ unread: n.counts?.unread }), 'badge-only update; nothing sent to the phone')
      return 'badge_only'
    }
    const eventId = n.event_id!
    const dedupeKey = duplicateKey(device.pushkey, account.selector)
    let claim
    try {
      // Taken before the PNM call: a retry reaching another instance meanwhile sends nothing.
      const pending = deps.dedupe.claim(dedupeKey, eventId)
      claim = typeof pending === 'string' ? pending : await pending
    } catch (e) {
      log.error(dlog.fields({ err: (e as Error).message }), 'duplicate filter unavailable; asking Synapse to retry')
      return 'store_error'
    }
    if (claim === 'duplicate') {
      if (debug()) log.debug(dlog.fields(), 'event already delivered to this device; not sent again')
      return 'duplicate'
    }
    if (claim === 'elsewhere') {
      if (debug()) log.debug(dlog.fields(), 'another instance is sending this event to this device now; asking Synapse to retry')
      return 'sending_elsewhere'
    }
    const outcome = await sendClaimed(
      n,
      dlog,
      { selector: account.selector, appId: account.appIdMsgs, token: account.tokenMsgs, userId: account.matrixUserId },
      deadline,
      trace,
    )
    try {
      // Awaited only when the filter answers with a promise: the in-process one costs no await.
      const recorded = outcome === 'delivered' ? deps.dedupe.delivered(dedupeKey, eventId) : deps.dedupe.release(dedupeKey, eventId)
      if (recorded) await recorded
    } catch (e) {
      log.error(dlog.fields({ err: (e as Error).message }), 'could not record the outcome in the duplicate filter; its claim runs out by itself')
    }
    return outcome
  }

  async function sendClaimed(
    n: Notification,
    dlog: DeviceLog,
    /** userId: undefined for a row imported from the Go proxy until the app reports again. */
    account: { selector: string; appId: string; token: string; userId: string | undefined },
    deadline: number,
    trace: { status?: number; detail?: string },
  ): Promise<DeviceOutcome> {
    const { device } = dlog
    let request = translateNotification(n, device, account, { verb: deps.config.pnmVerb, fallbackText: deps.config.fallbackText })
    if (deps.pushView && account.userId !== undefined) {
      const sender = typeof n.sender === 'string' && n.sender !== '' ? n.sender : undefined
      const view = await deps.pushView(account.userId, n.event_id!, n.room_id ?? undefined, log, dlog.fields(), sender).catch(() => undefined)
      if (view) request = applyPushView(request, view, typeof n.content?.body === 'string')
    }
    const outcome = await deliver(request, deadline, dlog, trace)
    if (outcome !== 'overloaded' && outcome.kind !== 'delivered') trace.detail = outcome.detail
    if (outcome === 'overloaded') {
      log.warn(dlog.fields(), 'too many PNM requests in flight (PNM_MAX_INFLIGHT); asking Synapse to retry')
      return 'overloaded'
    }
    switch (outcome.kind) {
      case 'delivered':
        return 'delivered'
      case 'token_invalid':
        log.info(dlog.fields({ detail: outcome.detail }), 'PNM no longer knows this device token; rejecting and forgetting it')
        try {
          await deps.store.forgetPushkey(device.app_id, device.pushkey, deps.now())
        } catch (e) {
          log.error(dlog.fields({ err: (e as Error).message }), 'could not forget the invalid token')
        }
        return 'rejected'
      case 'bad_request':
        log.error(dlog.fields({ detail: outcome.detail }), 'PNM refused the request; the notification is dropped')
        return 'dropped'
      case 'transient':
        log.error(dlog.fields({ detail: outcome.detail }), 'PNM delivery failed; Synapse will retry')
        return 'failed'
    }
  }

  function handleDeviceOnce(n: Notification, dlog: DeviceLog, deadline: number): Promise<DeviceOutcome> {
    if (isBadgeOnly(n)) return handleDevice(n, dlog, deadline)
    const { device } = dlog
    const key = `${n.event_id}\u0000${device.app_id}\u0000${device.pushkey}\u0000${selectorOf(device) ?? ''}`
    const running = inflight.get(key)
    if (running) return running.then((o) => (o === 'delivered' ? 'duplicate' : o))
    const started = handleDevice(n, dlog, deadline).finally(() => inflight.delete(key))
    inflight.set(key, started)
    return started
  }

  /** Returns the pushkeys to reject, or throws the 5xx that makes Synapse retry. */
  return async function notify(n: Notification, request: RequestRecord): Promise<{ rejected: string[] }> {
    const deadline = deps.now() + (deps.deadlineMs ?? NOTIFY_DEADLINE_MS)
    const eventId = n.event_id ?? undefined
    const devices = n.devices.map((d) => new DeviceLog(request.id, d, eventId))
    const outcomes = await Promise.all(devices.map((d) => handleDeviceOnce(n, d, deadline)))
    for (const outcome of outcomes) countOutcome(outcome)
    if (log.isLevelEnabled('info')) request.fields = notifyAccessFields(eventId, devices, outcomes)
    const rejected = n.devices.filter((_, i) => outcomes[i] === 'rejected').map((d) => d.pushkey)
    let failure: AppError | undefined
    if (outcomes.includes('failed')) failure = badGateway('The push notification service did not accept the notification; retry later')
    else if (outcomes.includes('overloaded')) failure = unavailable('Too many push notifications in flight; retry later', 1)
    else if (outcomes.includes('store_error')) failure = unavailable('Token store unavailable; retry later', 1)
    else if (outcomes.includes('sending_elsewhere')) failure = unavailable('This notification is being delivered by another instance; retry later', 1)
    if (failure) throw failure
    return { rejected }
  }
}
