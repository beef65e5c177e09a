/**
 * Durable messaging jobs, queued in the index in the same transaction as their cause and retried
 * with backoff until they succeed (they survive a restart):
 * - catchup: a newly enrolled user's rooms (joined, or invited as the stream told us), their
 *   members and names, and the last 50 messages of each room of at most 50 members. A snapshot
 *   never overwrites membership the stream wrote since the job started.
 * - autojoin: AUTO_JOIN_DIRECT accepts a direct-chat invite as the invitee, then records the room
 *   in the invitee's m.direct; never for a room of more than two members.
 * - follow: after an m.room.tombstone, join the replacement room as the member.
 */
import type { Logger } from 'pino'
import type { MatrixClient } from '../matrix/client.ts'
import { MatrixError } from '../matrix/client.ts'
import type { Job, MessageIndex } from './index-store.ts'
import { deliverExisting, ingestEvent, parseClientEvent, serverOf, type ClientEvent, type IngestContext } from './ingest.ts'

export const CATCHUP_MESSAGES = 50
export const CATCHUP_MAX_MEMBERS = 50
const LEASE_MS = 5 * 60_000

export interface JobDeps {
  index: MessageIndex
  matrix: MatrixClient
  log: Logger
  now: () => number
  context: () => Omit<IngestContext, 'now'>
  retryBaseMs?: number
  retryMaxMs?: number
}

