/**
 * A small fetch-based client for the few client-server API calls the proxy makes. Every call has
 * a timeout; every failure becomes a MatrixError that says whether a retry can help.
 */
export type FetchFn = (input: string | URL | Request, init?: RequestInit) => Promise<Response>

export type MatrixFailure = 'http' | 'network' | 'timeout' | 'bad_response'

export class MatrixError extends Error {
  constructor(
    readonly kind: MatrixFailure,
    message: string,
    readonly status?: number,
    readonly errcode?: string,
    readonly retryAfterMs?: number,
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

export interface MatrixClient {
  /** m.login.password with an m.id.user identifier. */
  login(username: string, password: string): Promise<{ userId: string; accessToken?: string }>
  logout(accessToken: string): Promise<void>
  /** pushers/set acting as `userId` through the application service. */
  setPusher(userId: string, body: PusherBody): Promise<void>
  /** whoami with the appservice token, optionally acting as `userId`. */
  whoami(userId?: string): Promise<{ userId: string }>
}

export function createMatrixClient(options: {
  homeserverUrl: string
  asToken?: string
  timeoutMs: number
  fetch?: FetchFn
}): MatrixClient {
  const doFetch = options.fetch ?? fetch

  async function call(method: string, path: string, init: { token?: string; body?: unknown; userId?: string }) {
    const url = new URL(options.homeserverUrl + path)
    if (init.userId !== undefined) url.searchParams.set('user_id', init.userId)
    const headers: Record<string, string> = { accept: 'application/json' }
    if (init.token !== undefined) headers.authorization = `Bearer ${init.token}`
    if (init.body !== undefined) headers['content-type'] = 'application/json'
    let response: Response
    try {
      response = await doFetch(url, {
        method,
        headers,
        body: init.body === undefined ? undefined : JSON.stringify(init.body),
        signal: AbortSignal.timeout(options.timeoutMs),
        redirect: 'manual',
      })
    } catch (e) {
      const err = e as Error
      if (err.name === 'TimeoutError' || err.name === 'AbortError') {
        throw new MatrixError('timeout', `homeserver did not answer ${path} within ${options.timeoutMs} ms`)
      }
      throw new MatrixError('network', `homeserver unreachable for ${path}: ${err.message}`)
    }
    let json: Record<string, unknown> | undefined
    try {
      const parsed: unknown = await response.json()
      if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) json = parsed as Record<string, unknown>
    } catch {
      json = undefined
    }
    if (!response.ok) {
      const errcode = typeof json?.errcode === 'string' ? json.errcode : undefined
      const error = typeof json?.error === 'string' ? json.error : response.statusText
      const retryAfterMs =
        typeof json?.retry_after_ms === 'number'
          ? json.retry_after_ms
          : Number(response.headers.get('retry-after')) * 1000 || undefined
      throw new MatrixError('http', `${path}: ${response.status} ${errcode ?? ''} ${error}`.replace(/\s+/g, ' '), response.status, errcode, retryAfterMs)
    }
    if (json === undefined) throw new MatrixError('bad_response', `${path}: homeserver answered ${response.status} without a JSON object`, response.status)
    return json
  }

  const requireAsToken = () => {
    if (options.asToken === undefined) throw new MatrixError('http', 'MATRIX_AS_TOKEN is not set', 401, 'M_MISSING_TOKEN')
    return options.asToken
  }

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
  }
}
