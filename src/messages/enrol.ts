/**
 * Enrolment: a local user who reported a push token or authenticated a fetch gets their messages
 * indexed from then on, and a durable catch-up job (their rooms, members, recent messages). Never
 * the appservice's own sender user.
 */
import type { Logger } from 'pino'
import type { MessageIndex } from './index-store.ts'

export function createEnrolment(deps: { index: MessageIndex; senderUserId: () => string | undefined; now: () => number; afterQueue?: () => void }) {
  return async function enrol(userId: string, log: Logger): Promise<void> {
    if (userId === deps.senderUserId()) return
    if (await deps.index.isEnrolled(userId)) return
    const now = deps.now()
    const fresh = await deps.index.write(async (tx) => {
      if (!(await tx.enrol(userId, now))) return false
      await tx.queueJob('catchup', userId, '', now)
      return true
    })
    if (fresh) {
      log.info({ user_id: userId }, 'user enrolled for messaging; catch-up queued')
      deps.afterQueue?.()
    }
  }
}
