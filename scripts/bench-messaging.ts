/**
 * Messaging speed, measured in one run on one machine, through the service's own HTTP handler
 * (app.handle: routing, body parsing, the password cache, the index, rendering):
 *   - Fetch Messages answer time with 1,000,000 indexed messages against the same fetch with 1,000
 *     (the user's own list is the same 1,000 deliveries in both; only the index around it grows),
 *     password cached. Target: p99 < 5 ms and ≤ ×1.2 of the 1,000 case.
 *   - Ingestion: transactions of 100 message events (as Synapse batches them), events per second.
 *     Target: ≥ 5,000 events/s.
 *
 *   bun scripts/bench-messaging.ts [--quick] [--out f.json]
 */
import { Database } from 'bun:sqlite'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { compose } from '../src/compose.ts'
import { loadConfig } from '../src/config.ts'
import { migrate } from '../src/store/migrations.ts'

const { values: args } = parseArgs({ args: Bun.argv.slice(2), options: { quick: { type: 'boolean' }, out: { type: 'string' } } })
const LARGE = args.quick ? 200_000 : 1_000_000
const SMALL = 1_000
const FETCHES = args.quick ? 1_000 : 3_000
const TXNS = args.quick ? 50 : 200
const SERVER = 'bench.example'
const HS_TOKEN = 'bench-hs-token'
const USER = `@u0:${SERVER}`

/** A homeserver that accepts any password for any user (the proxy caches the answer). */
function startLoginServer() {
  const server = Bun.serve({
    hostname: '127.0.0.1',
    port: 0,
    async fetch(request) {
      const path = new URL(request.url).pathname
      if (path === '/_matrix/client/v3/login') {
        const body = (await request.json()) as { identifier: { user: string } }
        return Response.json({ user_id: `@${body.identifier.user}:${SERVER}`, access_token: 't' })
      }
      if (path === '/_matrix/client/v3/logout') return Response.json({})
      if (path === '/_matrix/client/v3/account/whoami') return Response.json({ user_id: `@appservice:${SERVER}` })
      if (path.endsWith('/joined_rooms')) return Response.json({ joined_rooms: [] })
      if (path.includes('/account_data/')) return Response.json({ errcode: 'M_NOT_FOUND', error: 'none' }, { status: 404 })
      return Response.json({ errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' }, { status: 404 })
    },
  })
  return { url: `http://127.0.0.1:${server.port}`, stop: () => server.stop(true) }
}

/**
 * `total` messages in direct chats; the first 1,000 are u0's (received from 10 peers), the rest
 * belong to 1,000 other pairs of users. Written with SQL, in the service's own schema.
 */
function populate(path: string, total: number) {
  const db = new Database(path, { create: true, strict: true })
  db.run('PRAGMA journal_mode = WAL')
  migrate(db)
  const now = Date.now()
  db.transaction(() => {
    const room = db.prepare('INSERT OR IGNORE INTO mx_rooms (room_id, kind, is_direct, conversation, updated_at) VALUES (?1, ?2, 1, ?1, ?3)')
    const memberRow = db.prepare("INSERT OR IGNORE INTO mx_members (room_id, user_id, membership, since_ord, from_stream, updated_at) VALUES (?, ?, 'join', 0, 1, ?)")
    const enrol = db.prepare('INSERT OR IGNORE INTO mx_enrolled (user_id, enrolled_at) VALUES (?, ?)')
    const event = db.prepare("INSERT INTO mx_events (event_id, room_id, sender, ts, text, author_name, stored_at) VALUES (?, ?, ?, ?, ?, ?, ?)")
    const delivery = db.prepare('INSERT INTO mx_deliveries (user_id, event_id, ord, sent, created_at) VALUES (?, ?, ?, 0, ?)')
    enrol.run(USER, now)
    for (let i = 0; i < total; i++) {
      const own = i < 1_000
      const pair = own ? i % 10 : i % 1_000
      const recipient = own ? USER : `@r${pair}:${SERVER}`
      const sender = own ? `@p${pair}:${SERVER}` : `@s${pair}:${SERVER}`
      const roomId = `!${own ? 'own' : 'other'}${pair}:${SERVER}`
      if (i < 2_000) {
        room.run(roomId, 'direct', now)
        memberRow.run(roomId, recipient, now)
        memberRow.run(roomId, sender, now)
        enrol.run(recipient, now)
      }
      const id = `$e${i}`
      // Spread over the last day, in order: the user's list is the oldest part of the index.
      event.run(id, roomId, sender, now - 86_400_000 + Math.floor((i / total) * 86_000_000), `message number ${i} with some words in it`, sender, now)
      delivery.run(recipient, id, i + 1, now)
    }
  })()
  // A running service's WAL is checkpointed as it goes; a fresh 1,000,000-row WAL would slow reads.
  db.run('PRAGMA wal_checkpoint(TRUNCATE)')
  db.close()
}

function percentile(sorted: number[], p: number) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!
}

async function withService<T>(dbPath: string, fn: (handle: (r: Request) => Promise<Response>) => Promise<T>): Promise<T> {
  const hs = startLoginServer()
  const result = loadConfig({
    MATRIX_HOMESERVER_URL: hs.url,
    MATRIX_AS_TOKEN: 'bench-as',
    MATRIX_HS_TOKEN: HS_TOKEN,
    MATRIX_SERVER_NAME: SERVER,
    PUSH_TOKEN_DB_PATH: dbPath,
    LOGLEVEL: 'ERROR',
  })
  if (!result.ok) throw new Error(result.errors.join('; '))
  const service = compose(result.config)
  try {
    return await fn((r) => service.app.handle(r))
  } finally {
    await service.messaging.stop()
    service.index?.close()
    service.store.close()
    hs.stop()
  }
}

async function measureFetch(total: number) {
  const dir = mkdtempSync(join(tmpdir(), 'm2a-bench-msg-'))
  try {
    const dbPath = join(dir, 'index.db')
    const started = performance.now()
    populate(dbPath, total)
    const populateS = (performance.now() - started) / 1000
    return await withService(dbPath, async (handle) => {
      const fetchOnce = async (lastId: string) => {
        const t = performance.now()
        const res = await handle(
          new Request('http://localhost/api/client/fetch_messages', {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ username: 'u0', password: 'pw', last_id: lastId, last_sent_id: '', device: 'bench' }),
          }),
        )
        const body = (await res.json()) as { received_smss: unknown[] }
        if (res.status !== 200) throw new Error(`fetch answered ${res.status}`)
        return { ms: performance.now() - t, items: body.received_smss.length }
      }
      // Warm up (the first fetch logs in once; the password is cached from then on).
      for (let i = 0; i < 200; i++) await fetchOnce(`$e${i % 900}`)
      const times: number[] = []
      let items = 0
      for (let i = 0; i < FETCHES; i++) {
        // A cursor among the user's first 900 deliveries: every answer is a full page of 100.
        const r = await fetchOnce(`$e${Math.floor(Math.random() * 900)}`)
        times.push(r.ms)
        items += r.items
      }
      times.sort((a, b) => a - b)
      return { total, populateS, p50: percentile(times, 50), p99: percentile(times, 99), itemsPerAnswer: items / FETCHES }
    })
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

async function measureIngestion() {
  const dir = mkdtempSync(join(tmpdir(), 'm2a-bench-msg-'))
  try {
    return await withService(join(dir, 'index.db'), async (handle) => {
      const put = async (txnId: string, events: unknown[]) => {
        const res = await handle(
          new Request(`http://localhost/_matrix/app/v1/transactions/${txnId}`, {
            method: 'PUT',
            headers: { authorization: `Bearer ${HS_TOKEN}`, 'content-type': 'application/json' },
            body: JSON.stringify({ events }),
          }),
        )
        if (res.status !== 200) throw new Error(`transaction answered ${res.status}: ${await res.text()}`)
      }
      // 50 rooms, two enrolled members each (enrolled by a fetch).
      for (const u of ['a', 'b']) {
        await handle(new Request('http://localhost/api/client/fetch_messages', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: u, password: 'pw' }) }))
      }
      const member = (room: string, user: string) => ({
        type: 'm.room.member', room_id: room, sender: user, state_key: user, content: { membership: 'join', displayname: user },
        event_id: `$m${room}${user}`, origin_server_ts: Date.now(), unsigned: { age: 1 }, age: 1, user_id: user,
      })
      const rooms = Array.from({ length: 50 }, (_, i) => `!room${i}:${SERVER}`)
      await put('1', rooms.flatMap((r) => [member(r, `@a:${SERVER}`), member(r, `@b:${SERVER}`)]))
      let n = 0
      const batch = () =>
        Array.from({ length: 100 }, () => {
          const i = n++
          const sender = i % 2 ? `@a:${SERVER}` : `@b:${SERVER}`
          return {
            type: 'm.room.message', room_id: rooms[i % rooms.length], sender, content: { msgtype: 'm.text', body: `message ${i} with a few words` },
            event_id: `$i${i}`, origin_server_ts: Date.now(), unsigned: { age: 40 }, age: 40, user_id: sender,
          }
        })
      const bodies = Array.from({ length: TXNS }, batch)
      const started = performance.now()
      for (let t = 0; t < TXNS; t++) await put(String(t + 2), bodies[t]!)
      const seconds = (performance.now() - started) / 1000
      return { events: TXNS * 100, seconds, perSecond: (TXNS * 100) / seconds }
    })
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

