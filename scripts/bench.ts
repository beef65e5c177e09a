/**
 * Speed and footprint of the service against the floor of its runtime, measured in one run on one
 * machine (everything on 127.0.0.1):
 *   - an instant fake PNM and fake Synapse (scripts/bench-fakes.ts), in this process;
 *   - the service's executable, built here (scripts/build.ts), with 1,000 or 1,000,000 stored tokens;
 *   - two baselines, compiled with the same flags: a bare forwarder on the same runtime
 *     (scripts/bench-baseline.ts) and the same forwarder as one Elysia route
 *     (scripts/bench-baseline-elysia.ts), the floor of the service's own framework;
 *   - with --cpu and --memory, a third: the service's own HTTP layer (src/app.ts) with a notify
 *     handler that only forwards (scripts/bench-baseline-floor.ts), what the request handling the
 *     service keeps costs before any notification work;
 *   - autocannon on Node (scripts/bench-load.ts) sending notifications as Synapse does.
 * Every figure is printed beside the baselines' and as a ratio, so the noise of a shared machine
 * cancels out; CPU time per notification (utime + stime of the server process / requests) is the
 * steadiest of them. The result is printed as a Markdown table and written as JSON.
 *
 *   npm run bench:notify          (about 7 minutes; `npm run bench` runs it, then the messaging and
 *                                  send benchmarks)
 *   npm run bench:notify -- --quick   (shorter measurements)
 *   npm run bench:notify -- --cpu     (only CPU per notify at concurrency 16, against the Elysia
 *                                      forwarder, --reps times (default 3); for trying a change;
 *                                      also the floor: the service's own HTTP layer with a notify
 *                                      handler that only forwards, scripts/bench-baseline-floor.ts)
 *   npm run bench:notify -- --memory  (only the memory run below, the service against the Elysia
 *                                      forwarder, and the floor)
 *     --before REF                 with --cpu or --memory: also the service as built from git commit
 *                                  REF, alternating with the working tree's, compared by medians
 *     --env K=V                    with --cpu or --memory: set K=V for the working tree's service
 *                                  (repeatable)
 *     --connections N              with --cpu: the concurrency (default 16)
 *   --warmup S                     seconds of load before each measured window (default 5; 0.5
 *                                  with --quick)
 *   --pin                          servers on CPU 1, the load generator on CPU 0 (taskset): on two
 *                                  cores a few per cent of noise instead of ±30 %
 *   --out f.json                   where the JSON goes; default: a timestamped file in the temp dir
 */
import { Database } from 'bun:sqlite'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { cpus, freemem, loadavg, tmpdir, totalmem } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { migrate } from '../src/store/migrations.ts'
import { buildExecutable } from './build.ts'
import { BENCH_APP_ID, BENCH_SERVER_NAME, selectorFor, tokenFor } from './bench-data.ts'
import { startInstantPnm, startInstantSynapse } from './bench-fakes.ts'
import type { LoadKind, LoadResult, LoadSpec } from './bench-load.ts'

const root = join(import.meta.dir, '..')
const NOTIFY_PATH = '/_matrix/push/v1/notify'
const REPORT_PATH = '/api/client/push_token_report'
const AS_TOKEN = 'bench-as-token-0123456789'
const CONCURRENCY = [1, 16, 128] as const
const SMALL_TABLE = 1_000
const CLK_TCK = Number(Bun.spawnSync(['getconf', 'CLK_TCK']).stdout.toString().trim()) || 100

const { values: args } = parseArgs({
  args: Bun.argv.slice(2),
  options: {
    quick: { type: 'boolean' },
    out: { type: 'string' },
    'large-table': { type: 'string' },
    cpu: { type: 'boolean' },
    reps: { type: 'string' },
    before: { type: 'string' },
    env: { type: 'string', multiple: true },
    pin: { type: 'boolean' },
    memory: { type: 'boolean' },
    warmup: { type: 'string' },
    connections: { type: 'string' },
  },
})
const quick = args.quick === true
/**
 * Load before each measured window. The service has far more code than the forwarders for the JIT
 * to compile: under load its compiler threads run for about 4 s (the forwarders' for under 1 s), and
 * a shorter warm-up charged that one-off compile to the steady state an operator runs in. The
 * `other threads` share of each output line shows whether it has settled.
 */
const WARMUP_S = args.warmup !== undefined ? Number(args.warmup) : quick ? 0.5 : 5
const MEASURE_S = quick ? 2 : 6
const LARGE_TABLE = Number(args['large-table'] ?? 1_000_000)
const STARTS = quick ? 3 : 7
const TABLE_REPS = quick ? 2 : 3
/** Notifications with distinct event IDs in the memory run: the duplicate filter holds each. */
const MEMORY_RUN = 100_000

// ---------------------------------------------------------------------------------------------
// Processes

interface Target {
  name: string
  proc: ReturnType<typeof Bun.spawn>
  url: string
  pid: number
  logFile?: string
}

const SERVER_CPU = 1
const LOAD_CPU = 0
/** The command prefix that keeps a process on one CPU, with --pin. */
const pinned = (cpu: number) => (args.pin ? ['taskset', '-c', String(cpu)] : [])

function freePort(): number {
  const probe = Bun.serve({ hostname: '127.0.0.1', port: 0, fetch: () => new Response() })
  const port = probe.port!
  probe.stop(true)
  return port
}

