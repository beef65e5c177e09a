/**
 * A small fetch-based client for the few client-server API calls the proxy makes. Every call has
 * a timeout; every failure becomes a MatrixError that says whether a retry can help.
 */
import { isClientEvent, type ClientEvent } from './event.ts'

export type FetchFn = (input: string | URL | Request, init?: RequestInit) => Promise<Response>

export type MatrixFailure = 'http' | 'network' | 'timeout' | 'bad_response'

export class MatrixError extends Error {
  constructor(
    readonly kind: MatrixFailure,
    message: string,
    readonly status?: number,
    readonly errcode?: string,
    readonly retryAfterMs?: number,
    /** The homeserver's whole error body (a ping's M_BAD_STATUS carries `status` and `body`). */
    readonly data?: Record<string, unknown>,
  ) {
    super(message)
    this.name = 'MatrixError'
  }
  /** The homeserver could not answer properly now: a later try may work. */
  get isTransient(): boolean {
    return this.kind !== 'http' || this.status === undefined || this.status >= 500 || this.status === 429
  }
  get isRateLimit(): boolean {
    return this.status === 429 || this.errcode === 'M_LIMIT_EXCEEDED'
  }
  /** Synapse's 403 when the appservice's users namespace does not cover the user, or the user does not exist. */
  get isNamespaceProblem(): boolean {
    return this.status === 403 && /masquerade|has not registered/i.test(this.message)
  }
  get isNotFound(): boolean {
    return this.status === 404
  }
}

export interface PusherBody {
  kind: 'http' | null
  app_id: string
  pushkey: string
  app_display_name?: string
  device_display_name?: string
  lang?: string
  append?: boolean
  data?: { url: string; format?: 'event_id_only'; selector?: string }
}

export interface RoomMessages {
  /** Newest first with `dir: 'b'`. Entries that are not client-format events are left out. */
  chunk: ClientEvent[]
  start?: string
  end?: string
}

export interface MemberProfile {
  display_name?: string | null
  avatar_url?: string | null
}

/** A stripped state event of an invite: no event id, no timestamp (spec: StrippedStateEvent). */
export interface StrippedStateEvent {
  type: string
  state_key: string
  sender: string
  content: Record<string, unknown>
}

export interface PendingInvite {
  roomId: string
  state: StrippedStateEvent[]
}

/**
 * A /sync filter that leaves out everything but the invites: their stripped state is sent whatever
 * the filter says, and an empty timeline keeps the initial sync of a user in many rooms small.
 */
const INVITES_ONLY_FILTER = JSON.stringify({
  presence: { types: [] },
  account_data: { types: [] },
  room: { timeline: { limit: 0 }, state: { types: [] }, ephemeral: { types: [] }, account_data: { types: [] } },
})

const isStripped = (e: unknown): e is StrippedStateEvent => {
  const v = e as Record<string, unknown> | null
  return (
    v !== null &&
    typeof v === 'object' &&
    typeof v.type === 'string' &&
    typeof v.state_key === 'string' &&
    typeof v.sender === 'string' &&
    v.content !== null &&
    typeof v.content === 'object' &&
    !Array.isArray(v.content)
  )
}

export interface MatrixClient {
  /** m.login.password with an m.id.user identifier. */
  login(username: string, password: string): Promise<{ userId: string; accessToken?: string }>
  logout(accessToken: string): Promise<void>
  /** pushers/set acting as `userId` through the application service. */
  setPusher(userId: string, body: PusherBody): Promise<void>
  /** whoami with the appservice token, optionally acting as `userId`. */
  whoami(userId?: string): Promise<{ userId: string }>

