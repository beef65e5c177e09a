/** The harness with messaging on, and the two calls these tests make: a transaction in, a fetch out. */
import { startHarness, type HarnessOptions } from '../harness.ts'
import { HS_TOKEN } from './events.ts'

export const PASSWORDS: Record<string, string> = { alice: 'alice-password', bob: 'bob-password', carol: 'carol-password' }

export async function startMessaging(options: HarnessOptions = {}) {
  const h = await startHarness({
    ...options,
    synapse: { users: PASSWORDS, ...options.synapse },
    env: { MATRIX_HS_TOKEN: HS_TOKEN, ...options.env },
  })
  return {
    ...h,
    txn: (txnId: string | number, events: unknown[], token: string | null = HS_TOKEN) =>
      h.request('PUT', `/_matrix/app/v1/transactions/${txnId}`, { events }, token === null ? {} : { authorization: `Bearer ${token}` }),
    fetch: (user: string, fields: Record<string, string> = {}) =>
      h.request('POST', '/api/client/fetch_messages', { username: user, password: PASSWORDS[user] ?? 'x', ...fields }),
  }
}

export type Messaging = Awaited<ReturnType<typeof startMessaging>>
