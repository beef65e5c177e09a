/**
 * Carries out the pusher calls the store has queued (the outbox), in order per account, and retries
 * the failed ones in the background: first retry within 5 s, then doubling, at most 10 min apart,
 * longer when the homeserver asks for it (429 retry_after_ms). The queue lives in the database, so
 * a restart resumes it; a newer report for the same account replaces what is still pending.
 */
import type { Logger } from 'pino'
import type { Config } from '../config.ts'
import { MatrixError, type MatrixClient } from '../matrix/client.ts'
import type { Metrics } from '../metrics.ts'
import { tokenHash } from '../secrets.ts'
import type { PusherJob, TokenStore } from '../store/types.ts'
import { pusherBody } from './body.ts'

export interface PusherWorkerOptions {
  store: TokenStore
  matrix?: MatrixClient
  config: Pick<Config, 'pushGatewayUrl' | 'pusherFormat' | 'matrixTimeoutMs'>
  log: Logger
  metrics: Metrics
  now: () => number
  retryBaseMs?: number
  retryMaxMs?: number
  /** How often other processes' jobs on a shared database are looked for. */
  pollMs?: number
}

export interface PusherWorker {
  /**
   * Runs the due jobs of one account now, in order; resolves when none is left or one failed.
   * `reqId`: the report that asked, named in the lines of these jobs.
   */
  runSelector(selector: string, reqId?: string): Promise<void>
  start(): void
  /** Re-arms the timer for the earliest pending job. */
  wake(): void
  stop(): Promise<void>
}

const HINT_NAMESPACE =
  'the appservice registration must have a users namespace regex matching this user (exclusive: false), and the user must exist'

/** Delay before the next try: 5 s, 10 s, 20 s … capped; never shorter than the homeserver asked. */
export function retryDelay(attempts: number, error: unknown, baseMs: number, maxMs: number): number {
  let delay = Math.min(maxMs, baseMs * 2 ** Math.min(attempts, 30))
  if (error instanceof MatrixError) {
    if (error.retryAfterMs !== undefined) delay = Math.max(delay, Math.min(error.retryAfterMs, 24 * 3600_000))
    // A refusal will not change in seconds: wait at least a minute so the log is not flooded.
    else if (!error.isTransient) delay = Math.max(delay, Math.min(maxMs, 60_000))
  }
  return delay
}

export function createPusherWorker(o: PusherWorkerOptions): PusherWorker {
  const baseMs = o.retryBaseMs ?? 5_000
  const maxMs = o.retryMaxMs ?? 600_000
  const pollMs = o.pollMs ?? 30_000
  const leaseMs = o.config.matrixTimeoutMs + 30_000
  const chains = new Map<string, Promise<void>>()
  let timer: ReturnType<typeof setTimeout> | undefined
  let running = false
  let stopped = false

  async function execute(job: PusherJob, reqId: string | undefined): Promise<boolean> {
    const jlog = o.log.child({
      req_id: reqId,
      selector: job.selector,
      user_id: job.userId,
      app_id: job.appId,
      pushkey: tokenHash(job.pushkey),
      action: job.action,
      attempt: job.attempts + 1,
    })
    try {
      if (!o.matrix || !o.config.pushGatewayUrl) throw new MatrixError('http', 'homeserver or PROXY_URL not configured', 503)
      await o.matrix.setPusher(job.userId, pusherBody(job, o.config.pushGatewayUrl, o.config.pusherFormat))
      await o.store.completeJob(job.id)
      o.metrics.pusherRegistrations.inc({ action: job.action, outcome: 'ok' })
      jlog.info(job.action === 'set' ? 'pusher registered' : 'pusher deleted')
      return true
    } catch (e) {
      const delay = retryDelay(job.attempts, e, baseMs, maxMs)
      const err = e as Error
      const fields = {
        errcode: e instanceof MatrixError ? e.errcode : undefined,
        status: e instanceof MatrixError ? e.status : undefined,
        err: err.message,
        retry_in_ms: delay,
        hint: e instanceof MatrixError && e.isNamespaceProblem ? HINT_NAMESPACE : undefined,
      }
      o.metrics.pusherRegistrations.inc({ action: job.action, outcome: 'failed' })
      jlog.warn(fields, `pusher ${job.action} failed; will retry`)
      try {
        await o.store.rescheduleJob(job.id, o.now() + delay, err.message.slice(0, 500))
      } catch (dbError) {
        // The lease runs out and another pass picks the job up again.
        jlog.error({ err: (dbError as Error).message }, 'could not reschedule the pusher job')
      }
      return false
    }
  }

  async function drainSelector(selector: string, reqId: string | undefined) {
    for (;;) {
      const job = await o.store.claimNextJob(selector, o.now(), leaseMs)
      if (!job || !(await execute(job, reqId))) return
    }
  }

  function runSelector(selector: string, reqId?: string): Promise<void> {
    const previous = chains.get(selector) ?? Promise.resolve()
    const next = previous
      .then(() => drainSelector(selector, reqId))
      .catch((e) => o.log.error({ req_id: reqId, selector, err: (e as Error).message }, 'pusher jobs could not run'))
      .finally(() => {
        if (chains.get(selector) === next) chains.delete(selector)
        wake()
      })
    chains.set(selector, next)
    return next
  }

  async function tick() {
    timer = undefined
    if (running || stopped) return
    running = true
    try {
      await Promise.all((await o.store.dueSelectors(o.now(), 32)).map((selector) => runSelector(selector)))
    } catch (e) {
      o.log.error({ err: (e as Error).message }, 'pusher queue unavailable; will look again')
    } finally {
      running = false
      wake()
    }
  }

  /** Arms the timer once the store has said when the next job is due; callers do not wait for it. */
  function wake() {
    void arm()
  }

  async function arm() {
    if (stopped || running) return
    let due: number | undefined
    try {
      due = await o.store.nextJobDue()
    } catch {
      due = undefined
    }
    // Stopped, or a pass began, while the store answered: that pass arms the timer when it ends.
    if (stopped || running) return
    const delay = Math.max(0, Math.min(pollMs, (due ?? Infinity) - o.now()))
    if (timer) clearTimeout(timer)
    timer = setTimeout(tick, delay)
    timer.unref?.()
  }

  return {
    runSelector,
    start() {
      stopped = false
      wake()
    },
    wake,
    async stop() {
      stopped = true
      if (timer) clearTimeout(timer)
      await Promise.allSettled([...chains.values()])
    },
  }
}
