/**
 * Messaging on the executable: the fake Synapse PUTs its transactions to the running binary over
 * HTTP; fetches read them back; the data survives a restart and a kill -9 in the middle of a
 * stream of transactions (every one answered 200 is kept; Synapse's retries fill the rest).
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { join } from 'node:path'
import type { FakePnm } from '../fakes/pnm.ts'
import type { FakeSynapse } from '../fakes/synapse.ts'
import { startBinary, startExecutableFakes, stopExecutableFakes, type RunningBinary } from './binary.ts'

const PASSWORDS = { alice: 'alice-password', bob: 'bob-password' }
let synapse: FakeSynapse
let pnm: FakePnm
let dir: string
let env: Record<string, string>
const running: RunningBinary[] = []
const alice = '@alice:example.org'
const bob = '@bob:example.org'

beforeAll(() => {
  ;({ synapse, pnm, dir } = startExecutableFakes({ users: PASSWORDS, sender: { retryDelayMs: () => 50, timeoutMs: 5_000 } }))
  env = {
    MATRIX_HOMESERVER_URL: synapse.url,
    MATRIX_AS_TOKEN: synapse.asToken,
    MATRIX_HS_TOKEN: synapse.hsToken,
    MATRIX_SERVER_NAME: synapse.serverName,
    PROXY_URL: 'https://push.example.org/',
    PNM_URL: pnm.url,
    PUSH_TOKEN_DB_PATH: join(dir, 'state', 'tokens.db'),
  }
})

afterAll(() => stopExecutableFakes({ synapse, pnm, dir }, running))

async function start() {
  const b = await startBinary(env)
  running.push(b)
  synapse.connectAppservice({ url: b.url })
  return b
}

const fetchMessages = async (b: RunningBinary, fields: Record<string, string> = {}) => {
  const res = await fetch(`${b.url}/api/client/fetch_messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ username: 'bob', password: PASSWORDS.bob, ...fields }).toString(),
  })
  expect(res.status).toBe(200)
  return (await res.json()) as { received_smss: { sms_id: string; sms_text: string; sender: string }[] }
}

describe('messaging on the executable', () => {
  test('without MATRIX_HS_TOKEN the start-up line says messaging is off, and fetches are 503 naming it', async () => {
    const { MATRIX_HS_TOKEN: _, ...rest } = env
    const b = await startBinary({ ...rest, PUSH_TOKEN_DB_PATH: join(dir, 'off.db') })
    running.push(b)
    expect(b.lines.some((l) => l.includes('"msg":"matrix2acrobits listening"') && l.includes('"messaging":"off (MATRIX_HS_TOKEN is not set)"'))).toBe(true)
    const res = await fetch(`${b.url}/api/client/fetch_messages`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"username":"bob","password":"x"}' })
    expect(res.status).toBe(503)
    expect(((await res.json()) as { error: string }).error).toContain('MATRIX_HS_TOKEN')
    expect(await b.stop()).toBe(0)
  }, 30_000)

  test('transactions in, fetch out; restart; data kept; kill -9 during a stream loses nothing answered', async () => {
    let b = await start()
    expect(b.lines.some((l) => l.includes('"messaging":"on"'))).toBe(true)
    await fetchMessages(b)
    const room = synapse.rooms.createRoom(alice, { preset: 'trusted_private_chat', invite: [bob], is_direct: true })
    const first = synapse.sendText(alice, room, 'over real HTTP')
    await synapse.appservice.flushed()
    const got = await fetchMessages(b)
    expect(got.received_smss).toEqual([expect.objectContaining({ sms_id: first, sender: 'alice', sms_text: 'over real HTTP' })])

    expect(await b.stop()).toBe(0)
    b = await start()
    expect((await fetchMessages(b, { last_id: '' })).received_smss.map((i) => i.sms_id)).toContain(first)

    // A stream of transactions, and kill -9 in the middle of it.
    const ids: string[] = []
    for (let i = 0; i < 40; i++) {
      ids.push(synapse.sendText(alice, room, `stream ${i}`))
      if (i % 5 === 0) await Bun.sleep(5)
    }
    await Bun.sleep(20)
    b.proc.kill('SIGKILL')
    await b.proc.exited
    const answered = synapse.appservice.acknowledged.flatMap((t) => t.events.map((e) => e.event_id as string))
    b = await start()
    await synapse.appservice.flushed(15_000)
    const all: string[] = []
    for (let cursor = first; ; ) {
      const page = await fetchMessages(b, { last_id: cursor })
      if (page.received_smss.length === 0) break
      all.push(...page.received_smss.map((i) => i.sms_id))
      cursor = page.received_smss.at(-1)!.sms_id
    }
    for (const id of answered) if (ids.includes(id)) expect(all).toContain(id)
    expect(all).toEqual(ids)
    expect(await b.stop()).toBe(0)

    // At INFO (the default) no message body is logged; at no level the appservice tokens or a password.
    const logged = running.flatMap((r) => r.lines).join('\n')
    for (const secret of [synapse.hsToken, synapse.asToken, PASSWORDS.bob]) expect(logged).not.toContain(secret)
    expect(logged).not.toContain('over real HTTP')
    expect(logged).not.toMatch(/stream \d/)
  }, 90_000)

  test('at DEBUG, transactions, fetches and a wrong hs_token log neither the appservice tokens nor the password', async () => {
    const b = await startBinary({ ...env, LOGLEVEL: 'debug', PUSH_TOKEN_DB_PATH: join(dir, 'debug.db') })
    running.push(b)
    synapse.connectAppservice({ url: b.url })
    await fetchMessages(b)
    const room = synapse.rooms.createRoom(alice, { preset: 'trusted_private_chat', invite: [bob], is_direct: true })
    synapse.sendText(alice, room, 'debug level')
    await synapse.appservice.flushed()
    const wrong = await fetch(`${b.url}/_matrix/app/v1/transactions/1`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${synapse.hsToken}-wrong`, 'content-type': 'application/json' },
      body: '{"events":[]}',
    })
    expect(wrong.status).toBe(403)
    // A probe's access line is DEBUG: it shows the level is on.
    expect((await fetch(`${b.url}/health`)).status).toBe(200)
    expect(await b.stop()).toBe(0)
    const logged = b.lines.join('\n')
    expect(logged).toContain('"level":"debug"')
    for (const secret of [synapse.hsToken, synapse.asToken, PASSWORDS.bob]) expect(logged).not.toContain(secret)
  }, 30_000)
})
