/**
 * PostgreSQL for tests: TEST_DATABASE_URL names a server (`.ci/run` sets it); each test gets a
 * schema of its own (m2a_test_<random>, reached through search_path in the URL), dropped
 * afterwards, so tests and other runs on the same database never meet. Without the variable
 * the PostgreSQL tests are skipped, saying so.
 */
import { afterEach } from 'bun:test'
import { SQL } from 'bun'

export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL || undefined

let told = false
/** True when PostgreSQL tests cannot run; prints why, once per file. */
export function pgSkipped(): boolean {
  if (TEST_DATABASE_URL !== undefined) return false
  if (!told) console.warn('TEST_DATABASE_URL is not set: PostgreSQL tests skipped (.ci/run sets it to postgres://postgres@127.0.0.1:5432/test)')
  told = true
  return true
}

export interface TestSchema {
  /** TEST_DATABASE_URL with search_path set to the schema. */
  url: string
  name: string
  drop(): Promise<void>
}

const withParam = (url: string, key: string, value: string) => {
  const u = new URL(url)
  u.searchParams.set(key, value)
  return u.toString()
}

export async function createTestSchema(): Promise<TestSchema> {
  const name = `m2a_test_${crypto.randomUUID().replaceAll('-', '').slice(0, 16)}`
  const admin = new SQL(TEST_DATABASE_URL!, { max: 1 })
  try {
    await admin.unsafe(`CREATE SCHEMA ${name}`)
  } finally {
    await admin.end()
  }
  return {
    url: withParam(TEST_DATABASE_URL!, 'search_path', name),
    name,
    async drop() {
      const sql = new SQL(TEST_DATABASE_URL!, { max: 1 })
      try {
        await sql.unsafe(`DROP SCHEMA IF EXISTS ${name} CASCADE`)
      } finally {
        await sql.end()
      }
    },
  }
}

/**
 * For a test file on PostgreSQL (call it at the top): `cleanups` run after each test, newest
 * first, and `schema()` gives the test a schema of its own, dropped among them.
 */
export function pgTestScope() {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })
  const schema = async (): Promise<TestSchema> => {
    const s = await createTestSchema()
    cleanups.push(() => s.drop())
    return s
  }
  return { cleanups, schema }
}

/**
 * A TCP relay in front of PostgreSQL that can be cut: the database "goes away" (every connection
 * closed, new ones refused at once) and comes back, without touching the real server. Or frozen:
 * connections stay open and nothing gets through either way (a network partition), until
 * `restore` closes them.
 */
export function startPgRelay(target: string) {
  const to = new URL(target)
  const pairs = new Set<{ client: Bun.Socket<any>; server?: Bun.Socket<any> }>()
  let up = true
  let frozen = false
  const listener = Bun.listen<{ pair: { client: Bun.Socket<any>; server?: Bun.Socket<any>; pending: Uint8Array[] } }>({
    hostname: '127.0.0.1',
    port: 0,
    socket: {
      async open(client) {
        if (!up) {
          client.end()
          return
        }
        const pair = { client, server: undefined as Bun.Socket<any> | undefined, pending: [] as Uint8Array[] }
        client.data = { pair }
        pairs.add(pair)
        try {
          pair.server = await Bun.connect({
            hostname: to.hostname,
            port: Number(to.port || 5432),
            socket: {
              data: (_s, chunk) => void (frozen || client.write(chunk)),
              close: () => void client.end(),
              error: () => void client.end(),
            },
          })
          for (const chunk of pair.pending.splice(0)) pair.server.write(chunk)
        } catch {
          client.end()
        }
      },
      data(client, chunk) {
        const pair = client.data?.pair
        if (!pair || frozen) return
        if (pair.server) pair.server.write(chunk)
        else pair.pending.push(new Uint8Array(chunk))
      },
      close(client) {
        const pair = client.data?.pair
        if (pair) {
          pair.server?.end()
          pairs.delete(pair)
        }
      },
    },
  })
  return {
    /** `target` with the relay's address instead of the server's. */
    url: (withTarget: string = target) => {
      const u = new URL(withTarget)
      u.hostname = '127.0.0.1'
      u.port = String(listener.port)
      return u.toString()
    },
    cut() {
      up = false
      for (const pair of pairs) {
        pair.client.end()
        pair.server?.end()
      }
      pairs.clear()
    },
    freeze() {
      frozen = true
    },
    restore() {
      // What a frozen connection dropped leaves it out of step: it goes, and the client reconnects.
      if (frozen) this.cut()
      frozen = false
      up = true
    },
    stop() {
      this.cut()
      listener.stop(true)
    },
  }
}
