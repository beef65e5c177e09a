/**
 * A fake Synapse on 127.0.0.1, faithful to what the proxy relies on (FIELD-GUIDE §2): password
 * login and logout, pushers/set through an application service (namespace and registration checks,
 * one pusher per (user, app_id, pushkey) whose data a new set replaces; append: false also removes
 * other users' pushers of that app_id + pushkey, append: true leaves them; kind: null deletes the
 * acting user's pusher only; the url path check), and whoami. `push` sends an event to a user's
 * pushers as Synapse's HTTP pusher does (FIELD-GUIDE §3: `data` minus `url` echoed, one device per
 * request) and, like Synapse, deletes only that user's pusher for a rejected pushkey. It records
 * every request; `override` makes it misbehave on purpose.
 */
export interface Recorded {
  method: string
  path: string
  query: Record<string, string>
  authorization?: string
  body: any
}

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

export type Override = (req: Recorded) => Response | undefined | Promise<Response | undefined>

export interface FakeSynapseOptions {
  asToken?: string
  serverName?: string
  /** Users namespace regex of the appservice registration. */
  namespace?: RegExp
  /** localpart -> password */
  users?: Record<string, string>
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

  const userId = (localpart: string) => `@${localpart}:${serverName}`
  const localpartOf = (user: string) => {
    const m = /^@([^:]+):(.+)$/.exec(user)
    if (!m) return user.toLowerCase()
    return m[2] === serverName ? m[1]! : undefined
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
    const asUser = () => {
      if (!req.authorization) return json(401, { errcode: 'M_MISSING_TOKEN', error: 'Missing access token.' })
      if (req.authorization !== `Bearer ${asToken}`) return json(401, { errcode: 'M_UNKNOWN_TOKEN', error: 'Invalid access token passed.' })
      const user = req.query.user_id
      if (user === undefined) return json(403, { errcode: 'M_FORBIDDEN', error: 'Application service has no user_id' })
      if (!namespace.test(user)) return json(403, { errcode: 'M_FORBIDDEN', error: 'Application service cannot masquerade as this user (' + user + ').' })
      const localpart = localpartOf(user)
      if (localpart === undefined || !users.has(localpart)) return json(403, { errcode: 'M_FORBIDDEN', error: 'Application service has not registered this user (' + user + ')' })
      return user
    }
    if (req.method === 'POST' && req.path === '/_matrix/client/v3/pushers/set') {
      const user = asUser()
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
      const user = asUser()
      if (user instanceof Response) return user
      return json(200, { user_id: user })
    }
    return json(404, { errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' })
  }

  const server = Bun.serve({
    hostname: '127.0.0.1',
    port: 0,
    async fetch(request) {
      const url = new URL(request.url)
      const text = await request.text()
      let body: unknown
      try {
        body = text ? JSON.parse(text) : undefined
      } catch {
        body = text
      }
      const rec: Recorded = {
        method: request.method,
        path: url.pathname,
        query: Object.fromEntries(url.searchParams),
        authorization: request.headers.get('authorization') ?? undefined,
        body,
      }
      requests.push(rec)
      return (await override?.(rec)) ?? route(rec)
    },
  })

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
    addUser: (localpart: string, password: string) => users.set(localpart, password),
    openSessions: () => sessions.size,
    /** Answer instead of the fake's own logic when the function returns a Response. */
    override: (fn: Override | undefined) => {
      override = fn
    },
    stop: () => server.stop(true),
  }
}

export type FakeSynapse = ReturnType<typeof startFakeSynapse>
