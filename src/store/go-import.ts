/**
 * Moving over from the Go proxy: when PUSH_TOKEN_DB_PATH points at its database, the rows of its
 * `push_tokens` table (selector, token_msgs, appid_msgs, token_calls, appid_calls, created_at,
 * updated_at) become registrations once, in the migration that creates this service's tables. The
 * Go table itself is only read. The Go proxy never stored the Matrix user, so imported rows have
 * none until the app's next report names it: notify finds them by pushkey at once (the Go proxy's
 * pushers on Synapse already call the same PROXY_URL), and nothing else is done for them.
 */
import type { Database } from 'bun:sqlite'

interface GoRow {
  selector: unknown
  token_msgs: unknown
  appid_msgs: unknown
  token_calls: unknown
  appid_calls: unknown
  created_at: unknown
  updated_at: unknown
}

const text = (v: unknown): string | undefined => {
  if (typeof v !== 'string') return undefined
  const trimmed = v.trim()
  return trimmed === '' ? undefined : trimmed
}

/**
 * A Go DATETIME as the Go driver wrote it (`2025-01-02 15:04:05.123456789+00:00`, SQLite's
 * `CURRENT_TIMESTAMP` `2025-01-02 15:04:05`, RFC 3339, or `... +0000 UTC` from time.Time's
 * String) or a number of seconds / milliseconds, in ms since the epoch; `fallback` when unreadable.
 */
export function parseGoTime(value: unknown, fallback: number): number {
  if (typeof value === 'number' && Number.isFinite(value)) return value < 1e12 ? Math.round(value * 1000) : Math.round(value)
  if (typeof value !== 'string') return fallback
  const m = /^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(\.\d+)?\s*(Z|[+-]\d{2}:?\d{2})?/.exec(value.trim())
  if (!m) return fallback
  const fraction = (m[3] ?? '').slice(0, 4)
  let zone = m[4] ?? 'Z'
  if (/^[+-]\d{4}$/.test(zone)) zone = `${zone.slice(0, 3)}:${zone.slice(3)}`
  const ms = Date.parse(`${m[1]}T${m[2]}${fraction}${zone}`)
  return Number.isNaN(ms) ? fallback : ms
}

/** The registration an imported Go row becomes (a token without its app id cannot be pushed to: dropped). */
export function fromGoRow(row: GoRow, now: number) {
  const selector = text(row.selector)
  if (selector === undefined) return undefined
  let tokenMsgs = text(row.token_msgs)
  let appIdMsgs = text(row.appid_msgs)
  if (tokenMsgs === undefined || appIdMsgs === undefined) tokenMsgs = appIdMsgs = undefined
  let tokenCalls = text(row.token_calls)
  let appIdCalls = text(row.appid_calls)
  if (tokenCalls === undefined || appIdCalls === undefined) tokenCalls = appIdCalls = undefined
  const createdAt = parseGoTime(row.created_at, now)
  return { selector, tokenMsgs, appIdMsgs, tokenCalls, appIdCalls, createdAt, updatedAt: parseGoTime(row.updated_at, createdAt) }
}

/** Copies the Go proxy's rows into `registrations` (existing selectors win); returns how many. */
export function importGoPushTokens(db: Database, now = Date.now()): { found: number; imported: number } | undefined {
  const table = db.query("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'push_tokens'").get()
  if (!table) return undefined
  const rows = db.query('SELECT selector, token_msgs, appid_msgs, token_calls, appid_calls, created_at, updated_at FROM push_tokens').all() as GoRow[]
  const insert = db.prepare(`
    INSERT INTO registrations (selector, username, matrix_user_id, token_msgs, app_id_msgs, token_calls, app_id_calls, created_at, updated_at)
    VALUES (?, NULL, NULL, ?, ?, ?, ?, ?, ?) ON CONFLICT (selector) DO NOTHING`)
  let imported = 0
  for (const row of rows) {
    const r = fromGoRow(row, now)
    if (!r) continue
    imported += insert.run(r.selector, r.tokenMsgs ?? null, r.appIdMsgs ?? null, r.tokenCalls ?? null, r.appIdCalls ?? null, r.createdAt, r.updatedAt).changes
  }
  insert.finalize()
  return { found: rows.length, imported }
}
