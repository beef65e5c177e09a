/**
 * What a new operator trips over, on the executable: a port in use, `npm start` stopped
 * by a signal, a PROXY_URL with a path, listen addresses that cannot be used, a database folder that
 * is not writable, `:memory:`, the reason of every refused request in the log, the warnings at
 * start, and a test run that leaves nothing in the temporary folder.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { openSqliteStore } from '../../src/store/sqlite.ts'
import { runCommand } from '../cli/run.ts'
import { startBinary, type RunningBinary } from '../e2e/binary.ts'
import { fileModesApply, isRoot, NOBODY, removeCreatedDirs, runnableBinary, spawnService, stateDir, type Proc } from '../faults/support.ts'
import { tempDir } from '../harness.ts'

const root = join(import.meta.dir, '../..')
const dir = tempDir('m2a-operator-')
const running: Array<RunningBinary | Proc> = []
afterAll(async () => {
  for (const b of running) {
    if (b.proc.exitCode === null) b.proc.kill('SIGKILL')
    await b.proc.exited
  }
  removeCreatedDirs()
  rmSync(dir, { recursive: true, force: true })
})

let dbCount = 0
const freshDb = () => join(dir, `db-${++dbCount}`, 'push_tokens.db')

async function start(env: Record<string, string>) {
  const b = await startBinary({ PUSH_TOKEN_DB_PATH: freshDb(), ...env })
  running.push(b)
  return b
}

/** `serve` that is expected to refuse to start: its exit code and every line it printed. */
async function serveFails(env: Record<string, string>, options: { command?: string[] } = {}) {
  const r = await runCommand([], { PROXY_HOST: '127.0.0.1', PROXY_PORT: '0', PUSH_TOKEN_DB_PATH: freshDb(), ...env }, undefined, options)
  return { exitCode: r.exitCode, lines: (r.stdout + r.stderr).split('\n').filter(Boolean) }
}

const parsed = (lines: string[]) =>
  lines.flatMap((l) => {
    try {
      return [JSON.parse(l) as Record<string, any>]
    } catch {
      return []
    }
  })

/** No stack trace: one sentence, not "    at listen (...)". */
const expectOneClearLine = (lines: string[], pattern: RegExp) => {
  expect(lines.filter((l) => pattern.test(l))).toHaveLength(1)
  expect(lines.join('\n')).not.toMatch(/^\s+at /m)
}

describe('listening', () => {
  test('a second instance on a port in use exits 1 with one line saying so; the first keeps the port', async () => {
    const first = await start({})
    const second = await serveFails({ PROXY_PORT: String(first.port) })
    expect(second.exitCode).toBe(1)
    expectOneClearLine(second.lines, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${first.port} .*the port is in use`))
    // Every request still reaches the first (no kernel split between two processes).
    for (let i = 0; i < 5; i++) expect((await fetch(`${first.url}/health`)).status).toBe(200)
    expect(await first.stop()).toBe(0)
  })

  test('METRICS_ADDRESS on a port in use: exit 1, one line, no stack trace', async () => {
    const taken = Bun.serve({ hostname: '127.0.0.1', port: 0, fetch: () => new Response('other') })
    try {
      const r = await serveFails({ METRICS_ADDRESS: `127.0.0.1:${taken.port}` })
      expect(r.exitCode).toBe(1)
      expectOneClearLine(r.lines, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${taken.port} \\(METRICS_ADDRESS\\): the port is in use`))
    } finally {
      taken.stop(true)
    }
  })

  test('PROXY_HOST or METRICS_ADDRESS that is not an address or host name: exit 2 saying so', async () => {
    const bad = await serveFails({ PROXY_HOST: 'not a host/' })
    expect(bad.exitCode).toBe(2)
    expect(bad.lines).toEqual(['matrix2acrobits: invalid configuration: PROXY_HOST: "not a host/" is not an IP address or host name'])
    const badMetrics = await serveFails({ METRICS_ADDRESS: 'a_b:9090' })
    expect(badMetrics.exitCode).toBe(2)
    expect(badMetrics.lines).toEqual(['matrix2acrobits: invalid configuration: METRICS_ADDRESS: "a_b" is not an IP address or host name'])
  })

  test('PROXY_HOST that does not resolve, or is not an address of this machine: exit 1, one line', async () => {
    const unresolved = await serveFails({ PROXY_HOST: 'nowhere.invalid' })
    expect(unresolved.exitCode).toBe(1)
    expectOneClearLine(unresolved.lines, /cannot listen on nowhere\.invalid:0 \(PROXY_HOST, PROXY_PORT\): nowhere\.invalid does not resolve/)
    // TEST-NET-1 (RFC 5737): never an address of this machine.
    const foreign = await serveFails({ PROXY_HOST: '192.0.2.1' })
    expect(foreign.exitCode).toBe(1)
    expectOneClearLine(foreign.lines, /cannot listen on 192\.0\.2\.1:0 .*192\.0\.2\.1 is not an address of this machine/)
  })
})

