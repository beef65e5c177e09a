/**
 * The Push Token Reporter's body. Its field names and content type come from a provisioning
 * template the operator wrote, so both JSON and form encoding are read, every known spelling of a
 * field is accepted, values are trimmed (passwords excepted), and an empty value means "not given".
 * Every field is checked against what Synapse and the store accept: 400 naming the field. Pure.
 */
import { t } from 'elysia'
import { badRequest, notJson } from '../errors.ts'
import { OptionalText as Field, formFields, MAX_USERNAME_BYTES, refuseControl, refuseLonger, trimmed } from '../form-fields.ts'

export const ReportBodySchema = t.Object(
  {
    selector: Field,
    token_msgs: Field,
    app_id_msgs: Field,
    appId_msgs: Field,
    appid_msgs: Field,
    token_calls: Field,
    app_id_calls: Field,
    appId_calls: Field,
    appid_calls: Field,
    username: Field,
    password: Field,
  },
  { additionalProperties: true, description: 'Fields filled by the Acrobits app from its provisioning template' },
)
export type ReportBody = typeof ReportBodySchema.static

export interface Report {
  readonly selector: string
  readonly tokenMsgs?: string
  readonly appIdMsgs?: string
  readonly tokenCalls?: string
  readonly appIdCalls?: string
  readonly username?: string
  readonly password?: string
}

/** Reports are a few hundred bytes; anything near this is not from the app. */
export const REPORT_BODY_LIMIT = 8 * 1024

/** JSON or form, by Content-Type; without a usable one, by the first character. */
export function parseReportBody(contentType: string | null, text: string, once: readonly string[] = []): Record<string, unknown> {
  const type = (contentType ?? '').split(';')[0]!.trim().toLowerCase()
  const json = type === 'application/json' || type.endsWith('+json') || (type !== 'application/x-www-form-urlencoded' && text.trimStart().startsWith('{'))
  if (json) {
    let parsed: unknown
    try {
      parsed = JSON.parse(text)
    } catch {
      throw notJson('Request body is not valid JSON')
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw badRequest('Request body must be a JSON object')
    return parsed as Record<string, unknown>
  }
  return formFields(new URLSearchParams(text), once)
}

/** The selector "uniquely identifies the account" (FIELD-GUIDE §1): 40 hex, ':', 8 hex in practice. */
const SELECTOR = /^[\x20-\x7e]{1,128}$/
/** Synapse's limits on pushers/set (FIELD-GUIDE §2); the app is told here, where it can be. */
const MAX_PUSHKEY_BYTES = 512
const MAX_APP_ID_CHARS = 64

type FieldName = keyof ReportBody

/** The first non-empty spelling of a field, trimmed, with the name it was sent under. */
function pick(body: ReportBody, names: readonly FieldName[]): { name: FieldName; value: string } | undefined {
  for (const name of names) {
    const value = trimmed(body[name])
    if (value !== undefined) return { name, value }
  }
  return undefined
}


export function normalizeReport(body: ReportBody): Report {
  const selector = pick(body, ['selector'])
  if (selector === undefined) throw badRequest('selector is missing or empty')
  refuseControl('selector', selector.value)
  if (!SELECTOR.test(selector.value)) throw badRequest('selector must be printable ASCII, at most 128 characters')

  const tokenMsgs = pick(body, ['token_msgs'])
  const appIdMsgs = pick(body, ['app_id_msgs', 'appId_msgs', 'appid_msgs'])
  const tokenCalls = pick(body, ['token_calls'])
  const appIdCalls = pick(body, ['app_id_calls', 'appId_calls', 'appid_calls'])
  const username = pick(body, ['username'])
  // Never trimmed: a password may really begin or end with a space. Empty means not given.
  const password = body.password ? { name: 'password' as const, value: body.password } : undefined

  for (const field of [tokenMsgs, appIdMsgs, tokenCalls, appIdCalls, username, password]) {
    if (field !== undefined) refuseControl(field.name, field.value)
  }
  for (const token of [tokenMsgs, tokenCalls]) if (token !== undefined) refuseLonger(token.name, token.value, MAX_PUSHKEY_BYTES)
  for (const appId of [appIdMsgs, appIdCalls]) {
    if (appId !== undefined && appId.value.length > MAX_APP_ID_CHARS) throw badRequest(`${appId.name} is longer than ${MAX_APP_ID_CHARS} characters`)
  }
  refuseLonger('username', username?.value, MAX_USERNAME_BYTES)
  if (tokenMsgs !== undefined && appIdMsgs === undefined) throw badRequest('token_msgs is given without app_id_msgs')
  if (tokenCalls !== undefined && appIdCalls === undefined) throw badRequest('token_calls is given without app_id_calls')
  return {
    selector: selector.value,
    tokenMsgs: tokenMsgs?.value,
    appIdMsgs: appIdMsgs?.value,
    tokenCalls: tokenCalls?.value,
    appIdCalls: appIdCalls?.value,
    username: username?.value,
    password: password?.value,
  }
}
