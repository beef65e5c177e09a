/**
 * Shared pieces of the fault tests: the built executable run as an unprivileged user (root ignores
 * file modes, so a read-only file is only read-only to someone else), a real listener for tests
 * that need the client's address, and a homeserver that can be switched off and on.
 */
import { chmodSync, chownSync, copyFileSync, mkdirSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { binaryPath, startBinary } from '../e2e/binary.ts'
import { fullNotification, readAnswer, tempDir } from '../harness.ts'

export const isRoot = process.getuid?.() === 0
/** The user the executable runs as when the tests run as root. */
export const NOBODY = 65534
const setpriv = Bun.which('setpriv')
/** False only as root without setpriv (util-linux): file modes then cannot be tested. */
export const fileModesApply = !isRoot || setpriv !== null
const dropPrivileges = isRoot && setpriv !== null

let publicCopy: string | undefined
const created: string[] = []
/** Removes the folders made by runnableBinary() and stateDir(); call it in afterAll. */
export function removeCreatedDirs() {
  for (const dir of created.splice(0)) rmSync(dir, { recursive: true, force: true })
  publicCopy = undefined
}

/** A copy of the executable that an unprivileged user may run (binaryPath() lives in a 0700 folder). */
export function runnableBinary(): string {
  if (!publicCopy) {
    const dir = tempDir('m2a-faults-bin-')
    created.push(dir)
    chmodSync(dir, 0o755)
    publicCopy = join(dir, 'matrix2acrobits')
    copyFileSync(binaryPath(), publicCopy)
    chmodSync(publicCopy, 0o755)
  }
  return publicCopy
}

/** A folder the executable may write in, whoever it runs as. */
export function stateDir(): string {
  const dir = tempDir('m2a-faults-state-')
  created.push(dir)
  chmodSync(dir, 0o700)
  if (dropPrivileges) chownSync(dir, NOBODY, NOBODY)
  return dir
}

/** Makes a file the unprivileged user's, as if that user had created it. */
export function giveToServiceUser(path: string) {
  if (dropPrivileges) chownSync(path, NOBODY, NOBODY)
}

export interface Proc {
  url: string
  pid: number
  proc: ReturnType<typeof Bun.spawn>
  lines: string[]
  parsed(): Array<Record<string, any>>
  exited: Promise<number>
}

/** Starts `serve` (as nobody when the tests run as root) and resolves once it listens. */
export async function spawnService(env: Record<string, string>): Promise<Proc> {
  const command = dropPrivileges
    ? [setpriv!, `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', runnableBinary()]
    : [runnableBinary()]
  const { url, proc, lines } = await startBinary(env, undefined, command)
  return {
    url,
    pid: proc.pid,
    proc,
    lines,
    parsed: () =>
      lines.flatMap((l) => {
        try {
          return [JSON.parse(l) as Record<string, any>]
        } catch {
          return []
        }
      }),
    exited: proc.exited,
  }
}

export async function post(url: string, body: unknown, headers: Record<string, string> = {}) {
  return readAnswer(
    await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    }),
  )
}

/**
 * A front for the fake homeserver that can go down (connection refused) and come back on the
 * same port, as a restarted Synapse would.
 */
export function startSwitchableFront(targetUrl: string) {
  const forward = async (request: Request) => {
    const url = new URL(request.url)
    return fetch(targetUrl + url.pathname + url.search, {
      method: request.method,
      headers: request.headers,
      body: request.method === 'GET' ? undefined : await request.arrayBuffer(),
    })
  }
  let server: ReturnType<typeof Bun.serve> | undefined = Bun.serve({ hostname: '127.0.0.1', port: 0, fetch: forward })
  const port = server.port
  return {
    url: `http://127.0.0.1:${port}`,
    down() {
      server?.stop(true)
      server = undefined
    },
    up() {
      server ??= Bun.serve({ hostname: '127.0.0.1', port, fetch: forward })
    },
    stop() {
      server?.stop(true)
    },
  }
}

/** A notification as Synapse sends it for one device (full format). */
export const notification = (eventId: string, appId: string, pushkey: string) => fullNotification(eventId, pushkey, {}, appId)

export function ensureDir(path: string) {
  mkdirSync(path, { recursive: true })
}