/**
 * The fields of a proc(5) stat file (a process's or one thread's) from field 3 on: the command
 * name before them may hold spaces.
 */
function statFields(path: string): string[] {
  const stat = readFileSync(path, 'utf8')
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')
}

/** utime + stime (proc(5) fields 14 and 15) in ms. */
const cpuOfStat = (fields: string[]) => ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK

/** utime + stime of every thread of the process, in ms. */
function cpuMs(pid: number): number {
  return cpuOfStat(statFields(`/proc/${pid}/stat`))
}

/**
 * CPU time in ms of the main thread (the event loop: JavaScript, the HTTP server, SQLite), of Bun's
 * fetch thread ("HTTP Client") and of the rest (JIT compiler, garbage collector helpers, allocator),
 * the rest taken from the process total so that threads that ended are counted too.
 */
function cpuSplitMs(pid: number): { main: number; http: number; other: number } {
  let main = 0
  let http = 0
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    let ms: number
    let comm: string
    try {
      ms = cpuOfStat(statFields(`/proc/${pid}/task/${tid}/stat`))
      comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim()
    } catch {
      continue // ended meanwhile
    }
    if (Number(tid) === pid) main += ms
    else if (comm === 'HTTP Client') http += ms
  }
  return { main, http, other: cpuMs(pid) - main - http }
}

/** Minor page faults of the process so far (proc(5) stat field 10). */
function minorFaults(pid: number): number {
  return Number(statFields(`/proc/${pid}/stat`)[7])
}

/** Peak resident set size (VmHWM) in MiB. */
function peakRssMiB(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) / 1024 : NaN
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) / 1024 : NaN
}

/** Sets the process's peak RSS back to its current RSS (proc(5), clear_refs "5"). */
function resetPeakRss(pid: number) {
  writeFileSync(`/proc/${pid}/clear_refs`, '5')
}

async function waitHealthy(url: string, proc: ReturnType<typeof Bun.spawn>, started: number): Promise<number> {
  const deadline = started + 15_000
  for (;;) {
    try {
      const res = await fetch(`${url}/health`)
      if (res.ok) {
        await res.arrayBuffer()
        return performance.now() - started
      }
    } catch {
      // not listening yet
    }
    if (proc.exitCode !== null) throw new Error(`${url}: exited with ${proc.exitCode} before /health answered`)
    if (performance.now() > deadline) throw new Error(`${url}: /health did not answer within 15 s`)
    await Bun.sleep(1)
  }
}

async function startTarget(name: string, exe: string, env: Record<string, string>, logFile: string): Promise<Target & { readyMs: number }> {
  const port = freePort()
  const started = performance.now()
  const proc = Bun.spawn([...pinned(SERVER_CPU), exe], {
    env: { PATH: process.env.PATH ?? '', PORT: String(port), PROXY_HOST: '127.0.0.1', PROXY_PORT: String(port), ...env },
    stdout: Bun.file(logFile),
    stderr: 'inherit',
    cwd: dirname(exe),
  })
  const url = `http://127.0.0.1:${port}`
  const readyMs = await waitHealthy(url, proc, started)
  return { name, proc, url, pid: proc.pid, logFile, readyMs }
}

async function stopTarget(t: Target) {
  t.proc.kill('SIGTERM')
  await t.proc.exited
}

// ---------------------------------------------------------------------------------------------
// Measurements

interface Measurement extends LoadResult {
  target: string
  kind: LoadKind
  connections: number
  /** CPU time of the server process (utime + stime) per answered request, µs. */
  cpuUsPerRequest: number
  /** The same, per thread (cpuSplitMs). */
  cpuSplitUs: { main: number; http: number; other: number }
  peakRssMiB: number
}

let loadJs = ''
let runCounter = 0

