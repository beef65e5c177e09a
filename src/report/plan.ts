/**
 * Which pusher calls a change of an account owes the homeserver. Pure.
 * A message token that changes, moves to another user or disappears leaves a pusher behind on
 * Synapse unless it is deleted (`kind: null`, which removes only the acting user's pusher for that
 * token, so another account on the same phone keeps its own); every report with a token registers
 * it again, which also heals a homeserver that lost it. A row imported from the Go proxy has no
 * Matrix user: there is no pusher of ours to delete for it.
 */
import type { PusherOp, PusherPlanner, Registration } from '../store/types.ts'

const pusherOf = (r: Registration | undefined) =>
  r?.tokenMsgs !== undefined && r.appIdMsgs !== undefined && r.matrixUserId !== undefined
    ? { userId: r.matrixUserId, appId: r.appIdMsgs, pushkey: r.tokenMsgs }
    : undefined

export function planPusherCalls(enabled: boolean): PusherPlanner {
  return (previous, next, sharing) => {
    if (!enabled) return []
    const before = pusherOf(previous)
    const after = pusherOf(next)
    const ops: PusherOp[] = []
    const same =
      before !== undefined && after !== undefined && before.userId === after.userId && before.appId === after.appId && before.pushkey === after.pushkey
    if (before && !same) {
      // Synapse keeps one pusher per (user, app id, token): when another account of the same user
      // still has this token, the pusher stays and names that account instead of being deleted.
      const other = sharing?.(before.userId, before.appId, before.pushkey, previous!.selector)
      if (other) ops.push({ action: 'set', ...before, selector: other.selector })
      else ops.push({ action: 'delete', ...before })
    }
    if (after) ops.push({ action: 'set', ...after })
    return ops
  }
}
