/**
 * `tokens list | show | delete`: the stored registrations as an operator needs them. Push tokens
 * are secrets (whoever has one can push to the phone), so they appear only as the short hash the
 * logs use, which lets a log line and a row be matched.
 */
import { missingFor, type Config } from '../config.ts'
import { storeName } from '../store/open.ts'
import { planPusherCalls } from '../report/plan.ts'
import { tokenHash } from '../secrets.ts'
import type { Delivery, PusherJob, Registration, TokenStore } from '../store/types.ts'
import { configOrReport, EXIT_CONFIG, EXIT_FAILED, EXIT_OK, isoTime, openExistingStore, printable, printableJson, table, type CliIo, type Env, type ExitCode } from './common.ts'
import { createCommandWorker, hintFor, settle } from './outbox.ts'

/** A registration with its secrets replaced by hashes: what `--json` prints. */
export function describeRegistration(r: Registration, pending: readonly PusherJob[]) {
  return {
    selector: r.selector,
    matrix_user_id: r.matrixUserId ?? null,
    username: r.username ?? null,
    app_id_msgs: r.appIdMsgs ?? null,
    token_msgs_hash: r.tokenMsgs === undefined ? null : tokenHash(r.tokenMsgs),
    app_id_calls: r.appIdCalls ?? null,
    token_calls_hash: r.tokenCalls === undefined ? null : tokenHash(r.tokenCalls),
    created_at: isoTime(r.createdAt),
    updated_at: isoTime(r.updatedAt),
    pending_pusher_calls: pending.filter((j) => j.selector === r.selector).map(describeJob),
  }
}

const describeJob = (j: PusherJob) => ({
  action: j.action,
  user_id: j.userId,
  app_id: j.appId,
  pushkey_hash: tokenHash(j.pushkey),
  attempts: j.attempts,
  next_attempt_at: isoTime(j.nextAttemptAt),
  last_error: j.lastError ?? null,
})

/** A journal row as `tokens show --json` prints it: no message text, no token. */
export const describeDelivery = (d: Delivery) => ({
  time: new Date(d.at).toISOString(),
  event_id: d.eventId ?? null,
  outcome: d.outcome,
  pnm_status: d.pnmStatus ?? null,
  latency_ms: d.latencyMs,
  detail: d.detail ?? null,
})

/** Who a row belongs to, for the operator's eyes. */
const ownerOf = (r: Registration) => r.matrixUserId ?? '(imported from the Go proxy; Matrix user unknown until the next report)'

const hashOrDash = (token: string | undefined) => (token === undefined ? '-' : tokenHash(token))

async function withStore(env: Env, io: CliIo, run: (store: TokenStore, config: Config) => Promise<ExitCode>): Promise<ExitCode> {
  const config = configOrReport(env, io)
  if (!config) return EXIT_CONFIG
  const store = await openExistingStore(config, io)
  if (!store) return EXIT_FAILED
  try {
    return await run(store, config)
  } finally {
    await store.close()
  }
}

export function runTokensList(env: Env, options: { json?: boolean }, io: CliIo) {
  return withStore(env, io, async (store, config) => {
    const rows = await store.listRegistrations()
    const pending = await store.pendingJobs()
    if (options.json) {
      io.out(printableJson(rows.map((r) => describeRegistration(r, pending))))
      return EXIT_OK
    }
    if (rows.length === 0) {
      io.out(`no registrations in ${storeName(config)}`)
      return EXIT_OK
    }
    const lines = table([
      ['SELECTOR', 'MATRIX USER', 'USERNAME', 'MESSAGES APP', 'TOKEN', 'CALLS APP', 'TOKEN', 'PENDING', 'UPDATED'],
      ...rows.map((r) => [
        r.selector,
        r.matrixUserId ?? '-',
        r.username ?? '-',
        r.appIdMsgs ?? '-',
        hashOrDash(r.tokenMsgs),
        r.appIdCalls ?? '-',
        hashOrDash(r.tokenCalls),
        String(pending.filter((j) => j.selector === r.selector).length),
        isoTime(r.updatedAt),
      ]),
    ])
    for (const line of lines) io.out(line)
    io.out(`${rows.length} registration${rows.length === 1 ? '' : 's'}; tokens are shown as the first 12 hex digits of their SHA-256, as in the logs`)
    return EXIT_OK
  })
}