async function measure(
  target: Target,
  kind: LoadKind,
  connections: number,
  tokens: number,
  options: { amount?: number; resetPeak?: boolean } = {},
): Promise<Measurement> {
  runCounter++
  const spec: LoadSpec = {
    root,
    url: target.url,
    path: kind === 'report' ? REPORT_PATH : NOTIFY_PATH,
    kind,
    connections,
    warmupSeconds: options.amount === undefined ? WARMUP_S : 0,
    seconds: MEASURE_S,
    amount: options.amount,
    tokens,
    tag: `${Date.now().toString(16)}${runCounter.toString(16).padStart(3, '0')}`,
    seed: runCounter * 7919,
    expectBody: kind === 'report' ? '{}' : '{"rejected":[]}',
  }
  const driver = Bun.spawn([...pinned(LOAD_CPU), 'node', loadJs, JSON.stringify(spec)], { stdin: 'pipe', stdout: 'pipe', stderr: 'inherit' })
  const reader = driver.stdout.getReader()
  const decoder = new TextDecoder()
  let buffered = ''
  const nextLine = async (): Promise<Record<string, any>> => {
    for (;;) {
      const nl = buffered.indexOf('\n')
      if (nl >= 0) {
        const line = buffered.slice(0, nl)
        buffered = buffered.slice(nl + 1)
        return JSON.parse(line)
      }
      const { done, value } = await reader.read()
      if (done) throw new Error(`load generator exited (${await driver.exited}) without an answer`)
      buffered += decoder.decode(value, { stream: true })
    }
  }
  await nextLine() // warm
  const cpuBefore = cpuMs(target.pid)
  const splitBefore = cpuSplitMs(target.pid)
  const faultsBefore = minorFaults(target.pid)
  if (options.resetPeak !== false) resetPeakRss(target.pid)
  driver.stdin.write('go\n')
  await driver.stdin.flush()
  const result = (await nextLine()) as LoadResult
  const cpuAfter = cpuMs(target.pid)
  const splitAfter = cpuSplitMs(target.pid)
  const faults = minorFaults(target.pid) - faultsBefore
  const peak = peakRssMiB(target.pid)
  await driver.exited
  const m: Measurement = {
    ...result,
    target: target.name,
    kind,
    connections,
    cpuUsPerRequest: result.ok > 0 ? ((cpuAfter - cpuBefore) / result.ok) * 1000 : NaN,
    cpuSplitUs: {
      main: ((splitAfter.main - splitBefore.main) / Math.max(1, result.ok)) * 1000,
      http: ((splitAfter.http - splitBefore.http) / Math.max(1, result.ok)) * 1000,
      other: ((splitAfter.other - splitBefore.other) / Math.max(1, result.ok)) * 1000,
    },
    peakRssMiB: peak,
  }
  const failed = m.non2xx + m.errors + m.timeouts + m.mismatches
  process.stderr.write(
    `  ${target.name.padEnd(14)} ${kind.padEnd(20)} c=${String(connections).padEnd(3)} ` +
      `${m.perSecond.toFixed(0).padStart(6)}/s  p50 ${m.latencyMs.p50.toFixed(2)} ms  p99 ${m.latencyMs.p99.toFixed(2)} ms  ` +
      `cpu ${m.cpuUsPerRequest.toFixed(0)} µs/notify (main ${m.cpuSplitUs.main.toFixed(0)}, fetch ${m.cpuSplitUs.http.toFixed(0)}, other threads ${m.cpuSplitUs.other.toFixed(0)})  ${(faults / Math.max(1, m.ok)).toFixed(2)} faults/notify  peak ${m.peakRssMiB.toFixed(1)} MiB${failed ? `  FAILED ${failed}` : ''}\n`,
  )
  if (failed > 0) {
    throw new Error(`${target.name}: ${m.non2xx} non-2xx, ${m.errors} errors, ${m.timeouts} timeouts, ${m.mismatches} wrong bodies`)
  }
  return m
}

// ---------------------------------------------------------------------------------------------
// Setup

/** `schema`: the migrations that make the database (an earlier commit's, for `--before`). */
function seedTokens(path: string, n: number, schema: (db: Database) => unknown = migrate): { ms: number; plan: string } {
  const started = performance.now()
  mkdirSync(dirname(path), { recursive: true })
  const db = new Database(path, { create: true })
  schema(db) // the schema, by the service's own migrations (or the earlier commit's)
  db.run('PRAGMA synchronous = OFF')
  db.run('PRAGMA cache_size = -400000')
  const insert = db.prepare(
    `INSERT INTO registrations (selector, username, matrix_user_id, token_msgs, app_id_msgs, token_calls, app_id_calls, created_at, updated_at)
     VALUES (?, ?, ?, ?, ?, NULL, NULL, ?, ?)`,
  )
  const now = Date.now()
  db.transaction(() => {
    for (let i = 0; i < n; i++) {
      insert.run(selectorFor(i), `user${i}`, `@user${i}:${BENCH_SERVER_NAME}`, tokenFor(i), BENCH_APP_ID, now, now)
    }
  })()
  db.run('PRAGMA journal_mode = WAL')
  const plan = db
    .query<{ detail: string }, [string, string]>(
      // The service's own lookup (src/store/sqlite.ts, byPushkey).
      'EXPLAIN QUERY PLAN SELECT * FROM registrations WHERE token_msgs = ? AND app_id_msgs = ? ORDER BY updated_at DESC LIMIT 1',
    )
    .all(tokenFor(0), BENCH_APP_ID)
    .map((r) => r.detail)
    .join('; ')
  const count = db.query<{ n: number }, []>('SELECT count(*) AS n FROM registrations').get()!.n
  db.close()
  if (count !== n) throw new Error(`seeded ${count} rows instead of ${n}`)
  if (!plan.includes('USING INDEX registrations_pushkey_newest') || plan.includes('TEMP B-TREE')) {
    throw new Error(`the pushkey lookup does not read its index without a sort: ${plan}`)
  }
  return { ms: performance.now() - started, plan }
}

function bundleLoadGenerator(outfile: string) {
  const result = Bun.spawnSync(
    [process.execPath, 'build', join(root, 'scripts/bench-load.ts'), '--target=node', '--format=esm', '--outfile', outfile],
    { cwd: root, stdout: 'ignore', stderr: 'inherit' },
  )
  if (result.exitCode !== 0) throw new Error('could not bundle the load generator')
}

function machine() {
  const cpuModel = /model name\s*:\s*(.+)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? cpus()[0]?.model ?? 'unknown'
  return {
    cpus: navigator.hardwareConcurrency,
    cpuModel,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    freeMemoryGiB: Math.round(freemem() / 2 ** 30),
    kernel: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
    bun: Bun.version,
    node: Bun.spawnSync(['node', '--version']).stdout.toString().trim(),
    loadAverageAtStart: loadavg().map((l) => Math.round(l * 100) / 100),
  }
}

