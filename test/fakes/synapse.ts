/**
 * A fake Synapse on 127.0.0.1, faithful to what the proxy relies on (FIELD-GUIDE §2, §7): password
 * login and logout, pushers/set through an application service (namespace and registration checks,
 * one pusher per (user, app_id, pushkey) whose data a new set replaces; append: false also removes
 * other users' pushers of that app_id + pushkey, append: true leaves them; kind: null deletes the
 * acting user's pusher only; the url path check), and whoami. `push` sends an event to a user's
 * pushers as Synapse's HTTP pusher does (FIELD-GUIDE §3: `data` minus `url` echoed, one device per
 * request) and, like Synapse, deletes only that user's pusher for a rejected pushkey. Rooms acting
 * as a user (test/fakes/rooms.ts) and the application-service feed: every event it creates is PUT
 * to the proxy in transactions (test/fakes/appservice-sender.ts), and the client-side ping calls
 * the proxy's ping route. It records every request; `override` makes it misbehave on purpose.
 */
import { createAppserviceSender, type SenderOptions, type Target } from './appservice-sender.ts'
import { serveRecording, type Override, type Recorded } from './recording.ts'
import { createRoomModel, FakeMatrixError } from './rooms.ts'

export type { Override, Recorded } from './recording.ts'

export interface Pusher {
  user_id: string
  kind: string
  app_id: string
  pushkey: string
  app_display_name: string
  device_display_name: string
  lang: string
  data: Record<string, unknown>
}

/** An event as `push` sends it; the notification's shape follows the pusher's data.format. */
export interface PushEvent {
  event_id: string
  room_id?: string
  type?: string
  sender?: string
  sender_display_name?: string
  content?: Record<string, unknown>
  unread?: number
  prio?: 'high' | 'low'
}

export interface PushResult {
  pusher: Pusher
  status: number
  body: any
}


export interface FakeSynapseOptions {
  asToken?: string
  serverName?: string
  /** Users namespace regex of the appservice registration. */
  namespace?: RegExp
  /** localpart -> password */
  users?: Record<string, string>
  /** The registration's hs_token, sent to the proxy with every transaction and ping. */
  hsToken?: string
  /** The registration's id (`MATRIX_AS_ID`). */
  asId?: string
  /** Where transactions go; `connectAppservice` sets it later (the proxy's port is not known yet). */
  appservice?: Target
  sender?: Omit<SenderOptions, 'hsToken'>
  /** How long the client-side ping waits for the proxy (Synapse: 60 s). */
  pingTimeoutMs?: number
}

const json = (status: number, body: unknown) => Response.json(body, { status })