  // Acting as `user` through the application service (as_token, ?user_id=).
  joinedRooms(user: string): Promise<string[]>
  /**
   * The rooms `user` is invited to, each with the stripped state of its invite (the invitee's own
   * m.room.member event among it), from one /sync with `timeout=0`. No other endpoint lists invites.
   */
  pendingInvites(user: string): Promise<PendingInvite[]>
  /** user id -> profile of the room's joined members. */
  joinedMembers(user: string, room: string): Promise<Record<string, MemberProfile>>
  /** A MatrixError with status 404 (M_NOT_FOUND) when the event is unknown or not visible. */
  getEvent(user: string, room: string, eventId: string): Promise<ClientEvent>
  roomMessages(user: string, room: string, page: { dir: 'b' | 'f'; limit: number; from?: string }): Promise<RoomMessages>
  /** The room's current state events. */
  roomState(user: string, room: string): Promise<ClientEvent[]>
  /** One state event's content; undefined when the room has none of that type and key (404). */
  stateEvent(user: string, room: string, type: string, stateKey?: string): Promise<Record<string, unknown> | undefined>
  /** A user's global account data; undefined until first written (404 M_NOT_FOUND). */
  getAccountData(user: string, type: string): Promise<Record<string, unknown> | undefined>
  putAccountData(user: string, type: string, content: Record<string, unknown>): Promise<void>
  /**
   * GET profile/{userId}: undefined on 404, which Synapse answers for a user of its own that does
   * not exist, is deactivated, or has neither display name nor avatar.
   */
  profile(user: string, target: string): Promise<Record<string, unknown> | undefined>
  /** POST createRoom; the new room's id. */
  createRoom(user: string, body: Record<string, unknown>): Promise<string>
  /** Joins a room by id or alias; the room's id. */
  join(user: string, roomIdOrAlias: string): Promise<string>
  invite(user: string, room: string, target: string): Promise<void>
  leave(user: string, room: string): Promise<void>
  /**
   * PUT rooms/{room}/send/m.room.message/{txnId}; the event id. Synapse deduplicates by path and
   * appservice, not by user (FIELD-GUIDE §7): `txnId` must be unique across every user.
   * `timeoutMs` shortens the client's timeout (what is left of a caller's budget), never lengthens it.
   */
  sendMessage(user: string, room: string, txnId: string, content: Record<string, unknown>, timeoutMs?: number): Promise<string>
  /** POST rooms/{room}/receipt/m.read/{eventId}. */
  readReceipt(user: string, room: string, eventId: string): Promise<void>
  /**
   * POST /_matrix/client/v1/appservice/{asId}/ping: Synapse then calls this proxy's ping route.
   * Its failures are MatrixErrors: 502 M_BAD_STATUS (the proxy answered an error; `data.status`,
   * `data.body`), 502 M_CONNECTION_FAILED, 504 M_CONNECTION_TIMEOUT, 403 M_FORBIDDEN (wrong id).
   */
  pingAppservice(asId: string, transactionId?: string, timeoutMs?: number): Promise<{ durationMs: number }>
}

const seg = encodeURIComponent

