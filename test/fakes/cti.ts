/**
 * A fake NethVoice CTI server on 127.0.0.1 (what the Go proxy's AUTH_MODE talks to):
 * `POST /api/login` with `{"username", "password"}` answers 200 `{"token": <JWT>}` whose payload
 * carries `"nethvoice_cti.chat"`, or 401; `GET /api/chat?users=1` with `Authorization: Bearer <JWT>`
 * answers `{"matrix": {"base_url", "acrobits_url"}, "users": [...]}`, or 401 without a token it
 * issued. It records every request; `override` makes it misbehave on purpose.
 */
import { serveRecording, type Override, type Recorded } from './recording.ts'

export interface CtiUser {
  password: string
  /** The JWT's nethvoice_cti.chat claim. */
  chat: boolean | string | undefined
  main_extension: string
  sub_extensions: string[]
}

export type CtiRecord = Recorded

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url')

export function startFakeCti(options: { users?: Record<string, CtiUser>; extensionsKey?: 'sub_extensions' | 'extensions' } = {}) {
  const users = new Map(
    Object.entries(
      options.users ?? {
        giacomo: { password: 'Giacomo,1234', chat: true, main_extension: '201', sub_extensions: ['91201'] },
        mario: { password: 'Mario,1234', chat: true, main_extension: '202', sub_extensions: [] },
        nochat: { password: 'Nochat,1234', chat: false, main_extension: '203', sub_extensions: [] },
      },
    ),
  )
  let extensionsKey = options.extensionsKey ?? 'sub_extensions'
  const issued = new Set<string>()
  const requests: CtiRecord[] = []
  let override: Override | undefined
  let counter = 0

  function route(r: CtiRecord): Response {
    if (r.method === 'POST' && r.path === '/api/login') {
      const user = users.get(String(r.body?.username ?? ''))
      if (!user || user.password !== r.body?.password) return Response.json({ code: 401, message: 'incorrect Username or Password' }, { status: 401 })
      const payload: Record<string, unknown> = { id: r.body.username, exp: Math.floor(Date.now() / 1000) + 3600, n: ++counter }
      if (user.chat !== undefined) payload['nethvoice_cti.chat'] = user.chat
      const token = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(payload)}.c2lnbmF0dXJl`
      issued.add(token)
      return Response.json({ token })
    }
    if (r.method === 'GET' && r.path === '/api/chat' && r.query.users === '1') {
      const token = r.authorization?.replace(/^Bearer /, '') ?? ''
      if (!issued.has(token)) return Response.json({ code: 401, message: 'token is invalid' }, { status: 401 })
      return Response.json({
        matrix: { base_url: 'https://matrix.example.org', acrobits_url: 'https://matrix.example.org/m2a' },
        users: [...users].map(([name, u]) => ({ user_name: name, main_extension: u.main_extension, [extensionsKey]: u.sub_extensions })),
      })
    }
    return Response.json({ code: 404, message: 'not found' }, { status: 404 })
  }

  const server = serveRecording(requests, async (rec) => (await override?.(rec)) ?? route(rec))

  return {
    url: `http://127.0.0.1:${server.port}`,
    requests,
    calls: (path: string) => requests.filter((r) => r.path === path),
    setUser: (name: string, user: CtiUser) => users.set(name, user),
    /** The CTI is renaming `sub_extensions` to `extensions`. */
    useExtensionsKey: (key: 'sub_extensions' | 'extensions') => {
      extensionsKey = key
    },
    override: (fn: typeof override) => {
      override = fn
    },
    stop: () => server.stop(true),
  }
}

export type FakeCti = ReturnType<typeof startFakeCti>
