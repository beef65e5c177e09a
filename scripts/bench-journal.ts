/**
 * What this release's notify path costs against the previous one, in the same process and run:
 * the account looked up by (app id, pushkey, selector) with every outcome journalled (buffered,
 * written once a second) versus the pushkey lookup without a journal. The PNM answers in memory
 * (no HTTP), so the figure is the gateway's own work: CPU µs per notification, median of
 * alternating rounds, and the ratio. `bun scripts/bench-journal.ts [notifications]`.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { createDedupe, inProcessFilter } from '../src/gateway/dedupe.ts'
import { createDeliveryJournal } from '../src/gateway/journal.ts'
import { createNotifyHandler } from '../src/gateway/notify.ts'
import type { Notification } from '../src/gateway/schema.ts'
import { createMetrics } from '../src/metrics.ts'
import type { PnmClient } from '../src/pnm/client.ts'
import { planPusherCalls } from '../src/report/plan.ts'
import { openSqliteStore } from '../src/store/sqlite.ts'
import { BENCH_APP_ID, selectorFor, tokenFor } from './bench-data.ts'

const N = Number(process.argv[2] ?? 20_000)
const TOKENS = 1_000
const ROUNDS = 9
const CONCURRENCY = 16

const dir = mkdtempSync(join(tmpdir(), 'm2a-bench-journal-'))
// An instant PNM 200, in memory: the HTTP round trip is the same for both variants and would
// drown the difference in its noise.
const OK = JSON.stringify({ code: 200, response: 'OK' })
const pnm: PnmClient = { send: () => Promise.resolve({ kind: 'answer', status: 200, body: OK }), inflight: () => 0 }
const store = openSqliteStore(join(dir, 'tokens.db'))
try {
  for (let i = 0; i < TOKENS; i++) {
    await store.saveRegistration({ selector: selectorFor(i), matrixUserId: `@u${i}:example.org`, tokenMsgs: tokenFor(i), appIdMsgs: BENCH_APP_ID }, Date.now(), planPusherCalls(false))
  }
  const log = pino({ level: 'silent' })
  const handler = (journalled: boolean) =>
    createNotifyHandler({
      config: { pnmVerb: 'NotifyTextMessage', fallbackText: 'New message', pnmTimeoutMs: 10_000 },
      store,
      pnm,
      dedupe: inProcessFilter(createDedupe({ now: Date.now })),
      journal: journalled ? createDeliveryJournal({ store, log }) : undefined,
      log,
      metrics: createMetrics(),
      now: Date.now,
    })
  const variants = {
    'pushkey lookup, no journal (before)': { notify: handler(false), selector: false },
    'selector lookup, no journal': { notify: handler(false), selector: true },
    'selector lookup + journal (now)': { notify: handler(true), selector: true },
  }
  let serial = 0
  const notification = (i: number, selector: boolean): Notification => ({
    event_id: `$bench-${serial++}`,
    room_id: '!room:example.org',
    prio: 'high',
    counts: { unread: 1 },
    devices: [{ app_id: BENCH_APP_ID, pushkey: tokenFor(i), data: selector ? { format: 'event_id_only', selector: selectorFor(i) } : { format: 'event_id_only' } }],
  })
  async function round(v: (typeof variants)[keyof typeof variants]) {
    let next = 0
    const before = process.cpuUsage()
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        for (let k = next++; k < N; k = next++) await v.notify(notification(k % TOKENS, v.selector), { id: `bench-${k}`, started: 0 })
      }),
    )
    const used = process.cpuUsage(before)
    return (used.user + used.system) / N
  }
  const results: Record<string, number[]> = {}
  for (const v of Object.values(variants)) await round(v) // warm-up
  for (let r = 0; r < ROUNDS; r++) for (const [name, v] of Object.entries(variants)) (results[name] ??= []).push(await round(v))
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
  const [before, , now] = Object.values(results).map(median) as [number, number, number]
  for (const [name, xs] of Object.entries(results)) console.log(`${name.padEnd(40)} ${median(xs).toFixed(1)} µs CPU per notification (rounds: ${xs.map((x) => x.toFixed(1)).join(', ')})`)
  console.log(`ratio now / before: ×${(now / before).toFixed(3)} (${N} notifications per round, ${ROUNDS} rounds, concurrency ${CONCURRENCY}, ${TOKENS} tokens)`)
} finally {
  await store.close()
  rmSync(dir, { recursive: true, force: true })
}