export function createMatrixClient(options: {
  homeserverUrl: string
  asToken?: string
  timeoutMs: number
  fetch?: FetchFn
}): MatrixClient {
  const doFetch = options.fetch ?? fetch

  type CallInit = { token?: string; body?: unknown; userId?: string; query?: Record<string, string>; timeoutMs?: number }

  /** A JSON object answer, or a MatrixError. */
  async function call(method: string, path: string, init: CallInit): Promise<Record<string, unknown>> {
    const { status, parsed } = await callAny(method, path, init)
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new MatrixError('bad_response', `${path}: homeserver answered ${status} without a JSON object`, status)
    }
    return parsed as Record<string, unknown>
  }

  /** A JSON list answer (GET rooms/{r}/state), or a MatrixError. */
  async function callList(method: string, path: string, init: CallInit): Promise<unknown[]> {
    const { status, parsed } = await callAny(method, path, init)
    if (!Array.isArray(parsed)) throw new MatrixError('bad_response', `${path}: homeserver answered ${status} without a JSON list`, status)
    return parsed
  }

  async function callAny(method: string, path: string, init: CallInit): Promise<{ status: number; parsed: unknown }> {
    const url = new URL(options.homeserverUrl + path)
    if (init.userId !== undefined) url.searchParams.set('user_id', init.userId)
    for (const [k, v] of Object.entries(init.query ?? {})) url.searchParams.set(k, v)
    const timeoutMs = init.timeoutMs ?? options.timeoutMs
    const headers: Record<string, string> = { accept: 'application/json' }
    if (init.token !== undefined) headers.authorization = `Bearer ${init.token}`
    if (init.body !== undefined) headers['content-type'] = 'application/json'
    let response: Response
    try {
      response = await doFetch(url, {
        method,
        headers,
        body: init.body === undefined ? undefined : JSON.stringify(init.body),
        signal: AbortSignal.timeout(timeoutMs),
        redirect: 'manual',
      })
    } catch (e) {
      const err = e as Error
      if (err.name === 'TimeoutError' || err.name === 'AbortError') {
        throw new MatrixError('timeout', `homeserver did not answer ${path} within ${timeoutMs} ms`)
      }
      throw new MatrixError('network', `homeserver unreachable for ${path}: ${err.message}`)
    }
    let parsed: unknown
    try {
      parsed = await response.json()
    } catch {
      parsed = undefined
    }
    const json =
      parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : undefined
    if (!response.ok) {
      const errcode = typeof json?.errcode === 'string' ? json.errcode : undefined
      const error = typeof json?.error === 'string' ? json.error : response.statusText
      const retryAfterMs =
        typeof json?.retry_after_ms === 'number'
          ? json.retry_after_ms
          : Number(response.headers.get('retry-after')) * 1000 || undefined
      throw new MatrixError('http', `${path}: ${response.status} ${errcode ?? ''} ${error}`.replace(/\s+/g, ' '), response.status, errcode, retryAfterMs, json)
    }
    return { status: response.status, parsed }
  }

  const requireAsToken = () => {
    if (options.asToken === undefined) throw new MatrixError('http', 'MATRIX_AS_TOKEN is not set', 401, 'M_MISSING_TOKEN')
    return options.asToken
  }

  const asUser = (userId: string, more: { body?: unknown; query?: Record<string, string> } = {}) => ({ token: requireAsToken(), userId, ...more })
  /** The answer, or undefined when the homeserver says 404: "there is none" is an answer here. */
  async function orNotFound<T>(p: Promise<T>): Promise<T | undefined> {
    try {
      return await p
    } catch (e) {
      if (e instanceof MatrixError && e.isNotFound) return undefined
      throw e
    }
  }
  const stringField = (json: Record<string, unknown>, field: string, path: string): string => {
    const v = json[field]
    if (typeof v !== 'string') throw new MatrixError('bad_response', `${path}: answer has no ${field}`)
    return v
  }
  const room = (r: string) => `/_matrix/client/v3/rooms/${seg(r)}`

  return {
    async login(username, password) {
      const json = await call('POST', '/_matrix/client/v3/login', {
        body: {
          type: 'm.login.password',
          identifier: { type: 'm.id.user', user: username },
          password,
          initial_device_display_name: 'matrix2acrobits password check',
        },
      })
      if (typeof json.user_id !== 'string') throw new MatrixError('bad_response', 'login answer has no user_id')
      // Without a session token there is no session to log out; the user is known all the same.
      return { userId: json.user_id, accessToken: typeof json.access_token === 'string' ? json.access_token : undefined }
    },
    async logout(accessToken) {
      await call('POST', '/_matrix/client/v3/logout', { token: accessToken, body: {} })
    },
    async setPusher(userId, body) {
      await call('POST', '/_matrix/client/v3/pushers/set', { token: requireAsToken(), userId, body })
    },
    async whoami(userId) {
      const json = await call('GET', '/_matrix/client/v3/account/whoami', { token: requireAsToken(), userId })
      if (typeof json.user_id !== 'string') throw new MatrixError('bad_response', 'whoami answer has no user_id')
      return { userId: json.user_id }
    },

    async joinedRooms(user) {
      const json = await call('GET', '/_matrix/client/v3/joined_rooms', asUser(user))
      if (!Array.isArray(json.joined_rooms)) throw new MatrixError('bad_response', 'joined_rooms answer has no joined_rooms list')
      return json.joined_rooms.filter((r): r is string => typeof r === 'string')
    },
    async pendingInvites(user) {
      const json = await call('GET', '/_matrix/client/v3/sync', asUser(user, { query: { timeout: '0', filter: INVITES_ONLY_FILTER } }))
      const invites = (json.rooms as { invite?: unknown } | undefined)?.invite
      if (invites === undefined) return []
      if (invites === null || typeof invites !== 'object' || Array.isArray(invites)) throw new MatrixError('bad_response', '/sync: rooms.invite is not a map')
      return Object.entries(invites as Record<string, { invite_state?: { events?: unknown } }>).map(([roomId, entry]) => ({
        roomId,
        state: Array.isArray(entry?.invite_state?.events) ? entry.invite_state.events.filter(isStripped) : [],
      }))
    },
    async joinedMembers(user, r) {
      const path = `${room(r)}/joined_members`
      const json = await call('GET', path, asUser(user))
      const joined = json.joined
      if (joined === null || typeof joined !== 'object' || Array.isArray(joined)) throw new MatrixError('bad_response', `${path}: answer has no joined map`)
      return joined as Record<string, MemberProfile>
    },
    async getEvent(user, r, eventId) {
      const path = `${room(r)}/event/${seg(eventId)}`
      const json = await call('GET', path, asUser(user))
      if (!isClientEvent(json)) throw new MatrixError('bad_response', `${path}: answer is not an event`)
      return json
    },
    async roomMessages(user, r, page) {
      const path = `${room(r)}/messages`
      const query: Record<string, string> = { dir: page.dir, limit: String(page.limit) }
      if (page.from !== undefined) query.from = page.from
      const json = await call('GET', path, asUser(user, { query }))
      if (!Array.isArray(json.chunk)) throw new MatrixError('bad_response', `${path}: answer has no chunk`)
      return {
        chunk: json.chunk.filter(isClientEvent),
        start: typeof json.start === 'string' ? json.start : undefined,
        end: typeof json.end === 'string' ? json.end : undefined,
      }
    },
    async roomState(user, r) {
      return (await callList('GET', `${room(r)}/state`, asUser(user))).filter(isClientEvent)
    },
    async stateEvent(user, r, type, stateKey = '') {
      return orNotFound(call('GET', `${room(r)}/state/${seg(type)}/${seg(stateKey)}`, asUser(user)))
    },
    async getAccountData(user, type) {
      return orNotFound(call('GET', `/_matrix/client/v3/user/${seg(user)}/account_data/${seg(type)}`, asUser(user)))
    },
    async putAccountData(user, type, content) {
      await call('PUT', `/_matrix/client/v3/user/${seg(user)}/account_data/${seg(type)}`, asUser(user, { body: content }))
    },
    async profile(user, target) {
      return orNotFound(call('GET', `/_matrix/client/v3/profile/${seg(target)}`, asUser(user)))
    },
    async createRoom(user, body) {
      const path = '/_matrix/client/v3/createRoom'
      return stringField(await call('POST', path, asUser(user, { body })), 'room_id', path)
    },
    async join(user, roomIdOrAlias) {
      const path = `/_matrix/client/v3/join/${seg(roomIdOrAlias)}`
      return stringField(await call('POST', path, asUser(user, { body: {} })), 'room_id', path)
    },
    async invite(user, r, target) {
      await call('POST', `${room(r)}/invite`, asUser(user, { body: { user_id: target } }))
    },
    async leave(user, r) {
      await call('POST', `${room(r)}/leave`, asUser(user, { body: {} }))
    },
    async sendMessage(user, r, txnId, content, timeoutMs) {
      const path = `${room(r)}/send/m.room.message/${seg(txnId)}`
      const bounded = timeoutMs === undefined ? undefined : Math.min(timeoutMs, options.timeoutMs)
      return stringField(await call('PUT', path, { ...asUser(user, { body: content }), timeoutMs: bounded }), 'event_id', path)
    },
    async readReceipt(user, r, eventId) {
      await call('POST', `${room(r)}/receipt/m.read/${seg(eventId)}`, asUser(user, { body: {} }))
    },
    async pingAppservice(asId, transactionId, timeoutMs) {
      const path = `/_matrix/client/v1/appservice/${seg(asId)}/ping`
      const body = transactionId === undefined ? {} : { transaction_id: transactionId }
      const json = await call('POST', path, { token: requireAsToken(), body, timeoutMs })
      if (typeof json.duration_ms !== 'number') throw new MatrixError('bad_response', `${path}: answer has no duration_ms`)
      return { durationMs: json.duration_ms }
    },
  }
}
