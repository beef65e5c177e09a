/**
 * `pushers sync`: registers every stored messages token's pusher again, for a homeserver that lost
 * them (a restore from backup, a wiped database, a new PROXY_URL). It queues the same `set` a token
 * report would (report/plan.ts) and runs the outbox, so a refusal stays queued for the service.
 */
import { missingFor } from '../config.ts'
import { requeuePusher } from '../pusher/requeue.ts'
import { tokenHash } from '../secrets.ts'
import type { Registration } from '../store/types.ts'
import { configOrReport, EXIT_CONFIG, EXIT_FAILED, EXIT_OK, openExistingStore, printable, type CliIo, type Env, type ExitCode } from './common.ts'
import { createCommandWorker, hintFor, settle } from './outbox.ts'

/** Accounts whose pushers are set up at the same time; the homeserver is the limit, not the proxy. */
const CONCURRENCY = 4

export async function runPushersSync(env: Env, options: { verbose?: boolean }, io: CliIo): Promise<ExitCode> {
  const config = configOrReport(env, io)
  if (!config) return EXIT_CONFIG
  if (config.pushGatewayUrl === undefined) {
    io.err('matrix2acrobits: PROXY_URL is not set: there is no push gateway URL to register')
    return EXIT_CONFIG
  }
  const missing = missingFor(config).pushers
  if (missing !== undefined) {
    io.err(`matrix2acrobits: ${missing} is not set: pushers cannot be registered`)
    return EXIT_CONFIG
  }
  const store = await openExistingStore(config, io)
  if (!store) return EXIT_FAILED
  try {
    const queued: { r: Registration; jobIds: number[] }[] = []
    let changed = 0
    let tokenless = 0
    let userless = 0
    for (const r of await store.listRegistrations()) {
      if (r.tokenMsgs === undefined || r.appIdMsgs === undefined) {
        tokenless++
        continue
      }
      if (r.matrixUserId === undefined) {
        userless++
        continue
      }
      const jobs = await requeuePusher(store, r)
      if (jobs === 'changed') changed++
      else queued.push({ r, jobIds: jobs.map((j) => j.id) })
    }

    const worker = await createCommandWorker(config, store)
    let registered = 0
    let failed = 0
    let next = 0
    const runOne = async () => {
      for (let item = queued[next++]; item !== undefined; item = queued[next++]) {
        const { r, jobIds } = item
        const result = await settle(worker, store, config, r.selector, jobIds)
        const what = printable(`${r.selector} ${r.matrixUserId} ${r.appIdMsgs} token ${tokenHash(r.tokenMsgs!)}`)
        if (result.ok) {
          registered++
          if (options.verbose) io.out(`  ok    ${what}`)
        } else {
          failed++
          const hint = hintFor(result.error)
          io.out(`  FAIL  ${what}: ${printable(result.error)}${hint ? ` (${hint})` : ''}`)
        }
      }
    }
    await Promise.all(Array.from({ length: CONCURRENCY }, runOne))

    const parts = [`${registered} pushers registered on the homeserver`]
    if (failed > 0) parts.push(`${failed} failed (still queued; the running service retries them)`)
    if (changed > 0) parts.push(`${changed} skipped (reported again meanwhile, which registers them)`)
    if (tokenless > 0) parts.push(`${tokenless} accounts without a messages token`)
    if (userless > 0) parts.push(`${userless} imported from the Go proxy without a Matrix user yet (registered at their next report)`)
    io.out(parts.join(', '))
    return failed > 0 ? EXIT_FAILED : EXIT_OK
  } finally {
    await store.close()
  }
}
