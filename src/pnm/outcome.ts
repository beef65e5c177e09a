/**
 * What an Acrobits PNM answer means for the token and for Synapse. Pure.
 * PNM answers HTTP 2xx with a JSON body whose integer result is named `status` in Acrobits' docs
 * and `code` in deployed clients; 404 from either means the device token is gone for good.
 */
import { tokenHash } from '../secrets.ts'

export type PnmOutcome =
  | { kind: 'delivered' }
  /** Device token no longer registered: reject the pushkey and forget it. */
  | { kind: 'token_invalid'; detail: string }
  /** The PNM refused this message; retrying the same request cannot help. */
  | { kind: 'bad_request'; detail: string }
  /** 5xx, timeout, connection error, or an answer that cannot be trusted: retry. */
  | { kind: 'transient'; detail: string }

export type PnmAnswer =
  | { kind: 'answer'; status: number; body: string }
  | { kind: 'timeout'; afterMs: number }
  | { kind: 'network'; message: string }

function resultCode(body: string, deviceToken: string | undefined): { json: boolean; code?: number; text?: string } {
  let parsed: unknown
  try {
    parsed = JSON.parse(body)
  } catch {
    return { json: false }
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return { json: false }
  const obj = parsed as Record<string, unknown>
  const raw = obj.code ?? obj.status
  const code = typeof raw === 'number' ? raw : typeof raw === 'string' && /^\d+$/.test(raw) ? Number(raw) : undefined
  const text = typeof obj.response === 'string' ? withoutToken(obj.response, deviceToken).slice(0, 200) : undefined
  return { json: true, code, text }
}

/**
 * The PNM's text with the device token it was sent replaced by its short hash: the text goes into
 * log lines and the delivery journal, which never hold a full token, and a PNM may quote it.
 */
function withoutToken(text: string, deviceToken: string | undefined): string {
  return deviceToken && text.includes(deviceToken) ? text.replaceAll(deviceToken, `[token ${tokenHash(deviceToken)}]`) : text
}

/** `deviceToken`: the one the request carried, never repeated in the outcome's detail. */
export function classifyPnmAnswer(answer: PnmAnswer, deviceToken?: string): PnmOutcome {
  if (answer.kind === 'timeout') return { kind: 'transient', detail: `no answer within ${answer.afterMs} ms` }
  if (answer.kind === 'network') return { kind: 'transient', detail: `connection failed: ${answer.message}` }
  const { status } = answer
  const { json, code, text } = resultCode(answer.body, deviceToken)
  const detail = `HTTP ${status}${code === undefined ? '' : `, code ${code}`}${text ? `: ${text}` : ''}`
  if (status >= 500) return { kind: 'transient', detail }
  if (status === 404 || code === 404) return { kind: 'token_invalid', detail }
  if (status === 400 || code === 400) return { kind: 'bad_request', detail }
  if (status >= 200 && status < 300) {
    if (!json) return { kind: 'transient', detail: `${detail}: body is not a JSON object` }
    if (code === undefined || (code >= 200 && code < 300)) return { kind: 'delivered' }
  }
  return { kind: 'transient', detail }
}
