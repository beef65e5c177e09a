/**
 * `push-test <selector>`: "does a push reach this phone at all?" One NotifyGenericTextMessage
 * (the app only displays it: no fetch, no inbox entry) to the stored messages token, now, through
 * the service's own PNM client with its timeout (PNM_TIMEOUT_MS), and the answer classified by the
 * service's rules (pnm/outcome.ts). Exit 0 only when the PNM answered 200. It changes nothing: a
 * 404 is reported, and the service forgets the token at the next notification as usual.
 */
import type { PnmRequest } from '../gateway/translate.ts'
import type { FetchFn } from '../matrix/client.ts'
import { createPnmClient } from '../pnm/client.ts'
import { classifyPnmAnswer } from '../pnm/outcome.ts'
import { tokenHash } from '../secrets.ts'
import { configOrReport, EXIT_CONFIG, EXIT_FAILED, EXIT_OK, openExistingStore, printable, type CliIo, type Env, type ExitCode } from './common.ts'

export const TEST_MESSAGE = 'Test from matrix2acrobits'

const MEANING = {
  delivered: 'delivered: the PNM accepted the push for this device',
  token_invalid: 'the PNM no longer knows this device token (404): the app must report a new one (it does at its next start); the service rejects the pusher at the next notification',
  bad_request: 'the PNM refused the request (400): usually an app id (app_id_msgs) that does not belong to this build of the app',
  transient: 'the PNM could not be reached or failed; the service would retry and ask Synapse to retry',
} as const

export async function runPushTest(env: Env, selector: string, io: CliIo, options: { fetch?: FetchFn } = {}): Promise<ExitCode> {
  const config = configOrReport(env, io)
  if (!config) return EXIT_CONFIG
  const store = await openExistingStore(config, io)
  if (!store) return EXIT_FAILED
  let row
  try {
    row = await store.getRegistration(selector)
  } finally {
    await store.close()
  }
  if (!row) {
    io.err(`matrix2acrobits: no registration with selector ${printable(selector)}`)
    return EXIT_FAILED
  }
  if (row.tokenMsgs === undefined || row.appIdMsgs === undefined) {
    io.err(`matrix2acrobits: ${printable(selector)} has no messages token (the app has not reported one, or the PNM forgot it)`)
    return EXIT_FAILED
  }
  const request: PnmRequest = { verb: 'NotifyGenericTextMessage', AppId: row.appIdMsgs, DeviceToken: row.tokenMsgs, Selector: row.selector, Message: TEST_MESSAGE, ContentType: 'text/plain' }
  io.out(printable(`sending "${TEST_MESSAGE}" to ${row.selector} (${row.appIdMsgs}, token ${tokenHash(row.tokenMsgs)}) via ${config.pnmUrl}`))
  const pnm = createPnmClient({ url: config.pnmUrl, maxInflight: config.pnmMaxInflight, fetch: options.fetch })
  const started = performance.now()
  const answer = await pnm.send(request, config.pnmTimeoutMs)!
  const ms = Math.round(performance.now() - started)
  const outcome = classifyPnmAnswer(answer, request.DeviceToken)
  if (answer.kind === 'answer') io.out(printable(`PNM answered HTTP ${answer.status} in ${ms} ms: ${answer.body.slice(0, 500) || '(empty body)'}`))
  else if (answer.kind === 'timeout') io.out(`PNM did not answer within ${answer.afterMs} ms (PNM_TIMEOUT_MS)`)
  else io.out(printable(`PNM unreachable after ${ms} ms: ${answer.message}`))
  io.out(`outcome: ${MEANING[outcome.kind]}`)
  return outcome.kind === 'delivered' && answer.kind === 'answer' && answer.status === 200 ? EXIT_OK : EXIT_FAILED
}
