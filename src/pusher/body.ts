/** The pushers/set bodies this proxy sends (Client-Server API, "POST /pushers/set"). Pure. */
import type { PusherFormat } from '../config.ts'
import type { PusherBody } from '../matrix/client.ts'
import type { PusherJob } from '../store/types.ts'

export const DEVICE_DISPLAY_NAME = 'Acrobits Softphone'

/** The key of `data` that names the account; Synapse sends `data` (minus `url`) back in every notify. */
export const SELECTOR_DATA_KEY = 'selector'

export function pusherBody(op: Pick<PusherJob, 'action' | 'appId' | 'pushkey' | 'selector'>, gatewayUrl: string, format: PusherFormat): PusherBody {
  if (op.action === 'delete') return { kind: null, app_id: op.appId, pushkey: op.pushkey }
  return {
    kind: 'http',
    app_id: op.appId,
    pushkey: op.pushkey,
    app_display_name: op.appId,
    device_display_name: DEVICE_DISPLAY_NAME,
    lang: 'en',
    // append: true keeps other users' pushers for this app_id + pushkey: an app with two accounts
    // on one phone shares one device token, and each account gets its own pushes. Synapse keeps
    // one pusher per (user, app_id, pushkey) and replaces its data on every set.
    append: true,
    // The selector comes back in every notify (FIELD-GUIDE §3): it tells which account the push is for.
    data: format === 'event_id_only' ? { url: gatewayUrl, format: 'event_id_only', [SELECTOR_DATA_KEY]: op.selector } : { url: gatewayUrl, [SELECTOR_DATA_KEY]: op.selector },
  }
}