export function startFakeSynapse(options: FakeSynapseOptions = {}) {
  const asToken = options.asToken ?? 'as-secret-token-0123456789'
  const serverName = options.serverName ?? 'example.org'
  const namespace = options.namespace ?? new RegExp(`^@.*:${serverName.replaceAll('.', '\\.')}$`)
  const users = new Map(Object.entries(options.users ?? { alice: 'alice-password', bob: 'bob-password' }))
  const sessions = new Map<string, string>()
  const requests: Recorded[] = []
  let pushers: Pusher[] = []
  let override: Override | undefined
  let counter = 0
  const hsToken = options.hsToken ?? 'hs-secret-token-9876543210'
  const asId = options.asId ?? 'matrix2acrobits'
  const displayNames = new Map<string, string>()
  const sender = createAppserviceSender({ hsToken, ...options.sender })
  let appserviceTarget: Target | undefined = options.appservice
  const model = createRoomModel({
    serverName,
    // Synapse sends what the registration's namespaces make interesting: events of its users and
    // of rooms where one of them is a member.
    onEvent: (e) => {
      const interested =
        namespace.test(e.sender) ||
        (e.state_key !== undefined && e.type === 'm.room.member' && namespace.test(e.state_key)) ||
        model.members(e.room_id).some((u) => namespace.test(u)) ||
        model.members(e.room_id, 'invite').some((u) => namespace.test(u))
      if (interested) sender.enqueue(e)
    },
    displayName: (user) => displayNames.get(user) ?? localpartOf(user),
  })
  const pings: Array<{ asId: string; body: unknown; answer: { status: number; body: unknown } }> = []

  const userId = (localpart: string) => `@${localpart}:${serverName}`
  const localpartOf = (user: string) => {
    const m = /^@([^:]+):(.+)$/.exec(user)
    if (!m) return user.toLowerCase()
    return m[2] === serverName ? m[1]! : undefined
  }

  const asUser = (req: Recorded) => {
    if (!req.authorization) return json(401, { errcode: 'M_MISSING_TOKEN', error: 'Missing access token.' })
    if (req.authorization !== `Bearer ${asToken}`) return json(401, { errcode: 'M_UNKNOWN_TOKEN', error: 'Invalid access token passed.' })
    const user = req.query.user_id
    if (user === undefined) return json(403, { errcode: 'M_FORBIDDEN', error: 'Application service has no user_id' })
    if (!namespace.test(user)) return json(403, { errcode: 'M_FORBIDDEN', error: 'Application service cannot masquerade as this user (' + user + ').' })
    const localpart = localpartOf(user)
    if (localpart === undefined || !users.has(localpart)) return json(403, { errcode: 'M_FORBIDDEN', error: 'Application service has not registered this user (' + user + ')' })
    return user
  }

  async function route(req: Recorded): Promise<Response> {
    if (req.method === 'POST' && req.path === '/_matrix/client/v3/login') {
      const b = req.body ?? {}
      if (b.type !== 'm.login.password' || b.identifier?.type !== 'm.id.user') return json(400, { errcode: 'M_UNKNOWN', error: 'Unknown login type' })
      const localpart = localpartOf(String(b.identifier.user ?? ''))
      if (localpart === undefined || users.get(localpart) === undefined || users.get(localpart) !== b.password) {
        return json(403, { errcode: 'M_FORBIDDEN', error: 'Invalid username or password' })
      }
      const token = `syt_${localpart}_${++counter}`
      sessions.set(token, userId(localpart))
      return json(200, { user_id: userId(localpart), access_token: token, device_id: `DEV${counter}`, home_server: serverName })
    }
    if (req.method === 'POST' && req.path === '/_matrix/client/v3/logout') {
      const token = req.authorization?.replace(/^Bearer /, '') ?? ''
      if (!sessions.delete(token)) return json(401, { errcode: 'M_UNKNOWN_TOKEN', error: 'Invalid access token passed.', soft_logout: false })
      return json(200, {})
    }
    if (req.method === 'POST' && req.path === '/_matrix/client/v3/pushers/set') {
      const user = asUser(req)
      if (user instanceof Response) return user
      const b = req.body
      if (!b || typeof b !== 'object') return json(400, { errcode: 'M_NOT_JSON', error: 'Content not JSON.' })
      for (const field of ['kind', 'app_id', 'pushkey']) {
        if (!(field in b)) return json(400, { errcode: 'M_MISSING_PARAM', error: `Missing params: ${field}` })
      }
      if (b.kind === null) {
        pushers = pushers.filter((p) => !(p.user_id === user && p.app_id === b.app_id && p.pushkey === b.pushkey))
        return json(200, {})
      }
      for (const field of ['app_display_name', 'device_display_name', 'lang', 'data']) {
        if (!(field in b)) return json(400, { errcode: 'M_MISSING_PARAM', error: `Missing params: ${field}` })
      }
      if (b.kind === 'http') {
        let path = ''
        try {
          path = new URL(b.data?.url).pathname
        } catch {}
        if (path !== '/_matrix/push/v1/notify') return json(400, { errcode: 'M_INVALID_PARAM', error: "'url' must have a path of '/_matrix/push/v1/notify'" })
      }
      if (Buffer.byteLength(b.pushkey) > 512) return json(400, { errcode: 'M_INVALID_PARAM', error: 'pushkey too long' })
      if (String(b.app_id).length > 64) return json(400, { errcode: 'M_INVALID_PARAM', error: 'app_id too long' })
      // synapse/rest/client/pusher.py: without append, other users' pushers of this app_id +
      // pushkey go; then the pusher is upserted on (app_id, pushkey, user).
      if (!b.append) pushers = pushers.filter((p) => !(p.app_id === b.app_id && p.pushkey === b.pushkey && p.user_id !== user))
      pushers = pushers.filter((p) => !(p.user_id === user && p.app_id === b.app_id && p.pushkey === b.pushkey))
      pushers.push({ user_id: user, kind: b.kind, app_id: b.app_id, pushkey: b.pushkey, app_display_name: b.app_display_name, device_display_name: b.device_display_name, lang: b.lang, data: b.data })
      return json(200, {})
    }
    if (req.method === 'GET' && req.path === '/_matrix/client/v3/account/whoami') {
      if (req.query.user_id === undefined) {
        if (req.authorization !== `Bearer ${asToken}`) return json(401, { errcode: 'M_UNKNOWN_TOKEN', error: 'Invalid access token passed.' })
        return json(200, { user_id: `@appservice:${serverName}` })
      }
      const user = asUser(req)
      if (user instanceof Response) return user
      return json(200, { user_id: user })
    }
    const ping = /^\/_matrix\/client\/v1\/appservice\/([^/]+)\/ping$/.exec(req.path)
    if (ping && req.method === 'POST') return clientPing(req, decodeURIComponent(ping[1]!))
    if (req.path.startsWith('/_matrix/client/v3/')) {
      try {
        const answer = await roomRoute(req)
        if (answer) return answer
      } catch (e) {
        if (e instanceof FakeMatrixError) return e.toResponse()
        throw e
      }
    }
    return json(404, { errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' })
  }

  /** The client-server routes of rooms, account data and receipts, acting as a user. */
  async function roomRoute(req: Recorded): Promise<Response | undefined> {
    const seg = req.path.slice('/_matrix/client/v3/'.length).split('/').map(decodeURIComponent)
    const m = req.method
    const is = (method: string, ...pattern: Array<string | null>) =>
      m === method && seg.length === pattern.length && pattern.every((p, i) => p === null || p === seg[i])
    const needsBody = m === 'POST' || m === 'PUT'
    const routes: Array<[boolean, (user: string, body: any) => Response]> = [
      [is('GET', 'joined_rooms'), (user) => json(200, { joined_rooms: model.joinedRooms(user) })],
      // Only what the proxy reads of an initial sync: the invites (their stripped state ignores the filter).
      [is('GET', 'sync'), (user) => json(200, { next_batch: `s${Date.now()}`, rooms: { invite: model.pendingInvites(user), join: {}, leave: {} } })],
      [is('POST', 'createRoom'), (user, body) => json(200, { room_id: model.createRoom(user, body) })],
      // synapse/handlers/profile.py: a user of this server with no profile (none registered, or
      // deactivated) is a 404; a remote one would be a federation query, which this fake has not.
      [
        is('GET', 'profile', null),
        () => {
          const localpart = localpartOf(seg[1]!)
          if (localpart === undefined || !users.has(localpart)) return json(404, { errcode: 'M_NOT_FOUND', error: 'Profile was not found' })
          return json(200, { displayname: displayNames.get(seg[1]!) ?? localpart })
        },
      ],
      [is('POST', 'join', null), (user) => json(200, { room_id: model.join(user, seg[1]!) })],
      [is('POST', 'rooms', null, 'join'), (user) => json(200, { room_id: model.join(user, seg[1]!) })],
      [is('POST', 'rooms', null, 'leave'), (user) => (model.leave(user, seg[1]!), json(200, {}))],
      [
        is('POST', 'rooms', null, 'invite'),
        (user, body) => {
          if (typeof body.user_id !== 'string') return json(400, { errcode: 'M_MISSING_PARAM', error: 'Missing params: user_id' })
          model.invite(user, seg[1]!, body.user_id)
          return json(200, {})
        },
      ],
      [is('GET', 'rooms', null, 'joined_members'), (user) => json(200, { joined: model.joinedMembers(user, seg[1]!) })],
      [is('GET', 'rooms', null, 'event', null), (user) => json(200, model.getEvent(user, seg[1]!, seg[3]!))],
      [
        is('GET', 'rooms', null, 'messages'),
        (user) => {
          const dir = req.query.dir ?? 'b'
          if (dir !== 'b' && dir !== 'f') return json(400, { errcode: 'M_INVALID_PARAM', error: 'Unknown dir' })
          const limit = Math.min(Number(req.query.limit ?? 10) || 10, 1000)
          return json(200, model.messages(user, seg[1]!, dir, limit, req.query.from))
        },
      ],
      [is('GET', 'rooms', null, 'state'), (user) => json(200, model.state(user, seg[1]!))],
      [is('GET', 'rooms', null, 'state', null), (user) => json(200, model.stateEvent(user, seg[1]!, seg[3]!, ''))],
      [is('GET', 'rooms', null, 'state', null, null), (user) => json(200, model.stateEvent(user, seg[1]!, seg[3]!, seg[4]!))],
      [is('PUT', 'rooms', null, 'state', null), (user, body) => json(200, { event_id: model.setState(user, seg[1]!, seg[3]!, '', body) })],
      [is('PUT', 'rooms', null, 'state', null, null), (user, body) => json(200, { event_id: model.setState(user, seg[1]!, seg[3]!, seg[4]!, body) })],
      // Synapse dedupes by (request path, appservice), not by the masqueraded user (FIELD-GUIDE §7).
      [is('PUT', 'rooms', null, 'send', null, null), (user, body) => json(200, { event_id: model.send(user, seg[1]!, seg[3]!, body, req.path) })],
      [is('PUT', 'rooms', null, 'redact', null, null), (user, body) => json(200, { event_id: model.redact(user, seg[1]!, seg[3]!, body.reason) })],
      [is('POST', 'rooms', null, 'receipt', null, null), (user) => (model.receipt(user, seg[1]!, seg[3]!, seg[4]!), json(200, {}))],
      [
        is('GET', 'user', null, 'account_data', null),
        (user) => {
          if (seg[1] !== user) return json(403, { errcode: 'M_FORBIDDEN', error: 'Cannot get account data for other users.' })
          return json(200, model.getAccountData(user, seg[3]!))
        },
      ],
      [
        is('PUT', 'user', null, 'account_data', null),
        (user, body) => {
          if (seg[1] !== user) return json(403, { errcode: 'M_FORBIDDEN', error: 'Cannot add account data for other users.' })
          model.putAccountData(user, seg[3]!, body)
          return json(200, {})
        },
      ],
    ]
    const found = routes.find(([matches]) => matches)
    if (!found) return undefined
    const user = asUser(req)
    if (user instanceof Response) return user
    if (needsBody && (req.body === null || typeof req.body !== 'object' || Array.isArray(req.body))) {
      return json(400, { errcode: 'M_NOT_JSON', error: 'Content not JSON.' })
    }
    return found[1](user, req.body)
  }

  /** POST /_matrix/client/v1/appservice/{id}/ping: Synapse calls the appservice's ping route. */
  async function clientPing(req: Recorded, id: string): Promise<Response> {
    if (req.authorization !== `Bearer ${asToken}`) return json(401, { errcode: 'M_UNKNOWN_TOKEN', error: 'Invalid access token passed.' })
    if (id !== asId) return json(403, { errcode: 'M_FORBIDDEN', error: 'Mismatching application service ID in path' })
    if (req.body === null || typeof req.body !== 'object') return json(400, { errcode: 'M_NOT_JSON', error: 'Content not JSON.' })
    const started = Date.now()
    const answer = await (async () => {
      if (appserviceTarget === undefined) return { status: 400, body: { errcode: 'M_URL_NOT_SET', error: 'Application service URL is not set' } }
      const init: RequestInit = {
        method: 'POST',
        headers: { authorization: `Bearer ${hsToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ transaction_id: req.body.transaction_id ?? null }),
        signal: AbortSignal.timeout(options.pingTimeoutMs ?? 60_000),
      }
      let response: Response
      try {
        response =
          'url' in appserviceTarget
            ? await fetch(appserviceTarget.url + '/_matrix/app/v1/ping', init)
            : await appserviceTarget.handle(new Request('http://synapse-sender.invalid/_matrix/app/v1/ping', init))
      } catch (e) {
        if ((e as Error).name === 'TimeoutError') return { status: 504, body: { errcode: 'M_CONNECTION_TIMEOUT', error: 'Connection to application service timed out' } }
        return { status: 502, body: { errcode: 'M_CONNECTION_FAILED', error: 'Failed to connect to application service' } }
      }
      const text = await response.text()
      if (!response.ok) return { status: 502, body: { errcode: 'M_BAD_STATUS', error: 'Application service responded with an error', status: response.status, body: text } }
      return { status: 200, body: { duration_ms: Date.now() - started } }
    })()
    pings.push({ asId: id, body: req.body, answer })
    return json(answer.status, answer.body)
  }

  const server = serveRecording(requests, async (rec) => (await override?.(rec)) ?? route(rec))

  return {
    url: `http://127.0.0.1:${server.port}`,
    asToken,
    serverName,
    requests,
    /** Requests to one path, in order. */
    calls: (path: string) => requests.filter((r) => r.path === path),
    pusherCalls: () => requests.filter((r) => r.path === '/_matrix/client/v3/pushers/set'),
    pushers: () => pushers,
    /**
     * What Synapse does with the `rejected` list of one user's pusher's notify answer: it deletes
     * that user's pusher for the pushkey (synapse/push/httppusher.py: remove_pusher(app_id, pk, user_id)).
     */
    applyRejections: (userId: string, appId: string, rejected: string[]) => {
      pushers = pushers.filter((p) => !(p.user_id === userId && p.app_id === appId && rejected.includes(p.pushkey)))
    },
    /**
     * Sends `event` to every pusher of `userId` as Synapse does: POST to data.url (its origin
     * replaced by `gateway` when given: the proxy under test listens elsewhere than PROXY_URL),
     * `data` minus `url` in the device, full or event_id_only by data.format; a rejected pushkey
     * deletes that pusher. `send` replaces fetch (tests driving the app through app.handle).
     */
    push: async (userId: string, event: PushEvent, options: { gateway?: string; send?: (url: string, body: unknown) => Promise<Response> } = {}) => {
      const results: PushResult[] = []
      for (const pusher of pushers.filter((p) => p.user_id === userId)) {
        const { url, ...dataMinusUrl } = pusher.data as { url: string } & Record<string, unknown>
        const target = options.gateway ? options.gateway.replace(/\/+$/, '') + new URL(url).pathname : url
        const device: Record<string, unknown> = { app_id: pusher.app_id, pushkey: pusher.pushkey, pushkey_ts: 1_700_000_000, data: dataMinusUrl }
        const counts = { unread: event.unread ?? 1 }
        const notification =
          dataMinusUrl.format === 'event_id_only'
            ? { event_id: event.event_id, room_id: event.room_id ?? '!room:' + serverName, prio: event.prio ?? 'high', counts, devices: [device] }
            : {
                id: event.event_id,
                event_id: event.event_id,
                room_id: event.room_id ?? '!room:' + serverName,
                type: event.type ?? 'm.room.message',
                sender: event.sender ?? '@someone:' + serverName,
                sender_display_name: event.sender_display_name ?? 'Someone',
                prio: event.prio ?? 'high',
                content: event.content ?? { msgtype: 'm.text', body: 'Hello' },
                counts,
                devices: [{ ...device, tweaks: { highlight: false, sound: 'default' } }],
              }
        const body = { notification }
        const response = options.send
          ? await options.send(target, body)
          : await fetch(target, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
        const text = await response.text()
        let parsed: any
        try {
          parsed = JSON.parse(text)
        } catch {
          parsed = text
        }
        if (response.ok && Array.isArray(parsed?.rejected) && parsed.rejected.includes(pusher.pushkey)) {
          pushers = pushers.filter((p) => !(p.user_id === pusher.user_id && p.app_id === pusher.app_id && p.pushkey === pusher.pushkey))
        }
        results.push({ pusher, status: response.status, body: parsed })
      }
      return results
    },
    addUser: (localpart: string, password: string, displayName?: string) => {
      users.set(localpart, password)
      if (displayName !== undefined) displayNames.set(userId(localpart), displayName)
    },
    openSessions: () => sessions.size,
    hsToken,
    asId,
    userId,
    /** The rooms, state, account data and receipts (test/fakes/rooms.ts): act as any user. */
    rooms: model,
    /** The transaction sender: attempts, acknowledged transactions, pause/resume, flushed(). */
    appservice: sender,
    /** Client-side pings received and what the proxy's ping route answered. */
    pings,
    /** Points transactions and pings at the proxy (a URL, or a handler such as `app.handle`). */
    connectAppservice: (target: Target | undefined) => {
      appserviceTarget = target
      sender.connect(target)
    },
    setDisplayName: (user: string, name: string) => displayNames.set(user, name),
    /** A message as `user`; the event id. */
    sendText: (user: string, room: string, body: string, extra: Record<string, unknown> = {}) =>
      model.send(user, room, 'm.room.message', { msgtype: 'm.text', body, ...extra }),
    /** An edit of `eventId` as `user`, shaped as Element sends it. */
    edit: (user: string, room: string, eventId: string, body: string) =>
      model.send(user, room, 'm.room.message', {
        msgtype: 'm.text',
        body: `* ${body}`,
        'm.new_content': { msgtype: 'm.text', body },
        'm.relates_to': { rel_type: 'm.replace', event_id: eventId },
      }),
    setName: (user: string, room: string, name: string) => model.setState(user, room, 'm.room.name', '', { name }),
    /** Replaces `room` by `replacement` (an m.room.tombstone as `user`). */
    tombstone: (user: string, room: string, replacement: string) =>
      model.setState(user, room, 'm.room.tombstone', '', { body: 'This room has been replaced', replacement_room: replacement }),
    /**
     * A direct chat as Element Web makes it: `a` creates it with is_direct and invites `b`;
     * `b` joins unless `join: false`. The room id.
     */
    directChat: (a: string, b: string, o: { join?: boolean; encrypted?: boolean } = {}) => {
      const room = model.createRoom(a, {
        preset: 'trusted_private_chat',
        is_direct: true,
        invite: [b],
        ...(o.encrypted ? { initial_state: [{ type: 'm.room.encryption', state_key: '', content: { algorithm: 'm.megolm.v1.aes-sha2' } }] } : {}),
      })
      if (o.join !== false) model.join(b, room)
      return room
    },
    /** Answer instead of the fake's own logic when the function returns a Response. */
    override: (fn: Override | undefined) => {
      override = fn
    },
    stop: () => {
      sender.stop()
      server.stop(true)
    },
  }
}

export type FakeSynapse = ReturnType<typeof startFakeSynapse>
