/** The harness with messaging on, and the two calls these tests make: a transaction in, a fetch out. */
import { startHarness, type HarnessOptions } from '../harness.ts'
import { HS_TOKEN } from './events.ts'

export const PASSWORDS: Record<string, string> = { alice: 'alice-password', bob: 'bob-password', carol: 'carol-password' }

export async function startMessaging(options: HarnessOptions = {}) {
  const h = await startHarness({
    ...options,
    synapse: { users: PASSWORDS, hsToken: HS_TOKEN, sender: { retryDelayMs: () => 20 }, ...options.synapse },
    env: { MATRIX_HS_TOKEN: HS_TOKEN, ...options.env },
  })
  // The fake Synapse PUTs its transactions to the app, as Synapse does to the proxy's URL.
  h.synapse.connectAppservice({ handle: (r) => h.app.handle(r) })
  return {
    ...h,
    /** Every queued transaction acknowledged, and every job the index holds run. */
    async settle() {
      for (let i = 0; i < 5; i++) {
        await h.synapse.appservice.flushed()
        await h.messaging.jobs?.idle()
        await Bun.sleep(5)
      }
    },
    txn: (txnId: string | number, events: unknown[], token: string | null = HS_TOKEN) =>
      h.request('PUT', `/_matrix/app/v1/transactions/${txnId}`, { events }, token === null ? {} : { authorization: `Bearer ${token}` }),
    fetch: (user: string, fields: Record<string, string> = {}) =>
      h.request('POST', '/api/client/fetch_messages', { username: user, password: PASSWORDS[user] ?? 'x', ...fields }),
  }
}

export type Messaging = Awaited<ReturnType<typeof startMessaging>>
