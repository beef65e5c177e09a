/**
 * AUTH_MODE=ext, the password backend of NethVoice installations (what the Go proxy did, minus
 * its cache that accepted any password): `POST {EXT_AUTH_URL}/api/login` with
 * `{"username", "password"}` answers 200 `{"token": <JWT>}`; the JWT must carry
 * `"nethvoice_cti.chat": true`; then `GET {EXT_AUTH_URL}/api/chat?users=1` with that JWT lists the
 * users, whose mapping names the account's Matrix user and is kept for the whole service (push
 * and messaging addresses). A CTI that cannot answer is a 503, never a 401. The limits and the
 * cache are the shared verifier's (matrix/auth.ts).
 */
import type { Logger } from 'pino'
import { forbidden, unauthorized, unavailable } from '../errors.ts'
import type { CheckResult, PasswordBackend } from '../matrix/auth.ts'
import type { FetchFn } from '../matrix/client.ts'
import type { MappingEntry } from '../report/mapping.ts'
import { resolveMatrixUser } from '../report/identity.ts'
import { redactUserinfo } from '../secrets.ts'
import { Value } from '@sinclair/typebox/value'
import { ChatAnswerSchema, ctiUsername, jwtPayload, mayChat, usersToMapping } from './directory.ts'

export interface CtiDirectory {
  /** The CTI's users as last listed (empty until the first good check), then MAPPING_FILE's entries. */
  entries(): readonly MappingEntry[]
}

class CtiUnavailable extends Error {}

export function ctiPasswordBackend(o: {
  url: string
  timeoutMs: number
  serverName: string
  /** MAPPING_FILE entries, consulted after the CTI's own. */
  mapping: readonly MappingEntry[]
  log: Logger
  fetch?: FetchFn
}): PasswordBackend & { directory: CtiDirectory } {
  const doFetch = o.fetch ?? fetch
  // The CTI's users then MAPPING_FILE's, built once per listing: address rendering reads it per message.
  let entries: readonly MappingEntry[] = o.mapping
  const where = redactUserinfo(o.url)

  async function call(path: string, init: RequestInit): Promise<{ status: number; json: unknown }> {
    let response: Response
    let text: string
    try {
      response = await doFetch(o.url + path, { ...init, signal: AbortSignal.timeout(o.timeoutMs), redirect: 'manual' })
      text = await response.text()
    } catch (e) {
      const err = e as Error
      throw new CtiUnavailable(err.name === 'TimeoutError' ? `no answer from ${where}${path} within ${o.timeoutMs} ms` : `${where}${path} unreachable: ${err.message}`)
    }
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch {
      json = undefined
    }
    return { status: response.status, json }
  }

  async function check(username: string, password: string, log: Logger): Promise<CheckResult> {
    const login = ctiUsername(username)
    const answer = await call('/api/login', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ username: login, password }),
    })
    if (answer.status === 400 || answer.status === 401 || answer.status === 403 || answer.status === 404) {
      log.info({ username: login, status: answer.status }, 'login refused by the CTI server')
      return { ok: false, reason: 'invalid_credentials', error: unauthorized('Invalid username or password'), failure: true }
    }
    if (answer.status !== 200) throw new CtiUnavailable(`${where}/api/login answered ${answer.status}`)
    const token = (answer.json as { token?: unknown } | undefined)?.token
    const payload = jwtPayload(token)
    if (payload === undefined) throw new CtiUnavailable(`${where}/api/login answered 200 without a JWT in "token"`)
    if (!mayChat(payload)) {
      log.info({ username: login }, 'the CTI server does not allow this user chat (nethvoice_cti.chat is not true)')
      return { ok: false, reason: 'not_allowed', error: forbidden('This account may not use chat (nethvoice_cti.chat)'), failure: false }
    }
    const listed = await call('/api/chat?users=1', { method: 'GET', headers: { authorization: `Bearer ${token as string}`, accept: 'application/json' } })
    if (listed.status !== 200 || !Value.Check(ChatAnswerSchema, listed.json)) {
      throw new CtiUnavailable(`${where}/api/chat?users=1 answered ${listed.status}${listed.status === 200 ? ' without a users list' : ''}`)
    }
    entries = [...usersToMapping(listed.json.users, o.serverName), ...o.mapping]
    const resolved = resolveMatrixUser({ username: login, selector: '' }, entries, o.serverName)
    if (!resolved.ok) return { ok: false, reason: 'invalid_username', error: resolved.error, failure: false }
    return { ok: true, userId: resolved.userId }
  }

  return {
    normalize: (username) => ctiUsername(username).toLowerCase(),
    async check(username, password, _ticket, _client, log) {
      try {
        return await check(username, password, log)
      } catch (e) {
        if (!(e instanceof CtiUnavailable)) throw e
        // Never 401 when the CTI could not answer: the app would treat a good password as bad.
        log.error({ username: ctiUsername(username), err: e.message }, 'CTI server could not check the password')
        throw unavailable('The CTI server could not check the credentials; try again later')
      }
    },
    directory: { entries: () => entries },
  }
}
