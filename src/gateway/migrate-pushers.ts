/**
 * Pushers registered before they named their account (`data.selector`), by an older release or
 * by the Go proxy, arrive without a selector: notify finds the account by pushkey alone, and hands
 * the pushkey here. Once per pushkey and process, after the notification was answered, every
 * account stored for that token is registered again (append: true, with its selector), so an old
 * installation migrates by itself, and a second account on the phone, whose pusher `append: false`
 * had removed, gets its own again. Rows without a Matrix user (imported from the Go proxy) wait
 * for their app's next report.
 */
import type { Logger } from 'pino'
import { requeuePusher } from '../pusher/requeue.ts'
import type { PusherWorker } from '../pusher/worker.ts'
import { tokenHash } from '../secrets.ts'
import type { TokenStore } from '../store/types.ts'

/** Pushkeys remembered as done; past it the memory starts over (a repeat costs one more set). */
const MAX_REMEMBERED = 100_000

export interface PusherMigrator {
  /** Called from the notify path: remembers the pushkey and defers the work. */
  migrate(appId: string, pushkey: string): void
}

export function createPusherMigrator(o: { store: TokenStore; worker: PusherWorker; log: Logger; enabled: boolean }): PusherMigrator {
  const done = new Set<string>()

  async function run(appId: string, pushkey: string) {
    try {
      const selectors: string[] = []
      for (const row of await o.store.listByPushkey(appId, pushkey)) {
        const jobs = await requeuePusher(o.store, row)
        if (jobs !== 'changed' && jobs.length > 0) selectors.push(row.selector)
      }
      if (selectors.length === 0) return
      o.log.info({ app_id: appId, pushkey: tokenHash(pushkey), selectors }, 'pusher registered before pushers named their account; registering it again with its selector')
      for (const selector of selectors) void o.worker.runSelector(selector)
    } catch (e) {
      // Not remembered as done: the next notification for this pushkey tries again.
      done.delete(`${appId}\u0000${pushkey}`)
      o.log.warn({ app_id: appId, pushkey: tokenHash(pushkey), err: (e as Error).message }, 'could not queue the pusher migration; will try at the next notification')
    }
  }

  return {
    migrate(appId, pushkey) {
      if (!o.enabled) return
      const key = `${appId}\u0000${pushkey}`
      if (done.has(key)) return
      if (done.size >= MAX_REMEMBERED) done.clear()
      done.add(key)
      setTimeout(() => void run(appId, pushkey), 0)
    },
  }
}
