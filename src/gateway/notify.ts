/**
 * What happens to a notification from Synapse: each device is looked up, translated and sent to
 * the PNM in parallel; the answer to Synapse lists the pushkeys to reject, or is a 5xx when a
 * retry later can still deliver (Synapse then backs off and tries again).
 * A device is an account: its pusher's `data.selector` (echoed by Synapse) names it among the
 * accounts sharing one phone's token; a pusher without one (registered before, or by the Go
 * proxy) is looked up by token alone and registered again in the background. Each account's
 * outcome goes to the delivery journal, which is written later, off this path.
 */
import type { Logger } from 'pino'
import type { Config } from '../config.ts'
import { AppError, badGateway, unavailable } from '../errors.ts'
import type { PnmClient } from '../pnm/client.ts'
import { classifyPnmAnswer, type PnmOutcome } from '../pnm/outcome.ts'
import type { TokenStore } from '../store/types.ts'
import { tokenHash } from '../secrets.ts'
import type { Dedupe } from './dedupe.ts'
import type { DeliveryJournal } from './journal.ts'
import type { PusherMigrator } from './migrate-pushers.ts'
import { SELECTOR_DATA_KEY } from '../pusher/body.ts'
import type { Device, Notification } from './schema.ts'
import { isBadgeOnly, translateNotification } from './translate.ts'
import type { Metrics } from '../metrics.ts'

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

export interface NotifyDeps {
  config: Pick<Config, 'pnmVerb' | 'fallbackText' | 'pnmTimeoutMs'>
  store: TokenStore
  pnm: PnmClient
  dedupe: Dedupe
  journal?: DeliveryJournal
  migrator?: PusherMigrator
  log: Logger
  metrics: Metrics
  now: () => number
  sleep?: (ms: number) => Promise<void>
  deadlineMs?: number
  retryDelaysMs?: readonly number[]
}

