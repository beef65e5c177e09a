/**
 * Scale-out benchmark: notify throughput and p99 latency of one and of two instances on one
 * PostgreSQL database, against one instance on SQLite, in the same run on the same machine. The
 * load generator is the main benchmark's (scripts/bench-load.ts, autocannon on Node); with two
 * instances the connections are split between them (the total stays the same) and their results
 * are added up (p99: the worse of the two). Everything on 127.0.0.1; instant fake PNM.
 *
 *   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test bun scripts/bench-scale.ts [--seconds 6] [--connections 16]
 *
 * The PostgreSQL runs work in a schema of their own (m2a_bench_<random>), dropped at the end.
 */
import { Database } from 'bun:sqlite'
import { SQL } from 'bun'
import { mkdtempSync, rmSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { redactPassword } from '../src/secrets.ts'
import { migrate } from '../src/store/migrations.ts'
import { migratePostgres } from '../src/store/pg-migrations.ts'
import { buildExecutable } from './build.ts'
import { BENCH_APP_ID, BENCH_SERVER_NAME, selectorFor, tokenFor } from './bench-data.ts'
import { startInstantPnm } from './bench-fakes.ts'
import type { LoadResult, LoadSpec } from './bench-load.ts'

const root = join(import.meta.dir, '..')
const TOKENS = 1_000
const { values: args } = parseArgs({
  args: Bun.argv.slice(2),
  options: { seconds: { type: 'string' }, connections: { type: 'string' }, warmup: { type: 'string' } },
})
const SECONDS = Number(args.seconds ?? 6)
const WARMUP = Number(args.warmup ?? 1.5)
const CONNECTIONS = Number(args.connections ?? 16)
const databaseUrl = process.env.DATABASE_URL ?? process.env.TEST_DATABASE_URL
if (!databaseUrl) {
  console.error('bench-scale: set DATABASE_URL (or TEST_DATABASE_URL) to a PostgreSQL database it may create a schema in')
  process.exit(2)
}

function freePort(): number {
  const probe = Bun.serve({ hostname: '127.0.0.1', port: 0, fetch: () => new Response() })
  const port = probe.port!
  probe.stop(true)
  return port
}

async function startInstance(exe: string, env: Record<string, string>) {
  const port = freePort()
  const proc = Bun.spawn([exe], {
    env: { PATH: process.env.PATH ?? '', PROXY_HOST: '127.0.0.1', PROXY_PORT: String(port), LOGLEVEL: 'WARN', ...env },
    stdout: 'ignore',
    stderr: 'inherit',
  })
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 15_000
  for (;;) {
    try {
      if ((await fetch(`${url}/ready`)).ok) return { url, proc }
    } catch {
      // not listening yet
    }
    if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`instance did not become ready (exit ${proc.exitCode})`)
    await Bun.sleep(20)
  }
}

