/**
 * The service's own work per notification, without the network: the app built by compose() in this
 * process, driven through `app.handle()` 16 notifications at a time, against a PNM that answers at
 * once in process (an injected fetch). No sockets, no HTTP parsing, no load generator competing for
 * the cores: what is left is routing, the body read and validation, the lookup, the duplicate
 * filter, translation, metrics and logging. CPU time of this process per notification, per sample.
 *
 *   bun scripts/bench-own-work.ts [--level INFO|WARNING|...] [--samples 5] [--count 8000]
 */
import { Database } from 'bun:sqlite'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import pino from 'pino'
import { compose } from '../src/compose.ts'
import { loadConfig } from '../src/config.ts'
import { migrate } from '../src/store/migrations.ts'
import { BENCH_APP_ID, BENCH_SERVER_NAME, eventIdFor, fullNotifyBody, selectorFor, tokenFor } from './bench-data.ts'

const { values: args } = parseArgs({
  args: Bun.argv.slice(2),
  options: { level: { type: 'string' }, samples: { type: 'string' }, count: { type: 'string' } },
})
const LEVEL = args.level ?? 'INFO'
const SAMPLES = Number(args.samples ?? 5)
const COUNT = Number(args.count ?? 8000)
const CONCURRENCY = 16
const TOKENS = 1000
const PNM_OK = JSON.stringify({ code: 200, response: 'OK' })

const dir = mkdtempSync(join(tmpdir(), 'm2a-own-work-'))
try {
  const dbPath = join(dir, 'tokens.db')
  const db = new Database(dbPath, { create: true })
  migrate(db)
  const insert = db.prepare(
    `INSERT INTO registrations (selector, username, matrix_user_id, token_msgs, app_id_msgs, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 1, 1)`,
  )
  db.transaction(() => {
    for (let i = 0; i < TOKENS; i++) insert.run(selectorFor(i), `user${i}`, `@user${i}:${BENCH_SERVER_NAME}`, tokenFor(i), BENCH_APP_ID)
  })()
  db.run('PRAGMA journal_mode = WAL')
  db.close()

  const loaded = loadConfig({
    PUSH_TOKEN_DB_PATH: dbPath,
    PNM_URL: 'http://127.0.0.1:9/pnm2/send',
    AUTH_MODE: 'none',
    MATRIX_SERVER_NAME: BENCH_SERVER_NAME,
    LOGLEVEL: LEVEL,
  })
  if (!loaded.ok) throw new Error(loaded.errors.join('\n'))
  const service = compose(loaded.config, {
    // As the executable writes: synchronously, to a file (the benchmark's stdout is a file too).
    logDestination: pino.destination({ dest: join(dir, 'service.log'), sync: true }),
    defaultMetrics: true,
    fetch: (async () => new Response(PNM_OK, { headers: { 'content-type': 'application/json' } })) as never,
  })

  const tag = Date.now().toString(36)
  let n = 0
  async function one() {
    const i = n++
    const body = fullNotifyBody(eventIdFor(tag, i), tokenFor(i % TOKENS))
    const request = new Request('http://localhost/_matrix/push/v1/notify', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) },
      body,
    })
    const answer = await service.app.handle(request)
    const text = await answer.text()
    if (answer.status !== 200) throw new Error(`notify answered ${answer.status}: ${text}`)
  }
  async function run(count: number) {
    let left = count
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (left-- > 0) await one()
    }))
  }

  await run(3000) // warm-up
  const samples: number[] = []
  for (let s = 0; s < SAMPLES; s++) {
    const before = process.cpuUsage()
    await run(COUNT)
    const used = process.cpuUsage(before)
    samples.push((used.user + used.system) / COUNT)
  }
  service.store.close()
  const sorted = [...samples].sort((a, b) => a - b)
  console.log(
    `own work per notify, LOGLEVEL=${LEVEL}, ${SAMPLES} samples of ${COUNT}: median ${sorted[Math.floor(SAMPLES / 2)]!.toFixed(1)} µs, ` +
      `min ${sorted[0]!.toFixed(1)}, max ${sorted.at(-1)!.toFixed(1)}`,
  )
} finally {
  rmSync(dir, { recursive: true, force: true })
}
