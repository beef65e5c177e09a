/**
 * The commands change pushers the same way the service does: through the store's outbox and the
 * pusher worker, never by calling the homeserver themselves. This runs an account's queued calls
 * once, now, and tells what became of them.
 */
import type { Config } from '../config.ts'
import { createMatrixClient } from '../matrix/client.ts'
import { createMetrics } from '../metrics.ts'
import { createPusherWorker, type PusherWorker } from '../pusher/worker.ts'
import type { PusherJob, TokenStore } from '../store/types.ts'
import { commandLogger } from './common.ts'

export type Settled = { ok: true } | { ok: false; error: string; queued: PusherJob[] }

export async function createCommandWorker(config: Config, store: TokenStore): Promise<PusherWorker> {
  const matrix =
    config.homeserverUrl === undefined
      ? undefined
      : createMatrixClient({ homeserverUrl: config.homeserverUrl, asToken: config.asToken, timeoutMs: config.matrixTimeoutMs })
  const worker = createPusherWorker({ store, matrix, config, log: commandLogger(config), metrics: createMetrics(), now: Date.now })
  // Stopped from the start: runSelector still runs the jobs asked for, but no background timer
  // picks up other accounts' jobs, which belong to the running service.
  await worker.stop()
  return worker
}

/**
 * Runs the selector's due jobs once and reports on `jobIds`. A job another process holds (the
 * running service works on the same account) is waited for, up to one homeserver timeout.
 */
export async function settle(
  worker: PusherWorker,
  store: TokenStore,
  config: Pick<Config, 'matrixTimeoutMs'>,
  selector: string,
  jobIds: readonly number[],
): Promise<Settled> {
  const deadline = Date.now() + config.matrixTimeoutMs + 5_000
  for (;;) {
    await worker.runSelector(selector)
    const ids = new Set(jobIds)
    const ofSelector = (await store.pendingJobs()).filter((j) => j.selector === selector)
    const left = ofSelector.filter((j) => ids.has(j.id))
    if (left.length === 0) return { ok: true }
    const failed = left.find((j) => j.lastError !== undefined)
    if (failed) return { ok: false, error: failed.lastError!, queued: left }
    // Calls of one account run in order: an earlier one waiting for its retry holds ours back.
    const head = ofSelector[0]!
    if (!ids.has(head.id) && head.nextAttemptAt > Date.now()) {
      return { ok: false, error: `queued behind an earlier pusher call that failed: ${head.lastError ?? 'waiting for its retry'}`, queued: left }
    }
    if (Date.now() > deadline) return { ok: false, error: 'not tried: another process holds this account\'s pusher calls', queued: left }
    await Bun.sleep(200)
  }
}

/** Synapse's 403 for a user outside the namespace or unknown to it: name the fix. */
export function hintFor(error: string): string | undefined {
  if (/masquerade/i.test(error)) return "the appservice registration's users namespace does not match this user (run `matrix2acrobits check`)"
  if (/has not registered/i.test(error)) return 'the homeserver has no such user'
  if (/M_UNKNOWN_TOKEN|401/.test(error)) return 'the homeserver does not know MATRIX_AS_TOKEN (run `matrix2acrobits check`)'
  return undefined
}
