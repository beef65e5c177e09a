/**
 * The direct chat a message from the app goes into: found among the rooms the pair already has,
 * or created, never squatted. Candidates are the room the index knows for the pair, then the rooms
 * of both users' `m.direct`; each is re-checked before each send (the sender joined, the peer
 * joined or invited, no third member, not encrypted, not replaced), and the most recently active
 * one that qualifies wins. No deterministic alias (`#alice|bob`) is ever used: anyone could create
 * it first and capture both users' conversation.
 *
 * One lock per pair of users, so concurrent first messages create one room.
 */
import type { Logger } from 'pino'
import type { ClientEvent } from '../matrix/event.ts'
import { MatrixError, type MatrixClient } from '../matrix/client.ts'

export interface DirectChatIndex {
  /** Rooms the index knows as direct chats of these two users, most recently active first. */
  directRooms(userId: string, peer: string): Promise<string[]>
  /** A phone user (enrolled), who has no other client to accept an invite with. */
  isEnrolled(userId: string): Promise<boolean>
}

/** What a room's state says about it as a direct chat of `sender` and `peer`. Pure. */
export function judgeDirectRoom(state: readonly ClientEvent[], sender: string, peer: string) {
  const membership = (user: string) =>
    state.find((e) => e.type === 'm.room.member' && e.state_key === user)?.content.membership as string | undefined
  const others = state.filter(
    (e) =>
      e.type === 'm.room.member' &&
      e.state_key !== sender &&
      e.state_key !== peer &&
      (e.content.membership === 'join' || e.content.membership === 'invite'),
  )
  const peerMembership = membership(peer)
  const reasons: string[] = []
  if (membership(sender) !== 'join') reasons.push('sender not joined')
  if (others.length > 0) reasons.push('third member')
  if (state.some((e) => e.type === 'm.room.encryption')) reasons.push('encrypted')
  if (state.some((e) => e.type === 'm.room.tombstone')) reasons.push('replaced')
  if (peerMembership === 'ban') reasons.push('peer banned')
  const activity = Math.max(0, ...state.map((e) => e.origin_server_ts))
  return {
    ok: reasons.length === 0,
    reasons,
    /** The peer left (or never was there): invite again before sending. */
    peerAbsent: peerMembership !== 'join' && peerMembership !== 'invite',
    activity,
  }
}

/** Adds `room` under `peer` in an m.direct content, keeping every other entry. Pure. */
export function mergeDirect(content: Record<string, unknown> | undefined, peer: string, room: string): Record<string, unknown> | undefined {
  const current = content ?? {}
  const list = Array.isArray(current[peer]) ? (current[peer] as unknown[]) : []
  if (list.includes(room)) return undefined
  return { ...current, [peer]: [...list, room] }
}

/** The room ids an m.direct content lists for `peer`. */
const directList = (content: Record<string, unknown> | undefined, peer: string): string[] => {
  const list = content?.[peer]
  return Array.isArray(list) ? list.filter((r): r is string => typeof r === 'string') : []
}

/** The exact createRoom body of a new direct chat: no alias, no encryption. */
export const directRoomBody = (peer: string) => ({ preset: 'trusted_private_chat', is_direct: true, invite: [peer] })

export class DirectChatError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'DirectChatError'
  }
}

/** The peer is a user of this homeserver that does not exist (or is deactivated). */
export class NoSuchUserError extends Error {
  constructor(readonly userId: string) {
    super(`${userId} is not a user of this homeserver`)
    this.name = 'NoSuchUserError'
  }
}