export function createJobWorker(deps: JobDeps) {
  const base = deps.retryBaseMs ?? 2_000
  const max = deps.retryMaxMs ?? 3_600_000
  let timer: ReturnType<typeof setTimeout> | undefined
  let running: Promise<void> | undefined
  let stopped = true
  let again = false

  /**
   * Invites the stream never brought (they came before messaging was switched on, or before the
   * registration had a url): read from the homeserver and applied as the invite event would have
   * been, so the room is named and classified and its first messages are the user's once they join.
   * A membership the index already has, from the stream or not, is left as it is.
   */
  async function learnPendingInvites(userId: string) {
    const invites = await deps.matrix.pendingInvites(userId)
    for (const invite of invites) {
      const own = invite.state.find((e) => e.type === 'm.room.member' && e.state_key === userId && e.content.membership === 'invite')
      if (own === undefined) continue
      const event: ClientEvent = {
        // A stripped event has no id: this one only names the snapshot in the log if it is refused.
        event_id: `$pending-invite:${invite.roomId}`,
        room_id: invite.roomId,
        sender: own.sender,
        type: 'm.room.member',
        state_key: userId,
        origin_server_ts: deps.now(),
        content: own.content,
        invite_room_state: invite.state,
      }
      const ctx: IngestContext = { ...deps.context(), now: deps.now() }
      await deps.index.write(async (tx) => {
        if ((await tx.getMember(invite.roomId, userId)) !== undefined) return
        // The inviter's membership comes with the stripped state: the only other member a new
        // direct chat has, which AUTO_JOIN_DIRECT checks before it accepts.
        for (const e of invite.state) {
          const membership = e.content.membership
          if (e.type !== 'm.room.member' || e.state_key === userId || (membership !== 'join' && membership !== 'invite')) continue
          if ((await tx.getMember(invite.roomId, e.state_key)) !== undefined) continue
          const displayName = typeof e.content.displayname === 'string' && e.content.displayname !== '' ? e.content.displayname : undefined
          await tx.setMember({ roomId: invite.roomId, userId: e.state_key, membership, displayName, sinceOrd: await tx.lastOrd(), fromStream: false, updatedAt: ctx.now })
        }
        await ingestEvent(tx, event, ctx, 'stream')
      })
    }
    if (invites.length > 0) deps.log.info({ user_id: userId, invites: invites.length }, 'pending invites read at enrolment')
  }

  /**
   * A room of two that the user's own m.direct does not list is still a direct chat when the
   * invite said so (is_direct, in the history just read) or the peer's m.direct lists it: a phone
   * user's client never wrote an m.direct, the other side's did (Element writes the inviter's).
   * The peer's is read as the peer, for a user of this homeserver only.
   */
  async function markedDirectElsewhere(userId: string, roomId: string, peer: string, history: readonly unknown[]): Promise<boolean> {
    const invitedDirect = history.some((raw) => {
      const e = raw as { type?: unknown; state_key?: unknown; content?: { membership?: unknown; is_direct?: unknown } } | null
      return e?.type === 'm.room.member' && e.content?.membership === 'invite' && e.content.is_direct === true && (e.state_key === userId || e.state_key === peer)
    })
    if (invitedDirect) return true
    const { serverName } = deps.context()
    if (serverName === undefined || serverOf(peer) !== serverName) return false
    // Refused (a user outside the appservice's namespace): not known. A transient failure fails the
    // catch-up, which is tried again.
    const theirs = await deps.matrix.getAccountData(peer, 'm.direct').catch((e) => {
      if (e instanceof MatrixError && !e.isTransient) return undefined
      throw e
    })
    const listed = theirs?.[userId]
    return Array.isArray(listed) && listed.includes(roomId)
  }

  async function catchup(userId: string) {
    const startedAt = deps.now()
    await learnPendingInvites(userId)
    // Direct-chat invites that came before the user enrolled: accepted first, so that their
    // history is part of this catch-up.
    if (deps.context().autoJoinDirect) {
      for (const roomId of await deps.index.roomsWith(userId, 'invite')) {
        await autojoin(userId, roomId).catch((e) => deps.log.warn({ user_id: userId, room_id: roomId, err: (e as Error).message }, 'pending direct-chat invite not accepted'))
      }
    }
    const joined = await deps.matrix.joinedRooms(userId)
    const direct = (await deps.matrix.getAccountData(userId, 'm.direct')) ?? {}
    const directRooms = new Set(Object.values(direct).flatMap((v) => (Array.isArray(v) ? v.filter((r): r is string => typeof r === 'string') : [])))
    for (const roomId of joined) {
      const members = await deps.matrix.joinedMembers(userId, roomId)
      const name = await deps.matrix.stateEvent(userId, roomId, 'm.room.name').catch(() => undefined)
      const alias = await deps.matrix.stateEvent(userId, roomId, 'm.room.canonical_alias').catch(() => undefined)
      const ids = Object.keys(members)
      const history =
        ids.length > CATCHUP_MAX_MEMBERS ? [] : (await deps.matrix.roomMessages(userId, roomId, { dir: 'b', limit: CATCHUP_MESSAGES })).chunk
      const peer = ids.length === 2 ? ids.find((id) => id !== userId) : undefined
      const isDirect = directRooms.has(roomId) || (peer !== undefined && (await markedDirectElsewhere(userId, roomId, peer, history)))
      const ctx: IngestContext = { ...deps.context(), now: deps.now(), fillFor: userId }
      await deps.index.write(async (tx) => {
        const room = await tx.getRoom(roomId)
        await tx.updateRoom(
          roomId,
          {
            isDirect: (room?.isDirect ?? false) || isDirect,
            name: room?.name ?? (typeof name?.name === 'string' && name.name !== '' ? name.name : undefined),
            canonicalAlias: room?.canonicalAlias ?? (typeof alias?.alias === 'string' ? alias.alias : undefined),
          },
          ctx.now,
        )
        for (const [memberId, profile] of Object.entries(members)) {
          const known = await tx.getMember(roomId, memberId)
          // The stream always wins over an older snapshot.
          if (known && (known.fromStream || known.updatedAt >= startedAt)) continue
          await tx.setMember({
            roomId,
            userId: memberId,
            membership: 'join',
            displayName: profile.display_name ?? undefined,
            sinceOrd: known?.sinceOrd ?? 0,
            fromStream: false,
            updatedAt: startedAt,
          })
        }
        // Newest first from /messages: stored oldest first, so deliveries keep the room's order.
        for (const raw of [...history].reverse()) {
          const parsed = parseClientEvent(raw)
          if (!parsed.ok) continue
          await deps.index.savepoint(tx, async () => {
            await ingestEvent(tx, parsed.event, ctx, 'catchup')
            await deliverExisting(tx, userId, parsed.event.event_id, ctx)
          }).catch((e) => {
            if (deps.index.isStoreFailure(e)) throw e
          })
        }
      })
    }
    await deps.index.write((tx) => tx.markCaughtUp(userId, deps.now()))
    deps.log.info({ user_id: userId, rooms: joined.length }, 'enrolment catch-up done')
  }

  async function autojoin(userId: string, roomId: string) {
    const members = await deps.index.members(roomId)
    const present = members.filter((m) => m.membership === 'join' || m.membership === 'invite')
    if (present.length > 2) {
      deps.log.info({ user_id: userId, room_id: roomId, members: present.length }, 'direct-chat invite not accepted: the room has more than two members')
      return
    }
    const membership = members.find((m) => m.userId === userId)?.membership
    if (membership !== 'invite') return
    const room = (await deps.index.rooms([roomId])).get(roomId)
    const peer0 = present.find((m) => m.userId !== userId)?.userId
    const { senderUserId, serverName } = deps.context()
    // Only direct chats offered by a local user, never by the appservice's own user.
    if (!room?.isDirect || peer0 === undefined || peer0 === senderUserId || serverName === undefined || serverOf(peer0) !== serverName) return
    await deps.matrix.join(userId, roomId)
    const peer = present.find((m) => m.userId !== userId)?.userId
    if (peer !== undefined) {
      const direct = (await deps.matrix.getAccountData(userId, 'm.direct')) ?? {}
      const list = Array.isArray(direct[peer]) ? (direct[peer] as unknown[]) : []
      if (!list.includes(roomId)) await deps.matrix.putAccountData(userId, 'm.direct', { ...direct, [peer]: [...list, roomId] })
    }
    deps.log.info({ user_id: userId, room_id: roomId }, 'direct-chat invite accepted (AUTO_JOIN_DIRECT)')
  }

  async function follow(userId: string, roomId: string) {
    await deps.matrix.join(userId, roomId)
    deps.log.info({ user_id: userId, room_id: roomId }, 'followed a room upgrade')
  }

  async function run(job: Job) {
    if (job.kind === 'catchup') return catchup(job.userId)
    if (job.kind === 'autojoin') return autojoin(job.userId, job.roomId)
    return follow(job.userId, job.roomId)
  }

  async function drain() {
    for (;;) {
      if (stopped) return
      const job = await deps.index.claimJob(deps.now(), LEASE_MS)
      if (!job) return
      try {
        await run(job)
        await deps.index.completeJob(job.id)
      } catch (e) {
        const permanent = e instanceof MatrixError && !e.isTransient && job.kind !== 'catchup' && job.attempts >= 5
        if (permanent) {
          deps.log.warn({ job: job.kind, user_id: job.userId, room_id: job.roomId || undefined, err: (e as Error).message }, 'messaging job given up')
          await deps.index.completeJob(job.id)
          continue
        }
        const delay = Math.min(max, base * 2 ** job.attempts)
        deps.log.warn({ job: job.kind, user_id: job.userId, room_id: job.roomId || undefined, attempt: job.attempts + 1, retry_in_ms: delay, err: (e as Error).message }, 'messaging job failed; will retry')
        await deps.index.rescheduleJob(job.id, deps.now() + delay, (e as Error).message)
      }
    }
  }

  // While the index cannot be reached, it is asked again after this long: a job queued before the
  // outage (or by another instance) must not wait for the next transaction to wake the worker.
  const unavailableRetryMs = Math.min(max, base * 8)
  let indexFailed = false

  async function schedule() {
    if (timer) clearTimeout(timer)
    timer = undefined
    if (stopped) return
    const due = await deps.index.nextJobDue().catch(() => {
      indexFailed = true
      return undefined
    })
    const at = indexFailed ? deps.now() + unavailableRetryMs : due
    indexFailed = false
    if (at === undefined) return
    timer = setTimeout(kick, Math.max(0, at - deps.now()))
  }

  function kick() {
    if (stopped) return
    if (running) {
      again = true
      return
    }
    running = drain()
      .catch((e) => {
        indexFailed = true
        deps.log.error({ err: (e as Error).message, retry_in_ms: unavailableRetryMs }, 'messaging jobs: the index is unavailable')
      })
      .then(schedule)
      .finally(() => {
        running = undefined
        if (again) {
          again = false
          kick()
        }
      })
  }

  return {
    start() {
      stopped = false
      kick()
    },
    kick,
    async stop() {
      stopped = true
      if (timer) clearTimeout(timer)
      await running
    },
    /** Resolves when no job is running (for tests). */
    idle: () => running ?? Promise.resolve(),
  }
}

export type JobWorker = ReturnType<typeof createJobWorker>
