/**
 * The Push Gateway API body (`POST /_matrix/push/v1/notify`), open wherever Synapse sends more
 * than the spec says: unknown fields pass, `type: null`, `sender: ""` and `unread: 0` are normal.
 */
import { t } from 'elysia'

/** At most this many devices per notification; more is 400 M_BAD_JSON. */
export const MAX_DEVICES_PER_NOTIFY = 16

const OptionalText = t.Optional(t.Union([t.String(), t.Null()]))
const Open = t.Record(t.String(), t.Unknown())

export const DeviceSchema = t.Object(
  {
    app_id: t.String(),
    pushkey: t.String(),
    pushkey_ts: t.Optional(t.Union([t.Number(), t.Null()])),
    data: t.Optional(t.Union([Open, t.Null()])),
    tweaks: t.Optional(t.Union([Open, t.Null()])),
  },
  { additionalProperties: true },
)

export const NotificationSchema = t.Object(
  {
    id: OptionalText,
    event_id: OptionalText,
    room_id: OptionalText,
    type: OptionalText,
    sender: OptionalText,
    sender_display_name: OptionalText,
    room_name: OptionalText,
    room_alias: OptionalText,
    user_is_target: t.Optional(t.Union([t.Boolean(), t.Null()])),
    prio: OptionalText,
    content: t.Optional(t.Union([Open, t.Null()])),
    counts: t.Optional(
      t.Union([
        t.Object(
          {
            unread: t.Optional(t.Union([t.Number(), t.Null()])),
            missed_calls: t.Optional(t.Union([t.Number(), t.Null()])),
          },
          { additionalProperties: true },
        ),
        t.Null(),
      ]),
    ),
    // Synapse sends exactly one device per notify (FIELD-GUIDE §3); thousands in one body only
    // multiply the lookups and log lines an unauthenticated caller can cause.
    devices: t.Array(DeviceSchema, { maxItems: MAX_DEVICES_PER_NOTIFY }),
  },
  { additionalProperties: true },
)

export const NotifyBodySchema = t.Object({ notification: NotificationSchema }, { additionalProperties: true })
// Closed explicitly: Elysia closes a response schema on the route's first call anyway (mutating it),
// and the OpenAPI document must not depend on whether a notification came first.
export const NotifyResponseSchema = t.Object({ rejected: t.Array(t.String()) }, { additionalProperties: false })

export type NotifyBody = typeof NotifyBodySchema.static
export type Notification = typeof NotificationSchema.static
export type Device = typeof DeviceSchema.static