function proxyEnvFor(pnmUrl: string, db: string) {
  return {
    PUSH_TOKEN_DB_PATH: db,
    PNM_URL: pnmUrl,
    AUTH_MODE: 'none',
    MATRIX_SERVER_NAME: BENCH_SERVER_NAME,
    LOGLEVEL: 'INFO',
  }
}

/** The proxy's warnings and errors, but for the two the benchmark's own setup causes. */
const problemsIn = (logLines: string[]) =>
  logLines.filter((l) => /"level":"(warn|error|fatal)"/.test(l) && !/AUTH_MODE=none|PROXY_URL is not set/.test(l))

/**
 * `--cpu`: CPU µs per notification at concurrency 16, the service against the Elysia forwarder
 * (and the bare one), alternating, `--reps` times (default 3); prints each run and the medians.
 */
async function cpuOnly(o: {
  exe: string
  beforeExe?: string
  elysiaExe: string
  floorExe: string
  baselineExe: string
  dir: string
  children: Target[]
  env: Record<string, string>
  beforeEnv: Record<string, string>
  baseEnv: Record<string, string>
}) {
  const reps = Number(args.reps ?? 3)
  const connections = Number(args.connections ?? 16)
  const targets: Target[] = []
  const start = async (name: string, exe: string, env: Record<string, string>) => {
    const t = await startTarget(name, exe, env, join(o.dir, `cpu-${name}.log`))
    o.children.push(t)
    targets.push(t)
    return t
  }
  const proxy = await start('proxy', o.exe, { ...o.env, ...envArgs() })
  if (o.beforeExe) await start('before', o.beforeExe, o.beforeEnv)
  await start('elysia', o.elysiaExe, o.baseEnv)
  await start('floor', o.floorExe, o.baseEnv)
  await start('baseline', o.baselineExe, o.baseEnv)
  const runs: Record<string, number[]> = Object.fromEntries(targets.map((t) => [t.name, []]))
  const splits: Record<string, Measurement['cpuSplitUs'][]> = Object.fromEntries(targets.map((t) => [t.name, []]))
  for (let rep = 0; rep < reps; rep++) {
    for (const kind of ['notify-full', 'notify-event-id-only'] as const) {
      // A different order each time: what runs first after a pause must not always be the same.
      const order = targets.map((_, i) => targets[(i + rep * 2 + (kind === 'notify-full' ? 0 : 1)) % targets.length]!)
      for (const t of order) {
        const m = await measure(t, kind, connections, SMALL_TABLE)
        runs[t.name]!.push(m.cpuUsPerRequest)
        splits[t.name]!.push(m.cpuSplitUs)
      }
    }
  }
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
  const p = med(runs.proxy!)
  const e = med(runs.elysia!)
  const b = med(runs.baseline!)
  const logLines = readFileSync(proxy.logFile!, 'utf8').split('\n').filter(Boolean)
  const problems = problemsIn(logLines)
  if (problems.length > 0) console.log(`the proxy logged ${problems.length} warnings or errors, e.g.:\n${problems.slice(0, 3).join('\n')}`)
  console.log(
    `CPU µs per notify at concurrency ${connections}, median of ${runs.proxy!.length}: proxy ${f(p, 1)}, Elysia forwarder ${f(e, 1)} ` +
      `(×${f(p / e, 2)}), bare forwarder ${f(b, 1)} (×${f(p / b, 2)}); proxy log ${logLines.length} lines`,
  )
  const split = (name: string) => {
    const s = splits[name]!
    return `main ${f(med(s.map((x) => x.main)), 1)}, fetch ${f(med(s.map((x) => x.http)), 1)}, other threads ${f(med(s.map((x) => x.other)), 1)}`
  }
  console.log(`  by thread (medians): proxy ${split('proxy')}; Elysia forwarder ${split('elysia')}`)
  const floor = med(runs.floor!)
  console.log(
    `floor (the service's HTTP layer, notify handler only forwarding): ${f(floor, 1)} (×${f(floor / e, 2)} the Elysia forwarder; ${split('floor')}); ` +
      `proxy / floor ×${f(p / floor, 2)}`,
  )
  if (runs.before) {
    const before = med(runs.before)
    console.log(`before (${args.before}): ${f(before, 1)} (×${f(before / e, 2)} the Elysia forwarder); working tree / before ×${f(p / before, 3)}`)
    console.log(`  runs: proxy ${runs.proxy!.map((x) => f(x, 0)).join(' ')}; before ${runs.before.map((x) => f(x, 0)).join(' ')}`)
  }
  for (const t of targets) await stopTarget(t)
}

/**
 * Peak RSS after MEMORY_RUN notifications with distinct event IDs, each target fresh: the
 * duplicate filter remembers every one of them.
 */
async function memoryRuns(targets: (readonly [string, string, Record<string, string>])[], dir: string, children: Target[]) {
  const memory: Record<string, { idleMiB: number; peakMiB: number; run: Measurement }> = {}
  for (const [key, file, env] of targets) {
    const t = await startTarget(`${key}-memory`, file, env, join(dir, `memory-${key}.log`))
    children.push(t)
    const idleMiB = rssMiB(t.pid)
    const run = await measure(t, 'notify-full', 16, SMALL_TABLE, { amount: MEMORY_RUN, resetPeak: false })
    memory[key] = { idleMiB, peakMiB: peakRssMiB(t.pid), run }
    await stopTarget(t)
  }
  return memory
}

