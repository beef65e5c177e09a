/** A client-format event, as transactions, /event, /messages and the proxy's own sends carry it (FIELD-GUIDE §7). */
export interface ClientEvent {
  event_id: string
  room_id: string
  sender: string
  type: string
  origin_server_ts: number
  content: Record<string, unknown>
  state_key?: string
  redacts?: string
  unsigned?: Record<string, unknown>
}

/** A structural check of what the homeserver handed over: enough to store and translate it. */
export function isClientEvent(v: unknown): v is ClientEvent {
  if (v === null || typeof v !== 'object') return false
  const e = v as Record<string, unknown>
  return (
    typeof e.event_id === 'string' &&
    typeof e.room_id === 'string' &&
    typeof e.sender === 'string' &&
    typeof e.type === 'string' &&
    typeof e.origin_server_ts === 'number' &&
    e.content !== null &&
    typeof e.content === 'object' &&
    !Array.isArray(e.content) &&
    (e.state_key === undefined || typeof e.state_key === 'string')
  )
}
