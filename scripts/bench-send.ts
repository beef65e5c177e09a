/**
 * Send Message answer time on an existing direct chat, against the fake Synapse of the tests
 * (test/fakes/synapse.ts: real HTTP on 127.0.0.1, rooms, transactions to the proxy), measured on
 * the built executable. The baseline, measured in the same run, is the same message PUT straight
 * to the fake's /send: what the homeserver call alone costs. Each send of the proxy re-checks the
 * room (GET state), sends (PUT send) and indexes the event; the ratio says what that adds.
 *
 *   npm run bench:send              (2,000 sends each way)
 *   npm run bench:send -- --quick   (300)
 */
import { rmSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { parseArgs } from 'node:util'
import { startFakeSynapse } from '../test/fakes/synapse.ts'
import { binaryPath, startBinary } from '../test/e2e/binary.ts'
import { tempDir } from '../test/harness.ts'

const { values: args } = parseArgs({ args: Bun.argv.slice(2), options: { quick: { type: 'boolean' } } })
const SENDS = args.quick ? 300 : 2000
// The proxy allows 30 messages a minute per account: spread the sends over enough senders.
const PER_ACCOUNT = 25
const ACCOUNTS = Math.ceil(SENDS / PER_ACCOUNT)
const SEND_PATH = '/api/client/send_message'

const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!
function summary(ms: number[]) {
  const sorted = [...ms].sort((a, b) => a - b)
  return { p50: quantile(sorted, 0.5), p99: quantile(sorted, 0.99), mean: ms.reduce((a, b) => a + b, 0) / ms.length }
}

const users: Record<string, string> = { bob: 'bob-pw' }
for (let i = 0; i < ACCOUNTS; i++) users[`sender${i}`] = `pw-${i}`
const synapse = startFakeSynapse({ users })
const dir = tempDir('m2a-bench-send-')
const rooms: string[] = []
try {
  for (let i = 0; i < ACCOUNTS; i++) {
    const me = synapse.userId(`sender${i}`)
    const room = synapse.directChat(me, synapse.userId('bob'))
    synapse.rooms.putAccountData(me, 'm.direct', { [synapse.userId('bob')]: [room] })
    rooms.push(room)
  }
  const proxy = await startBinary({
    MATRIX_HOMESERVER_URL: synapse.url,
    MATRIX_AS_TOKEN: synapse.asToken,
    MATRIX_HS_TOKEN: synapse.hsToken,
    MATRIX_SERVER_NAME: synapse.serverName,
    PUSH_TOKEN_DB_PATH: join(dir, 'bench.db'),
    // The default level: one line per request, as in production.
    LOGLEVEL: 'INFO',
  })
  synapse.connectAppservice({ url: proxy.url })
  const send = async (i: number, body: string) => {
    const started = performance.now()
    const r = await fetch(proxy.url + SEND_PATH, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: `sender${i % ACCOUNTS}`, password: `pw-${i % ACCOUNTS}`, to: 'bob', body }),
    })
    const text = await r.text()
    if (r.status !== 200) throw new Error(`send answered ${r.status}: ${text}`)
    return performance.now() - started
  }
  // Warm-up: every account's password check is cached and its chat known.
  for (let i = 0; i < ACCOUNTS; i++) await send(i, `warm-up ${i}`)
  await synapse.appservice.flushed(60_000)

  const viaProxy: number[] = []
  for (let i = 0; i < SENDS; i++) viaProxy.push(await send(i, `bench message ${i}`))

  const direct: number[] = []
  for (let i = 0; i < SENDS; i++) {
    const started = performance.now()
    const user = synapse.userId(`sender${i % ACCOUNTS}`)
    const url = `${synapse.url}/_matrix/client/v3/rooms/${encodeURIComponent(rooms[i % ACCOUNTS]!)}/send/m.room.message/${Bun.randomUUIDv7()}?user_id=${encodeURIComponent(user)}`
    const r = await fetch(url, {
      method: 'PUT',
      headers: { authorization: `Bearer ${synapse.asToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ msgtype: 'm.text', body: `direct message ${i}` }),
    })
    await r.text()
    direct.push(performance.now() - started)
  }
  await proxy.stop()

  const p = summary(viaProxy)
  const d = summary(direct)
  const f = (n: number) => n.toFixed(2)
  console.log(`Send Message on an existing direct chat, ${SENDS} sends one after another (ms)\n`)
  console.log('| | p50 | p99 | mean |')
  console.log('|---|---|---|---|')
  console.log(`| proxy: POST ${SEND_PATH} | ${f(p.p50)} | ${f(p.p99)} | ${f(p.mean)} |`)
  console.log(`| baseline: PUT /send to the fake Synapse | ${f(d.p50)} | ${f(d.p99)} | ${f(d.mean)} |`)
  console.log(`| ratio | ×${(p.p50 / d.p50).toFixed(1)} | ×${(p.p99 / d.p99).toFixed(1)} | ×${(p.mean / d.mean).toFixed(1)} |`)
} finally {
  synapse.stop()
  rmSync(dir, { recursive: true, force: true })
  rmSync(dirname(binaryPath()), { recursive: true, force: true })
}