/** --env K=V pairs. */
function envArgs(): Record<string, string> {
  const env: Record<string, string> = {}
  for (const pair of args.env ?? []) {
    const eq = pair.indexOf('=')
    if (eq <= 0) throw new Error(`--env wants K=V, not ${pair}`)
    env[pair.slice(0, eq)] = pair.slice(eq + 1)
  }
  return env
}

/** The service's executable as of git commit `ref`: its tree exported into `dir`, built there. */
function buildAtCommit(ref: string, dir: string): string {
  const src = join(dir, 'before-src')
  mkdirSync(src)
  const archive = Bun.spawnSync(['git', '-C', root, 'archive', '--format=tar', ref, 'src', 'package.json'], { stderr: 'inherit' })
  if (archive.exitCode !== 0) throw new Error(`git archive ${ref} failed`)
  const untar = Bun.spawnSync(['tar', '-x', '-C', src], { stdin: archive.stdout, stderr: 'inherit' })
  if (untar.exitCode !== 0) throw new Error('could not unpack the earlier tree')
  // Its imports resolve against this checkout's installed packages.
  symlinkSync(join(root, 'node_modules'), join(src, 'node_modules'))
  const exe = join(dir, 'matrix2acrobits-before')
  buildExecutable(exe, undefined, join(src, 'src/main.ts'))
  return exe
}

// ---------------------------------------------------------------------------------------------
// Report

const ratio = (proxy: number, base: number) => proxy / base
const f = (n: number, digits = 0) =>
  Number.isFinite(n) ? n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : 'n/a'
const mark = (ok: boolean | undefined) => (ok === undefined ? '' : ok ? ' ✓' : ' ✗')

function cell(proxy: number, base: number, digits: number, ok?: boolean) {
  return `${f(proxy, digits)} / ${f(base, digits)} (×${f(ratio(proxy, base), 2)}${mark(ok)})`
}