let runs = 0
/** One load generator per URL, started together; results added up. */
async function load(loadJs: string, urls: string[]): Promise<{ perSecond: number; p50: number; p99: number; failed: number }> {
  const drivers = urls.map((url) => {
    runs++
    const spec: LoadSpec = {
      root,
      url,
      path: '/_matrix/push/v1/notify',
      kind: 'notify-event-id-only',
      connections: Math.max(1, Math.round(CONNECTIONS / urls.length)),
      warmupSeconds: WARMUP,
      seconds: SECONDS,
      tokens: TOKENS,
      tag: `${Date.now().toString(16)}s${runs}`,
      seed: runs * 7919,
      expectBody: '{"rejected":[]}',
    }
    const proc = Bun.spawn(['node', loadJs, JSON.stringify(spec)], { stdin: 'pipe', stdout: 'pipe', stderr: 'inherit' })
    const lines = (async function* () {
      const decoder = new TextDecoder()
      let buffered = ''
      for await (const chunk of proc.stdout) {
        buffered += decoder.decode(chunk, { stream: true })
        for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
          yield JSON.parse(buffered.slice(0, nl)) as Record<string, any>
          buffered = buffered.slice(nl + 1)
        }
      }
    })()
    return { proc, lines }
  })
  for (const d of drivers) await d.lines.next() // warm
  for (const d of drivers) {
    d.proc.stdin.write('go\n')
    await d.proc.stdin.flush()
  }
  const results = (await Promise.all(drivers.map(async (d) => (await d.lines.next()).value as LoadResult))) as LoadResult[]
  await Promise.all(drivers.map((d) => d.proc.exited))
  return {
    perSecond: results.reduce((s, r) => s + r.perSecond, 0),
    p50: Math.max(...results.map((r) => r.latencyMs.p50)),
    p99: Math.max(...results.map((r) => r.latencyMs.p99)),
    failed: results.reduce((s, r) => s + r.non2xx + r.errors + r.timeouts + r.mismatches, 0),
  }
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'm2a-bench-scale-'))
  const pnm = startInstantPnm()
  const schema = `m2a_bench_${crypto.randomUUID().replaceAll('-', '').slice(0, 12)}`
  const admin = new SQL(databaseUrl!, { max: 1 })
  const children: Array<ReturnType<typeof Bun.spawn>> = []
  try {
    const exe = join(dir, 'matrix2acrobits')
    const loadJs = join(dir, 'bench-load.mjs')
    buildExecutable(exe)
    const bundled = Bun.spawnSync([process.execPath, 'build', join(root, 'scripts/bench-load.ts'), '--target=node', '--format=esm', '--outfile', loadJs], {
      cwd: root,
      stdout: 'ignore',
      stderr: 'inherit',
    })
    if (bundled.exitCode !== 0) throw new Error('could not bundle the load generator')

    // The same 1,000 accounts in both engines.
    const now = Date.now()
    const sqlitePath = join(dir, 'tokens.db')
    const db = new Database(sqlitePath, { create: true })
    migrate(db)
    const insert = db.prepare(`INSERT INTO registrations (selector, username, matrix_user_id, token_msgs, app_id_msgs, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)`)
    db.transaction(() => {
      for (let i = 0; i < TOKENS; i++) insert.run(selectorFor(i), `user${i}`, `@user${i}:${BENCH_SERVER_NAME}`, tokenFor(i), BENCH_APP_ID, now, now)
    })()
    db.close()
    await admin.unsafe(`CREATE SCHEMA ${schema}`)
    const pgUrl = new URL(databaseUrl!)
    pgUrl.searchParams.set('search_path', schema)
    const pg = new SQL(pgUrl.toString(), { max: 1 })
    await migratePostgres(pg)
    const rows = Array.from({ length: TOKENS }, (_, i) => ({
      selector: selectorFor(i),
      username: `user${i}`,
      matrix_user_id: `@user${i}:${BENCH_SERVER_NAME}`,
      token_msgs: tokenFor(i),
      app_id_msgs: BENCH_APP_ID,
      created_at: now,
      updated_at: now,
    }))
    await pg`INSERT INTO registrations ${pg(rows)}`
    await pg.end()

    const env = { PNM_URL: pnm.url, AUTH_MODE: 'none', MATRIX_SERVER_NAME: BENCH_SERVER_NAME }
    const figures: Array<{ name: string; perSecond: number; p50: number; p99: number }> = []
    const run = async (name: string, instances: Array<Record<string, string>>) => {
      const started = await Promise.all(instances.map((e) => startInstance(exe, { ...env, ...e })))
      children.push(...started.map((s) => s.proc))
      const r = await load(loadJs, started.map((s) => s.url))
      for (const s of started) {
        s.proc.kill('SIGTERM')
        await s.proc.exited
      }
      if (r.failed > 0) throw new Error(`${name}: ${r.failed} requests failed`)
      process.stderr.write(`  ${name.padEnd(28)} ${r.perSecond.toFixed(0).padStart(6)}/s  p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms\n`)
      figures.push({ name, ...r })
    }
    process.stderr.write(`notify (event_id_only), ${CONNECTIONS} connections in total, ${SECONDS} s each; PostgreSQL at ${redactPassword(databaseUrl!)}\n`)
    await run('SQLite, one instance', [{ PUSH_TOKEN_DB_PATH: sqlitePath }])
    await run('PostgreSQL, one instance', [{ DATABASE_URL: pgUrl.toString() }])
    await run('PostgreSQL, two instances', [{ DATABASE_URL: pgUrl.toString() }, { DATABASE_URL: pgUrl.toString() }])

    const base = figures[0]!
    console.log(`\nscale-out benchmark, ${new Date().toISOString()}: ${navigator.hardwareConcurrency} CPUs, load average ${loadavg().map((l) => l.toFixed(2)).join(', ')}`)
    console.log(`notify (event_id_only, new event each), ${CONNECTIONS} connections in total, ${SECONDS} s per target, ${TOKENS} stored tokens\n`)
    console.log('| target | notifications/s | × SQLite | p50 ms | p99 ms | × SQLite |')
    console.log('|---|---|---|---|---|---|')
    for (const r of figures) {
      console.log(`| ${r.name} | ${r.perSecond.toFixed(0)} | ${(r.perSecond / base.perSecond).toFixed(2)} | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} | ${(r.p99 / base.p99).toFixed(2)} |`)
    }
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL')
    pnm.stop()
    await admin.unsafe(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => {})
    await admin.end()
    rmSync(dir, { recursive: true, force: true })
  }
}

await main()
