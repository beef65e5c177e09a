/**
 * Queues an account's pusher `set` again without changing the account: `pushers sync` does it for
 * every row, and the notify gateway for the accounts of a pusher registered before pushers named
 * their account (gateway/migrate-pushers.ts). Saving the row unchanged makes the planner queue its
 * `set`; `now` is the row's own time, so updated_at still tells when the app last reported
 * (findByPushkey prefers the latest). A report that changed the row since it was read wins:
 * throwing rolls the save back.
 */
import { planPusherCalls } from '../report/plan.ts'
import { constantTimeEqual } from '../secrets.ts'
import type { PusherJob, Registration, TokenStore } from '../store/types.ts'

class ChangedMeanwhile extends Error {}

const sameSecret = (a: string | undefined, b: string | undefined) => (a === undefined || b === undefined ? a === b : constantTimeEqual(a, b))

const sameRow = (a: Registration | undefined, b: Registration) =>
  a !== undefined &&
  a.updatedAt === b.updatedAt &&
  a.matrixUserId === b.matrixUserId &&
  sameSecret(a.tokenMsgs, b.tokenMsgs) &&
  a.appIdMsgs === b.appIdMsgs

/** The `set` jobs queued, or 'changed' when a report changed the row meanwhile; rows without a Matrix user or token queue nothing. */
export async function requeuePusher(store: TokenStore, r: Registration): Promise<PusherJob[] | 'changed'> {
  if (r.matrixUserId === undefined || r.tokenMsgs === undefined || r.appIdMsgs === undefined) return []
  const plan = planPusherCalls(true)
  try {
    const { jobs } = await store.saveRegistration({ ...r, matrixUserId: r.matrixUserId }, r.updatedAt, (previous, next, sharing) => {
      if (!sameRow(previous, r)) throw new ChangedMeanwhile()
      return plan(previous, next, sharing)
    })
    return jobs.filter((j) => j.action === 'set')
  } catch (e) {
    if (e instanceof ChangedMeanwhile) return 'changed'
    throw e
  }
}