export function runTokensShow(env: Env, selector: string, options: { json?: boolean }, io: CliIo) {
  return withStore(env, io, async (store) => {
    const r = await store.getRegistration(selector)
    const pending = (await store.pendingJobs()).filter((j) => j.selector === selector)
    if (!r) {
      io.err(`matrix2acrobits: no registration with selector ${printable(selector)}${pending.length ? ` (${pending.length} pusher calls still queued for it)` : ''}`)
      return EXIT_FAILED
    }
    const d = describeRegistration(r, pending)
    const journal = (await store.deliveries(selector)).map(describeDelivery)
    if (options.json) {
      io.out(printableJson({ ...d, deliveries: journal }))
      return EXIT_OK
    }
    for (const line of table([
      ['selector', d.selector],
      ['matrix user', ownerOf(r)],
      ['username', d.username ?? '-'],
      ['messages', d.app_id_msgs === null ? '-' : `${d.app_id_msgs} token ${d.token_msgs_hash}`],
      ['calls', d.app_id_calls === null ? '-' : `${d.app_id_calls} token ${d.token_calls_hash}`],
      ['created', d.created_at],
      ['updated', d.updated_at],
      ['pending pusher calls', String(d.pending_pusher_calls.length)],
    ])) {
      io.out(line)
    }
    for (const j of d.pending_pusher_calls) {
      io.out(
        printable(
          `  ${j.action} ${j.app_id} token ${j.pushkey_hash} for ${j.user_id}: ${j.attempts} attempts, next ${j.next_attempt_at}` +
            (j.last_error ? `, last error: ${j.last_error}` : ''),
        ),
      )
    }
    if (journal.length === 0) {
      io.out('deliveries: none recorded yet (the journal keeps the last 50 outcomes of notifications for this account)')
      return EXIT_OK
    }
    io.out(`deliveries (last ${journal.length}, newest first):`)
    for (const line of table([
      ['  TIME', 'EVENT', 'OUTCOME', 'PNM', 'LATENCY', 'DETAIL'],
      ...journal.map((j) => [`  ${j.time}`, j.event_id ?? '-', j.outcome, j.pnm_status === null ? '-' : String(j.pnm_status), `${j.latency_ms} ms`, j.detail ?? '']),
    ])) {
      io.out(line)
    }
    return EXIT_OK
  })
}

export function runTokensDelete(env: Env, selector: string, io: CliIo) {
  return withStore(env, io, async (store, config) => {
    const missing = missingFor(config).pushers
    if (missing !== undefined) {
      io.err(`matrix2acrobits: ${missing} is not set: the pusher on the homeserver cannot be deleted; nothing changed`)
      return EXIT_CONFIG
    }
    // The same decision the Account Removal Reporter makes (report/plan.ts); without PROXY_URL
    // this proxy registers no pushers, so there is none to delete.
    const pushersEnabled = config.pushGatewayUrl !== undefined
    const { previous, jobs } = await store.removeRegistration(selector, Date.now(), planPusherCalls(pushersEnabled))
    if (!previous) {
      io.err(`matrix2acrobits: no registration with selector ${printable(selector)}`)
      return EXIT_FAILED
    }
    io.out(printable(`deleted ${selector} (${ownerOf(previous)}, messages token ${hashOrDash(previous.tokenMsgs)})`))
    if (!pushersEnabled) {
      io.out('PROXY_URL is not set: this proxy registers no pushers, so none was deleted on the homeserver')
      return EXIT_OK
    }
    if (jobs.length === 0) {
      io.out('no messages token was stored: there is no pusher to delete')
      return EXIT_OK
    }
    const worker = await createCommandWorker(config, store)
    const result = await settle(worker, store, config, selector, jobs.map((j) => j.id))
    if (result.ok) {
      for (const j of jobs) io.out(printable(`pusher ${j.appId} token ${tokenHash(j.pushkey)} of ${j.userId} deleted on the homeserver`))
      return EXIT_OK
    }
    const hint = hintFor(result.error)
    io.err(`matrix2acrobits: the homeserver did not delete the pusher: ${result.error}${hint ? ` (${hint})` : ''}`)
    io.err('the deletion stays queued in the database; the running service retries it')
    return EXIT_FAILED
  })
}