async function main() {
  const startedAt = new Date()
  const dir = mkdtempSync(join(tmpdir(), 'm2a-bench-'))
  const children: Target[] = []
  const pnm = startInstantPnm()
  const synapse = startInstantSynapse(AS_TOKEN)
  const cleanup = async () => {
    for (const c of children) if (c.proc.exitCode === null) c.proc.kill('SIGKILL')
    pnm.stop()
    synapse.stop()
    rmSync(dir, { recursive: true, force: true })
  }
  process.on('SIGINT', () => void cleanup().then(() => process.exit(130)))

  try {
    const host = machine()
    process.stderr.write(`machine: ${host.cpus} CPUs, ${host.cpuModel}, ${host.memoryGiB} GiB; bun ${host.bun}, node ${host.node}\n`)
    process.stderr.write(`building into ${dir}\n`)
    const exe = join(dir, 'matrix2acrobits')
    const baselineExe = join(dir, 'baseline')
    const elysiaExe = join(dir, 'baseline-elysia')
    const floorExe = join(dir, 'baseline-floor')
    loadJs = join(dir, 'bench-load.mjs')
    buildExecutable(exe)
    buildExecutable(baselineExe, undefined, 'scripts/bench-baseline.ts')
    buildExecutable(elysiaExe, undefined, 'scripts/bench-baseline-elysia.ts')
    if (args.cpu || args.memory) buildExecutable(floorExe, undefined, 'scripts/bench-baseline-floor.ts')
    bundleLoadGenerator(loadJs)

    const smallDb = join(dir, 'small', 'tokens.db')
    const largeDb = join(dir, 'large', 'tokens.db')
    const reportsDb = join(dir, 'reports', 'tokens.db')
    mkdirSync(join(dir, 'reports'))
    const small = seedTokens(smallDb, SMALL_TABLE)
    if (args.cpu || args.memory) {
      const beforeExe = args.before === undefined ? undefined : buildAtCommit(args.before, dir)
      // The earlier executable gets a database of its own, made by its own migrations: it may not
      // know the working tree's schema, and two processes must not share the journal's file.
      const beforeDb = join(dir, 'before', 'tokens.db')
      if (beforeExe) {
        const earlier = (await import(join(dir, 'before-src', 'src', 'store', 'migrations.ts'))) as { migrate: (db: Database) => unknown }
        seedTokens(beforeDb, SMALL_TABLE, earlier.migrate)
      }
      if (args.memory) {
        const targets: [string, string, Record<string, string>][] = [
          ['elysia', elysiaExe, { PNM_URL: pnm.url, SYNAPSE_URL: synapse.url, AS_TOKEN }],
          ['floor', floorExe, { PNM_URL: pnm.url }],
          ['proxy', exe, { ...proxyEnvFor(pnm.url, smallDb), ...envArgs() }],
        ]
        if (beforeExe) targets.push(['before', beforeExe, proxyEnvFor(pnm.url, beforeDb)])
        const memory = await memoryRuns(targets, dir, children)
        const e = memory.elysia!.peakMiB
        for (const [name, m] of Object.entries(memory)) {
          console.log(`${name}: idle ${f(m.idleMiB, 1)} MiB, peak after ${f(MEMORY_RUN)} notifications ${f(m.peakMiB, 1)} MiB (×${f(m.peakMiB / e, 2)} the Elysia forwarder)`)
        }
        return
      }
      await cpuOnly({ exe, beforeExe, elysiaExe, floorExe, baselineExe, dir, children, env: proxyEnvFor(pnm.url, smallDb), beforeEnv: proxyEnvFor(pnm.url, beforeDb), baseEnv: { PNM_URL: pnm.url, SYNAPSE_URL: synapse.url, AS_TOKEN } })
      return
    }
    process.stderr.write(`seeding ${f(LARGE_TABLE)} tokens...\n`)
    const large = seedTokens(largeDb, LARGE_TABLE)
    process.stderr.write(`seeded in ${f(large.ms)} ms; lookup plan: ${large.plan}\n`)

    const baseEnv = { PNM_URL: pnm.url, SYNAPSE_URL: synapse.url, AS_TOKEN }
    const proxyEnv = (db: string) => proxyEnvFor(pnm.url, db)
    const reportEnv = {
      ...proxyEnv(reportsDb),
      // Every benchmark report is a new account of one user: the per-user caps would turn the
      // measured path into 429s and evictions.
      MAX_DEVICES_PER_USER: '1000000',
      REPORTS_PER_MINUTE: '1000000',
      PROXY_URL: 'http://127.0.0.1:8080',
      MATRIX_HOMESERVER_URL: synapse.url,
      MATRIX_AS_TOKEN: AS_TOKEN,
    }

    // Start to first successful /health: cold starts, one after the other, median.
    process.stderr.write('start to ready...\n')
    const readiness: Record<string, number[]> = { baseline: [], proxy: [], proxyLarge: [] }
    for (let i = 0; i < STARTS; i++) {
      for (const [key, name, file, env] of [
        ['baseline', 'baseline', baselineExe, baseEnv],
        ['proxy', 'proxy', exe, proxyEnv(smallDb)],
        ['proxyLarge', 'proxy-1M', exe, proxyEnv(largeDb)],
      ] as const) {
        const t = await startTarget(name, file, env, join(dir, `start-${key}.log`))
        readiness[key]!.push(t.readyMs)
        await stopTarget(t)
      }
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
    const ready = { baseline: median(readiness.baseline!), proxy: median(readiness.proxy!), proxyLarge: median(readiness.proxyLarge!) }
    process.stderr.write(`  baseline ${f(ready.baseline, 1)} ms, proxy ${f(ready.proxy, 1)} ms, proxy with ${f(LARGE_TABLE)} tokens ${f(ready.proxyLarge, 1)} ms\n`)

    // Peak RSS after 100,000 notifications with distinct event IDs, each target fresh: the
    // duplicate filter remembers every one of them.
    process.stderr.write(`memory: ${f(MEMORY_RUN)} distinct notifications into fresh processes...\n`)
    const runs = await memoryRuns([
      ['elysia', elysiaExe, baseEnv],
      ['proxy', exe, proxyEnv(smallDb)],
    ], dir, children)
    const memory = { elysia: runs.elysia!, proxy: runs.proxy! }

    // Throughput, latency, CPU and memory at each concurrency, the baselines and proxy back to back.
    const baseline = await startTarget('baseline', baselineExe, baseEnv, join(dir, 'baseline.log'))
    children.push(baseline)
    const elysia = await startTarget('elysia', elysiaExe, baseEnv, join(dir, 'elysia.log'))
    children.push(elysia)
    const proxy = await startTarget('proxy', exe, proxyEnv(smallDb), join(dir, 'proxy.log'))
    children.push(proxy)
    const idle = { proxy: rssMiB(proxy.pid), baseline: rssMiB(baseline.pid), elysia: rssMiB(elysia.pid) }
    const notify: { kind: LoadKind; connections: number; proxy: Measurement; baseline: Measurement; elysia: Measurement }[] = []
    let order = 0
    for (const kind of ['notify-full', 'notify-event-id-only'] as const) {
      for (const connections of CONCURRENCY) {
        // Rotated, so that no target always runs first (or last) on a machine whose load drifts.
        const targets = [baseline, elysia, proxy]
        const turn = order++ % 3
        const results: Record<string, Measurement> = {}
        for (const t of [...targets.slice(turn), ...targets.slice(0, turn)]) results[t.name] = await measure(t, kind, connections, SMALL_TABLE)
        notify.push({ kind, connections, proxy: results.proxy!, baseline: results.baseline!, elysia: results.elysia! })
      }
    }
    await stopTarget(elysia)
    const logBytes = statSync(proxy.logFile!).size
    const logText = readFileSync(proxy.logFile!, 'utf8')
    const logLines = logText.split('\n').filter(Boolean)
    // The two start-up warnings this set-up is expected to give (no PROXY_URL, AUTH_MODE=none) aside.
    const problems = problemsIn(logLines)
    const notifyLogged = logLines.filter((l) => l.includes(`"route":"${NOTIFY_PATH}"`)).length
    await stopTarget(proxy)

    // Lookup cost against the table size: the same executable, fresh, on 1,000 and on 1,000,000
    // tokens, measured alternately.
    process.stderr.write(`notify latency, ${f(SMALL_TABLE)} vs ${f(LARGE_TABLE)} stored tokens...\n`)
    const proxySmall = await startTarget('proxy-1k', exe, proxyEnv(smallDb), join(dir, 'proxy-small.log'))
    children.push(proxySmall)
    const proxyLarge = await startTarget('proxy-1M', exe, proxyEnv(largeDb), join(dir, 'proxy-large.log'))
    children.push(proxyLarge)
    const tableSize: { connections: number; small: Measurement[]; large: Measurement[] }[] = []
    for (const connections of [1, 16]) {
      const entry = { connections, small: [] as Measurement[], large: [] as Measurement[] }
      for (let rep = 0; rep < TABLE_REPS; rep++) {
        const smallFirst = rep % 2 === 0
        if (smallFirst) entry.small.push(await measure(proxySmall, 'notify-full', connections, SMALL_TABLE))
        entry.large.push(await measure(proxyLarge, 'notify-full', connections, LARGE_TABLE))
        if (!smallFirst) entry.small.push(await measure(proxySmall, 'notify-full', connections, SMALL_TABLE))
      }
      tableSize.push(entry)
    }
    await stopTarget(proxyLarge)
    await stopTarget(proxySmall)

    // Token reports, each registering a pusher on the (instant) fake Synapse.
    process.stderr.write('token reports...\n')
    mkdirSync(dirname(reportsDb), { recursive: true })
    const reporter = await startTarget('proxy-reports', exe, reportEnv, join(dir, 'proxy-reports.log'))
    children.push(reporter)
    const reports: { connections: number; proxy: Measurement; baseline: Measurement }[] = []
    for (const connections of [1, 16]) {
      const b = await measure(baseline, 'report', connections, 0)
      const p = await measure(reporter, 'report', connections, 0)
      reports.push({ connections, proxy: p, baseline: b })
    }
    const reporterLog = readFileSync(reporter.logFile!, 'utf8')
    const pushersRegistered = (reporterLog.match(/"msg":"pusher registered"/g) ?? []).length
    await stopTarget(reporter)
    await stopTarget(baseline)

    const sizes = { proxy: statSync(exe).size / 2 ** 20, baseline: statSync(baselineExe).size / 2 ** 20 }

    // -----------------------------------------------------------------------------------------
    const peakProxy = Math.max(...notify.map((n) => n.proxy.peakRssMiB))
    const peakBase = Math.max(...notify.map((n) => n.baseline.peakRssMiB))
    const medianOf = (ms: Measurement[], pick: (m: Measurement) => number) => {
      const xs = ms.map(pick).sort((a, b) => a - b)
      return xs.length % 2 ? xs[(xs.length - 1) / 2]! : (xs[xs.length / 2 - 1]! + xs[xs.length / 2]!) / 2
    }
    const cpuOk = (n: (typeof notify)[number]) => n.connections !== 16 || ratio(n.proxy.cpuUsPerRequest, n.elysia.cpuUsPerRequest) <= 1.3
    const throughputOk = (n: (typeof notify)[number]) => n.connections === 1 || ratio(n.proxy.perSecond, n.baseline.perSecond) >= 0.8
    const p99Ok = (n: (typeof notify)[number]) => ratio(n.proxy.latencyMs.p99, n.baseline.latencyMs.p99) <= 1.5
    const checks = {
      cpu: notify.every(cpuOk),
      throughput: notify.every(throughputOk),
      p99: notify.every(p99Ok),
      tableSize: tableSize.every((t) => ratio(medianOf(t.large, (m) => m.latencyMs.p50), medianOf(t.small, (m) => m.latencyMs.p50)) <= 1.1),
      memory: ratio(memory.proxy.peakMiB, memory.elysia.peakMiB) <= 1.6,
      ready: ready.proxy <= 200 && ready.proxyLarge <= 200,
    }

    const lines: string[] = []
    lines.push(
      'Each cell: proxy / baseline (×ratio); the bare forwarder is the baseline unless the column names the Elysia one. ' +
        'All figures of a table come from the same run. ✓/✗: target met or missed.',
      '',
    )
    lines.push(
      '| notify, Synapse format, concurrency | notifications/s (≥ ×0.8 at 16, 128) | latency p50 ms | latency p99 ms (≤ ×1.5) | ' +
        'CPU µs per notify vs Elysia (≤ ×1.3 at 16) | CPU µs per notify vs bare | peak RSS MiB |',
    )
    lines.push('|---|---|---|---|---|---|---|')
    for (const n of notify) {
      const name = `${n.kind === 'notify-full' ? 'full' : 'event_id_only'}, ${n.connections}`
      lines.push(
        `| ${name} | ${cell(n.proxy.perSecond, n.baseline.perSecond, 0, n.connections === 1 ? undefined : throughputOk(n))} ` +
          `| ${cell(n.proxy.latencyMs.p50, n.baseline.latencyMs.p50, 2)} ` +
          `| ${cell(n.proxy.latencyMs.p99, n.baseline.latencyMs.p99, 2, p99Ok(n))} ` +
          `| ${cell(n.proxy.cpuUsPerRequest, n.elysia.cpuUsPerRequest, 0, n.connections === 16 ? cpuOk(n) : undefined)} ` +
          `| ${cell(n.proxy.cpuUsPerRequest, n.baseline.cpuUsPerRequest, 0)} ` +
          `| ${cell(n.proxy.peakRssMiB, n.baseline.peakRssMiB, 1)} |`,
      )
    }
    lines.push('')
    lines.push('| figure | proxy | baseline | ratio | target |')
    lines.push('|---|---|---|---|---|')
    lines.push(
      `| peak RSS after ${f(MEMORY_RUN)} notifications with distinct event IDs, fresh process, MiB (idle before) ` +
        `(baseline: Elysia forwarder) | ${f(memory.proxy.peakMiB, 1)} (${f(memory.proxy.idleMiB, 1)}) | ${f(memory.elysia.peakMiB, 1)} (${f(memory.elysia.idleMiB, 1)}) ` +
        `| ×${f(ratio(memory.proxy.peakMiB, memory.elysia.peakMiB), 2)} | ≤ ×1.6${mark(checks.memory)} |`,
    )
    lines.push(`| peak RSS under the load above, MiB (idle before load) | ${f(peakProxy, 1)} (${f(idle.proxy, 1)}) | ${f(peakBase, 1)} (${f(idle.baseline, 1)}) | ×${f(ratio(peakProxy, peakBase), 2)} | |`)
    lines.push(`| start to first successful /health, ms (median of ${STARTS}) | ${f(ready.proxy, 1)} | ${f(ready.baseline, 1)} | ×${f(ratio(ready.proxy, ready.baseline), 2)} | ≤ 200 ms${mark(ready.proxy <= 200)} |`)
    lines.push(`| start to first successful /health with ${f(LARGE_TABLE)} tokens, ms | ${f(ready.proxyLarge, 1)} | ${f(ready.baseline, 1)} | ×${f(ratio(ready.proxyLarge, ready.baseline), 2)} | ≤ 200 ms${mark(ready.proxyLarge <= 200)} |`)
    lines.push(`| executable size, MiB | ${f(sizes.proxy, 1)} | ${f(sizes.baseline, 1)} | ×${f(ratio(sizes.proxy, sizes.baseline), 2)} | |`)
    for (const r of reports) {
      lines.push(
        `| token reports/s with pusher registration, concurrency ${r.connections} (baseline: one pushers/set, no database) | ${f(r.proxy.perSecond)} | ${f(r.baseline.perSecond)} | ×${f(ratio(r.proxy.perSecond, r.baseline.perSecond), 2)} | |`,
      )
    }
    lines.push('')
    lines.push(`| notify latency (full), same executable, median of ${TABLE_REPS} runs | ${f(SMALL_TABLE)} tokens | ${f(LARGE_TABLE)} tokens | ratio | target |`)
    lines.push('|---|---|---|---|---|')
    for (const t of tableSize) {
      for (const [label, pick] of [
        ['p50', (m: Measurement) => m.latencyMs.p50],
        ['mean', (m: Measurement) => m.latencyMs.mean],
        ['p99', (m: Measurement) => m.latencyMs.p99],
      ] as const) {
        const s = medianOf(t.small, pick)
        const l = medianOf(t.large, pick)
        const judged = label === 'p50'
        lines.push(`| concurrency ${t.connections}, ${label} ms | ${f(s, 3)} | ${f(l, 3)} | ×${f(l / s, 2)} | ${judged ? `≤ ×1.1${mark(l / s <= 1.1)}` : ''} |`)
      }
    }
    const table = lines.join('\n')

    const result = {
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      command: `npm run bench${quick ? ' -- --quick' : ''}`,
      machine: host,
      settings: { warmupSeconds: WARMUP_S, measureSeconds: MEASURE_S, smallTable: SMALL_TABLE, largeTable: LARGE_TABLE, logLevel: 'INFO', logDestination: 'file' },
      checks,
      ready: { ...ready, samples: readiness },
      sizesMiB: sizes,
      idleRssMiB: idle,
      peakRssMiB: { proxy: peakProxy, baseline: peakBase },
      memory,
      notify,
      tableSize,
      reports: { runs: reports, pushersRegisteredByProxy: pushersRegistered, pushersSetOnFakeByBoth: synapse.pushersSet() },
      seeding: { smallMs: small.ms, largeMs: large.ms, lookupPlan: large.plan },
      proxyLog: { lines: logLines.length, bytes: logBytes, linesPerNotification: logLines.length / Math.max(1, notifyLogged), bytesPerNotification: logBytes / Math.max(1, notifyLogged), warningsOrErrors: problems.slice(0, 20) },
      pnmReceived: pnm.received(),
      table,
    }
    const out = resolve(args.out ?? join(tmpdir(), `matrix2acrobits-bench-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`))
    mkdirSync(dirname(out), { recursive: true })
    writeFileSync(out, JSON.stringify(result, null, 2) + '\n')

    console.log(`\nmatrix2acrobits benchmark, ${startedAt.toISOString()}`)
    console.log(`machine: ${host.cpus} CPUs (${host.cpuModel}), ${host.memoryGiB} GiB RAM, Linux ${host.kernel}; bun ${host.bun}, node ${host.node} (autocannon)`)
    console.log(`load average at start: ${host.loadAverageAtStart.join(', ')}\n`)
    console.log(table)
    if (problems.length > 0) console.log(`\nthe proxy logged ${problems.length} warnings or errors, e.g.:\n${problems.slice(0, 3).join('\n')}`)
    console.log(`\nJSON: ${out}`)
    const missed = Object.entries(checks).filter(([, ok]) => !ok).map(([k]) => k)
    console.log(missed.length === 0 ? 'all targets met' : `targets missed: ${missed.join(', ')}`)
  } finally {
    await cleanup()
  }
}

await main()
