/**
 * The Push Token Reporter's body. Its field names and content type come from a provisioning
 * template the operator wrote, so both JSON and form encoding are read, every known spelling of a
 * field is accepted, values are trimmed, and an empty value means "not given". Pure.
 */
import { t } from 'elysia'
import { badRequest, notJson } from '../errors.ts'

const Field = t.Optional(t.Union([t.String(), t.Null()]))

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
export function parseReportBody(contentType: string | null, text: string): Record<string, unknown> {
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
  const params = new URLSearchParams(text)
  const fields: Record<string, string> = {}
  for (const [key, value] of params) if (!(key in fields)) fields[key] = value
  return fields
}

const value = (v: string | null | undefined) => {
  const trimmed = v?.trim()
  return trimmed ? trimmed : undefined
}

export function normalizeReport(body: ReportBody): Report {
  const selector = value(body.selector)
  if (selector === undefined) throw badRequest('selector is missing or empty')
  const report: Report = {
    selector,
    tokenMsgs: value(body.token_msgs),
    appIdMsgs: value(body.app_id_msgs) ?? value(body.appId_msgs) ?? value(body.appid_msgs),
    tokenCalls: value(body.token_calls),
    appIdCalls: value(body.app_id_calls) ?? value(body.appId_calls) ?? value(body.appid_calls),
    username: value(body.username),
    password: value(body.password),
  }
  if (report.tokenMsgs !== undefined && report.appIdMsgs === undefined) throw badRequest('token_msgs is given without app_id_msgs')
  if (report.tokenCalls !== undefined && report.appIdCalls === undefined) throw badRequest('token_calls is given without app_id_calls')
  // Synapse refuses longer values in pushers/set; refuse them here, where the app can be told.
  if (report.tokenMsgs !== undefined && Buffer.byteLength(report.tokenMsgs) > 512) throw badRequest('token_msgs is longer than 512 bytes')
  if (report.appIdMsgs !== undefined && report.appIdMsgs.length > 64) throw badRequest('app_id_msgs is longer than 64 characters')
  return report
}