describe('npm start', () => {
  test.skipIf(Bun.which('npm') === null)('kill -TERM on the npm process stops the service too', async () => {
    const proc = Bun.spawn(['npm', 'start', '--silent'], {
      cwd: root,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? dir, PROXY_HOST: '127.0.0.1', PROXY_PORT: '0', PUSH_TOKEN_DB_PATH: freshDb() },
      stdout: 'pipe',
      stderr: 'pipe',
    })
    let out = ''
    const reader = proc.stdout.getReader()
    const end = Date.now() + 20_000
    while (!out.includes('"msg":"matrix2acrobits listening"') && Date.now() < end) {
      const { value, done } = await reader.read()
      if (done) break
      out += new TextDecoder().decode(value)
    }
    reader.releaseLock()
    const port = Number(/"port":(\d+)/.exec(out)?.[1])
    expect(port).toBeGreaterThan(0)
    const service = descendants(proc.pid)
    expect(service.length).toBeGreaterThan(0)
    await Bun.sleep(200)
    proc.kill('SIGTERM')
    await proc.exited
    const gone = Date.now() + 10_000
    while (service.some(alive) && Date.now() < gone) await Bun.sleep(50)
    const left = service.filter(alive)
    for (const pid of left) process.kill(pid, 'SIGKILL')
    expect(left).toEqual([])
    // Nobody answers on the port any more.
    expect(await fetch(`http://127.0.0.1:${port}/health`).then(() => 'answered', () => 'refused')).toBe('refused')
  })
})

/** Every process below `pid` (Linux /proc). */
function descendants(pid: number): number[] {
  const children = readdirSync(`/proc/${pid}/task`).flatMap((task) => {
    try {
      return readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').split(' ').filter(Boolean).map(Number)
    } catch {
      return []
    }
  })
  return children.flatMap((child) => [child, ...descendants(child)])
}

function alive(pid: number): boolean {
  try {
    // A zombie has exited: it only waits for its parent to read its status.
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}

describe('PROXY_URL', () => {
  test('with a path of its own: exit 2, saying Synapse wants /_matrix/push/v1/notify', async () => {
    const r = await serveFails({ PROXY_URL: 'https://push.example.org/some/path' })
    expect(r.exitCode).toBe(2)
    expect(r.lines).toHaveLength(1)
    expect(r.lines[0]).toStartWith('matrix2acrobits: invalid configuration: PROXY_URL: "https://push.example.org/some/path" has the path /some/path')
    expect(r.lines[0]).toContain('only at /_matrix/push/v1/notify')
  })

  test('the full gateway URL is accepted', async () => {
    const b = await start({ PROXY_URL: 'https://push.example.org/_matrix/push/v1/notify' })
    expect((await fetch(`${b.url}/ready`)).status).toBe(200)
    expect(await b.stop()).toBe(0)
  })
})

describe('logs', () => {
  test('a refused request logs its reason with its req_id, 5xx included, without the password', async () => {
    const b = await start({ PROXY_URL: 'https://push.example.org' })
    const answer = await fetch(`${b.url}/api/client/push_token_report`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ selector: 'A:1', token_msgs: 'tok', app_id_msgs: 'com.acrobits.softphone', username: 'alice', password: 'hunter2-secret' }),
    })
    expect(answer.status).toBe(503)
    const reqId = answer.headers.get('x-request-id')
    const notFound = await fetch(`${b.url}/nothing-here`)
    expect(notFound.status).toBe(404)
    await Bun.sleep(100)
    const lines = parsed(b.lines)
    // The request's one access line carries the reason of a refusal.
    const refused = lines.find((l) => l.msg === 'request' && l.req_id === reqId)
    expect(refused).toMatchObject({ status: 503, errcode: 'M_UNAVAILABLE' })
    expect(refused!.error).toContain('MATRIX_HOMESERVER_URL is not set')
    expect(lines.find((l) => l.msg === 'request' && l.status === 404)).toMatchObject({ level: 'info', error: 'Unrecognized request' })
    expect(b.lines.join('\n')).not.toContain('hunter2-secret')
    await b.stop()
  })

  test('one warning per missing variable; LOGLEVEL takes the levels the lines print', async () => {
    const b = await start({ PROXY_URL: 'https://push.example.org' })
    await b.stop()
    const warnings = parsed(b.lines).filter((l) => l.level === 'warn').map((l) => l.msg as string)
    expect(warnings.filter((w) => w.includes('MATRIX_HOMESERVER_URL'))).toEqual([
      'MATRIX_HOMESERVER_URL is not set: token reports are answered 503 until it is; password checks (AUTH_MODE=matrix) and pusher registration need it',
    ])
    for (const level of ['fatal', 'warn', 'error', 'debug', 'info', 'trace', 'WARNING', 'CRITICAL']) {
      const r = await runCommand(['check'], { LOGLEVEL: level })
      expect(r.exitCode).toBe(2)
      expect(r.stdout).not.toContain('LOGLEVEL')
    }
    const wrong = await runCommand(['check'], { LOGLEVEL: 'loud' })
    expect(wrong.stdout).toContain('LOGLEVEL: "loud" is not one of trace, debug, info, warn, error, fatal')
  })
})