const small = await measureFetch(SMALL)
const large = await measureFetch(LARGE)
const ingestion = await measureIngestion()
const f = (n: number, d = 2) => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d })
const ratio = large.p99 / small.p99
const lines = [
  `Fetch Messages (page of ${f(large.itemsPerAnswer, 0)} items, password cached), ${FETCHES} fetches each:`,
  '',
  '| indexed messages | p50 ms | p99 ms |',
  '|---|---|---|',
  `| ${SMALL.toLocaleString('en-US')} | ${f(small.p50)} | ${f(small.p99)} |`,
  `| ${LARGE.toLocaleString('en-US')} | ${f(large.p50)} | ${f(large.p99)} |`,
  '',
  `p99 at ${LARGE.toLocaleString('en-US')}: ${f(large.p99)} ms (target < 5 ms: ${large.p99 < 5 ? 'met' : 'missed'}); ×${f(ratio)} of the ${SMALL.toLocaleString('en-US')} case (target ≤ ×1.2: ${ratio <= 1.2 ? 'met' : 'missed'})`,
  `Ingestion: ${ingestion.events.toLocaleString('en-US')} message events in transactions of 100: ${f(ingestion.perSecond, 0)} events/s (target ≥ 5,000: ${ingestion.perSecond >= 5000 ? 'met' : 'missed'})`,
]
console.log(lines.join('\n'))
if (args.out) writeFileSync(args.out, JSON.stringify({ small, large, ingestion }, null, 2))