export function createDirectChats(deps: { matrix: MatrixClient; index: DirectChatIndex; serverName?: string }) {
  const { matrix } = deps
  const locks = new Map<string, Promise<unknown>>()
  /** A user of this homeserver: the proxy can act as them and ask about them without federation. */
  const isLocal = (user: string) => deps.serverName !== undefined && user.endsWith(`:${deps.serverName}`)

  async function withPairLock<T>(a: string, b: string, fn: () => Promise<T>): Promise<T> {
    const key = [a, b].sort().join('\u0000')
    const before = locks.get(key) ?? Promise.resolve()
    const run = before.then(fn, fn)
    const tail = run.catch(() => {})
    locks.set(key, tail)
    try {
      return await run
    } finally {
      if (locks.get(key) === tail) locks.delete(key)
    }
  }

  /** The room's state as the sender; when the sender is only invited, joins first. Undefined: not usable. */
  async function stateAsSender(sender: string, room: string, log: Logger): Promise<ClientEvent[] | undefined> {
    try {
      return await matrix.roomState(sender, room)
    } catch (e) {
      if (!(e instanceof MatrixError) || e.isTransient) throw e
    }
    // Not joined: if invited, the join succeeds; otherwise Synapse refuses and the room is skipped.
    try {
      await matrix.join(sender, room)
      log.info({ room_id: room, user_id: sender }, 'joined a direct chat the sender was invited to')
      return await matrix.roomState(sender, room)
    } catch (e) {
      if (!(e instanceof MatrixError) || e.isTransient) throw e
      return undefined
    }
  }

  async function qualifying(sender: string, peer: string, candidates: string[], log: Logger) {
    const found: Array<{ room: string; activity: number; order: number }> = []
    for (const [order, room] of candidates.entries()) {
      const state = await stateAsSender(sender, room, log)
      if (state === undefined) continue
      const verdict = judgeDirectRoom(state, sender, peer)
      if (!verdict.ok) {
        log.debug({ room_id: room, reasons: verdict.reasons }, 'direct chat candidate skipped')
        continue
      }
      if (verdict.peerAbsent) {
        // Synapse accepts a message into a room the peer has left, and it is lost to them.
        try {
          await matrix.invite(sender, room, peer)
          log.info({ room_id: room, peer }, 'invited the peer back into the direct chat')
        } catch (e) {
          if (!(e instanceof MatrixError) || e.isTransient) throw e
          log.info({ room_id: room, peer, err: e.message }, 'could not invite the peer back; candidate skipped')
          continue
        }
      }
      let activity = verdict.activity
      if (candidates.length > 1) {
        const latest = await matrix.roomMessages(sender, room, { dir: 'b', limit: 1 })
        activity = Math.max(activity, latest.chunk[0]?.origin_server_ts ?? 0)
      }
      found.push({ room, activity, order })
    }
    found.sort((x, y) => y.activity - x.activity || x.order - y.order)
    return found[0]?.room
  }

  async function addToDirect(user: string, peer: string, room: string, log: Logger) {
    // Read, merge, write: clients maintain m.direct, and their entries must survive.
    try {
      const merged = mergeDirect(await matrix.getAccountData(user, 'm.direct'), peer, room)
      if (merged) await matrix.putAccountData(user, 'm.direct', merged)
    } catch (e) {
      log.warn({ user_id: user, room_id: room, err: (e as Error).message }, 'could not add the direct chat to m.direct')
    }
  }

  /**
   * Synapse invites a user of its own that does not exist without a word, and the message would go
   * into a room nobody reads: a local peer must have a profile (404 otherwise) before a room is
   * made for them. A refusal to show profiles (limit_profile_requests_to_users_who_share_rooms)
   * tells nothing: the room is made. Remote peers are not asked: that is a federation query.
   */
  async function assertPeerExists(sender: string, peer: string, log: Logger) {
    let profile
    try {
      profile = await matrix.profile(sender, peer)
    } catch (e) {
      if (!(e instanceof MatrixError) || e.isTransient) throw e
      log.debug({ peer, err: e.message }, 'profile of the peer not readable; creating the direct chat all the same')
      return
    }
    if (profile === undefined) throw new NoSuchUserError(peer)
  }

  async function create(sender: string, peer: string, log: Logger): Promise<string> {
    const local = isLocal(peer)
    if (local) await assertPeerExists(sender, peer, log)
    const room = await matrix.createRoom(sender, directRoomBody(peer))
    // A server module may encrypt a new room whatever createRoom asked: a server cannot read it then.
    if ((await matrix.stateEvent(sender, room, 'm.room.encryption')) !== undefined) {
      log.error({ room_id: room }, 'the homeserver encrypted the new direct chat; it cannot be used')
      throw new DirectChatError('The homeserver made the new direct chat end-to-end encrypted; the proxy cannot use it')
    }
    await addToDirect(sender, peer, room, log)
    if (local) await addToDirect(peer, sender, room, log)
    if (local && (await deps.index.isEnrolled(peer))) {
      try {
        await matrix.join(peer, room)
        log.info({ room_id: room, user_id: peer }, 'accepted the direct chat for the phone user')
      } catch (e) {
        // Not registered on the homeserver, or a passing fault: they can still accept in a client.
        log.warn({ room_id: room, user_id: peer, err: (e as Error).message }, 'could not accept the direct chat as the peer')
      }
    }
    log.info({ room_id: room, user_id: sender, peer }, 'direct chat created')
    return room
  }

  return {
    /**
     * The room for a message from `sender` to `peer`: a qualifying existing direct chat, else a new
     * one. `exclude`: rooms just refused (a 403 on send).
     */
    roomFor(sender: string, peer: string, log: Logger, exclude: ReadonlySet<string> = new Set()): Promise<string> {
      return withPairLock(sender, peer, async () => {
        const [known, mine, theirs] = await Promise.all([
          deps.index.directRooms(sender, peer),
          matrix.getAccountData(sender, 'm.direct').catch(ignoreRefusal),
          isLocal(peer)
            ? matrix.getAccountData(peer, 'm.direct').catch(ignoreRefusal)
            : undefined,
        ])
        const candidates = [...new Set([...known, ...directList(mine, peer), ...directList(theirs, sender)])].filter((r) => !exclude.has(r))
        return (await qualifying(sender, peer, candidates, log)) ?? create(sender, peer, log)
      })
    },
  }
}

/** A user the appservice may not act as has no readable m.direct; a homeserver fault still fails. */
function ignoreRefusal(e: unknown): undefined {
  if (e instanceof MatrixError && !e.isTransient) return undefined
  throw e
}