describe('the database', () => {
  test(':memory: keeps the tokens in memory and creates no file of that name', async () => {
    const cwd = join(dir, 'memory-cwd')
    mkdirSync(cwd)
    const b = await startBinary({ PUSH_TOKEN_DB_PATH: ':memory:' }, cwd)
    running.push(b)
    expect((await fetch(`${b.url}/ready`)).status).toBe(200)
    expect(await b.stop()).toBe(0)
    expect(readdirSync(cwd)).toEqual([])
    expect(parsed(b.lines).some((l) => l.level === 'warn' && /in memory only/.test(l.msg))).toBe(true)
    // The stray file once committed at the top of the checkout.
    expect(existsSync(join(root, ':memory:'))).toBe(false)
  })

  test.skipIf(!fileModesApply || !isRoot)('a folder that is not writable: exit 1 saying the folder must be writable for the WAL files; `check` says so too', async () => {
    const state = stateDir()
    const path = join(state, 'push_tokens.db')
    openSqliteStore(path).close()
    chownSync(path, NOBODY, NOBODY)
    // The file is writable, its folder is not: SQLite cannot create push_tokens.db-wal beside it.
    chmodSync(state, 0o500)
    const asNobody = [Bun.which('setpriv')!, `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', runnableBinary()]
    const r = await serveFails({ PUSH_TOKEN_DB_PATH: path }, { command: asNobody })
    expect(r.exitCode).toBe(1)
    expectOneClearLine(r.lines, new RegExp(`folder ${state} must be writable by this user too, for SQLite's WAL files \\(push_tokens\\.db-wal and -shm\\)`))
    const check = await runCommand(['check'], { PUSH_TOKEN_DB_PATH: path, MATRIX_HOMESERVER_URL: 'http://127.0.0.1:9', MATRIX_AS_TOKEN: 'x', PROXY_URL: 'https://push.example.org' }, undefined, { command: asNobody })
    expect(check.stdout).toContain(`must be writable by this user too, for SQLite's WAL files`)
    chmodSync(state, 0o700)
  })

  test.skipIf(!fileModesApply)('a read-only file is warned about at start', async () => {
    const state = stateDir()
    const path = join(state, 'push_tokens.db')
    openSqliteStore(path).close()
    if (isRoot) chownSync(path, NOBODY, NOBODY)
    chmodSync(path, 0o400)
    const service = await spawnService({ PUSH_TOKEN_DB_PATH: path })
    running.push(service)
    const warning = service.parsed().find((l) => l.level === 'warn' && l.msg.startsWith('the database does not accept writes'))
    expect(warning).toBeDefined()
    expect(warning!.err).toContain(`the file ${path} is read-only for this user`)
    service.proc.kill('SIGTERM')
    expect(await service.exited).toBe(0)
  })
})

describe('the test suite', () => {
  test('a test file run leaves nothing in the temporary folder, not even the executable', async () => {
    const tmp = join(dir, 'tmp')
    mkdirSync(tmp)
    // A file that builds the executable, runs it, and makes temporary folders of its own.
    const proc = Bun.spawn([process.execPath, 'test', 'test/cli/registration.test.ts'], {
      cwd: root,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? dir, TMPDIR: tmp },
      stdout: 'pipe',
      stderr: 'pipe',
    })
    const [stderr, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited])
    expect(stderr).toMatch(/\d+ pass/)
    expect(code).toBe(0)
    expect(readdirSync(tmp)).toEqual([])
  }, 120_000)
})