export function createNotifyHandler(deps: NotifyDeps) {
  const sleep = deps.sleep ?? ((ms: number) => Bun.sleep(ms))
  const retryDelays = deps.retryDelaysMs ?? PNM_RETRY_DELAYS_MS
  // A retry from Synapse can arrive while the first try is still with the PNM: it waits for that one.
  const inflight = new Map<string, Promise<DeviceOutcome>>()

  /** The account a pusher's data names, when it names one. */
  const selectorOf = (device: Device): string | undefined => {
    const value = device.data?.[SELECTOR_DATA_KEY]
    return typeof value === 'string' && value !== '' ? value : undefined
  }

  async function deliver(
    request: ReturnType<typeof translateNotification>,
    deadline: number,
    log: Logger,
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
      deps.metrics.pnmInflight.inc()
      const answer = await sending.finally(() => deps.metrics.pnmInflight.dec())
      deps.metrics.pnmDuration.observe((performance.now() - started) / 1000)
      deps.metrics.pnmAnswers.inc({ status: answer.kind === 'answer' ? String(answer.status) : answer.kind })
      trace.status = answer.kind === 'answer' ? answer.status : undefined
      outcome = classifyPnmAnswer(answer)
      if (outcome.kind !== 'transient') return outcome
      log.warn({ attempt: attempt + 1, detail: outcome.detail }, 'PNM attempt failed')
    }
    return outcome
  }

  async function handleDevice(n: Notification, device: Device, deadline: number, log: Logger): Promise<DeviceOutcome> {
    const dlog = log.child({ app_id: device.app_id, pushkey: tokenHash(device.pushkey), event_id: n.event_id ?? undefined })
    const named = selectorOf(device)
    let account
    try {
      account = await (named === undefined ? deps.store.findByPushkey(device.app_id, device.pushkey) : deps.store.findBySelector(device.app_id, device.pushkey, named))
    } catch (e) {
      // Never reject on a database error: a rejection switches the user's pushes off for good.
      dlog.error({ err: (e as Error).message }, 'token store unavailable; asking Synapse to retry')
      return 'store_error'
    }
    if (!account || account.tokenMsgs === undefined || account.appIdMsgs === undefined) {
      // With a selector: that account is gone or has another token now; its pusher is stale.
      dlog.info({ selector: named }, 'pushkey not registered here; rejecting it')
      return 'rejected'
    }
    if (named === undefined) deps.migrator?.migrate(device.app_id, device.pushkey)
    const started = performance.now()
    const trace: { status?: number; detail?: string } = {}
    const outcome = await deliverToAccount(n, device, account as Account, deadline, dlog, trace)
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

  type Account = { selector: string; tokenMsgs: string; appIdMsgs: string }

  async function deliverToAccount(
    n: Notification,
    device: Device,
    account: Account,
    deadline: number,
    dlog: Logger,
    trace: { status?: number; detail?: string },
  ): Promise<DeviceOutcome> {
    if (isBadgeOnly(n)) {
      dlog.debug({ unread: n.counts?.unread }, 'badge-only update; nothing sent to the phone')
      return 'badge_only'
    }
    const eventId = n.event_id!
    // Two accounts on one phone share its token and may get the same event (a room they are both
    // in): each account's push is its own.
    const dedupeKey = `${device.pushkey}\u0000${account.selector}`
    if (deps.dedupe.seen(dedupeKey, eventId)) {
      dlog.info('event already delivered to this device; not sent again')
      return 'duplicate'
    }
    const request = translateNotification(
      n,
      device,
      { selector: account.selector, appId: account.appIdMsgs, token: account.tokenMsgs },
      { verb: deps.config.pnmVerb, fallbackText: deps.config.fallbackText },
    )
    const outcome = await deliver(request, deadline, dlog, trace)
    if (outcome !== 'overloaded' && outcome.kind !== 'delivered') trace.detail = outcome.detail
    if (outcome === 'overloaded') {
      dlog.warn('too many PNM requests in flight (PNM_MAX_INFLIGHT); asking Synapse to retry')
      return 'overloaded'
    }
    switch (outcome.kind) {
      case 'delivered':
        deps.dedupe.remember(dedupeKey, eventId)
        dlog.info({ selector: account.selector }, 'delivered to PNM')
        return 'delivered'
      case 'token_invalid':
        dlog.info({ detail: outcome.detail }, 'PNM no longer knows this device token; rejecting and forgetting it')
        try {
          await deps.store.forgetPushkey(device.app_id, device.pushkey, deps.now())
        } catch (e) {
          dlog.error({ err: (e as Error).message }, 'could not forget the invalid token')
        }
        return 'rejected'
      case 'bad_request':
        dlog.error({ detail: outcome.detail }, 'PNM refused the request; the notification is dropped')
        return 'dropped'
      case 'transient':
        dlog.error({ detail: outcome.detail }, 'PNM delivery failed; Synapse will retry')
        return 'failed'
    }
  }

  function handleDeviceOnce(n: Notification, device: Device, deadline: number, log: Logger): Promise<DeviceOutcome> {
    if (isBadgeOnly(n)) return handleDevice(n, device, deadline, log)
    const key = `${n.event_id}\u0000${device.app_id}\u0000${device.pushkey}\u0000${selectorOf(device) ?? ''}`
    const running = inflight.get(key)
    if (running) return running.then((o) => (o === 'delivered' ? 'duplicate' : o))
    const started = handleDevice(n, device, deadline, log).finally(() => inflight.delete(key))
    inflight.set(key, started)
    return started
  }

  /** Returns the pushkeys to reject, or throws the 5xx that makes Synapse retry. */
  return async function notify(n: Notification, log: Logger): Promise<{ rejected: string[] }> {
    const deadline = deps.now() + (deps.deadlineMs ?? NOTIFY_DEADLINE_MS)
    const outcomes = await Promise.all(n.devices.map((d) => handleDeviceOnce(n, d, deadline, log)))
    for (const outcome of outcomes) deps.metrics.notifications.inc({ outcome })
    const rejected = n.devices.filter((_, i) => outcomes[i] === 'rejected').map((d) => d.pushkey)
    let failure: AppError | undefined
    if (outcomes.includes('failed')) failure = badGateway('The push notification service did not accept the notification; retry later')
    else if (outcomes.includes('overloaded')) failure = unavailable('Too many push notifications in flight; retry later', 1)
    else if (outcomes.includes('store_error')) failure = unavailable('Token store unavailable; retry later', 1)
    if (failure) throw failure
    return { rejected }
  }
}
