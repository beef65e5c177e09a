/** The pushers/set bodies this proxy sends (Client-Server API, "POST /pushers/set"). Pure. */
import type { PusherFormat } from '../config.ts'
import type { PusherBody } from '../matrix/client.ts'
import type { PusherOp } from '../store/types.ts'

export const DEVICE_DISPLAY_NAME = 'Acrobits Softphone'

export function pusherBody(op: PusherOp, gatewayUrl: string, format: PusherFormat): PusherBody {
  if (op.action === 'delete') return { kind: null, app_id: op.appId, pushkey: op.pushkey }
  return {
    kind: 'http',
    app_id: op.appId,
    pushkey: op.pushkey,
    app_display_name: op.appId,
    device_display_name: DEVICE_DISPLAY_NAME,
    lang: 'en',
    // append: false makes Synapse drop this app_id + pushkey from every other user: a device
    // token follows the account that reported it last.
    append: false,
    data: format === 'event_id_only' ? { url: gatewayUrl, format: 'event_id_only' } : { url: gatewayUrl },
  }
}
