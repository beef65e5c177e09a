/**
 * Builds the whole service against a fake Synapse and a fake PNM, with a temporary database and
 * every log line captured (at DEBUG), for integration tests that drive it through `app.handle`.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { compose, type ComposeOptions } from '../src/compose.ts'
import { loadConfig } from '../src/config.ts'
import { openPostgres } from '../src/store/postgres.ts'
import { startFakePnm } from './fakes/pnm.ts'
import { startFakeSynapse, type FakeSynapseOptions } from './fakes/synapse.ts'
import { DATABASE_TIMEOUT_MS } from '../src/store/bounded.ts'

export const SELECTOR = '12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14'
export const APP_ID = 'com.acrobits.softphone'
export const TOKEN = 'APA91bG9aqWvmnxnYBZWG9hxvtkgzTXSopfiufzmc6tP3Kb-token-one'

/** The pushers/set body the proxy must send for a message token (FIELD-GUIDE §2). */
export const expectedPusherBody = (pushkey: string, url = 'https://push.example.org/_matrix/push/v1/notify', selector = SELECTOR) => ({
  kind: 'http',
  app_id: APP_ID,
  pushkey,
  app_display_name: APP_ID,
  device_display_name: 'Acrobits Softphone',
  lang: 'en',
  append: true,
  data: { url, format: 'event_id_only', selector },
})

/**
 * A full-format notification as Synapse sends it for one device (FIELD-GUIDE §3); event_id_only
 * carries less. `over` replaces top-level fields.
 */
export function fullNotification(eventId: string, pushkey = TOKEN, over: Record<string, unknown> = {}, appId = APP_ID) {
  return {
    id: eventId,
    event_id: eventId,
    room_id: '!room:example.org',
    type: 'm.room.message',
    sender: '@bob:example.org',
    sender_display_name: 'Bob',
    prio: 'high',
    content: { msgtype: 'm.text', body: 'Hello' },
    counts: { unread: 1 },
    // Synapse echoes the pusher's data: this release's pusher for TOKEN names its account SELECTOR.
    devices: [{ app_id: appId, pushkey, pushkey_ts: 1_700_000_000, data: pushkey === TOKEN ? { selector: SELECTOR } : {}, tweaks: { sound: 'default', highlight: false } }],
    ...over,
  }
}

/** An HTTP answer as tests look at it: status, headers, text, and the JSON when the text is JSON. */
export async function readAnswer(response: Response) {
  const text = await response.text()
  let json: any
  try {
    json = JSON.parse(text)
  } catch {
    json = undefined
  }
  return { status: response.status, json, text, headers: response.headers }
}

const madeDirs: string[] = []

/** Removes every folder tempDir() made that is still there (test/preload.ts runs it after the last file). */
export function removeTempDirs() {
  for (const dir of madeDirs.splice(0)) rmSync(dir, { recursive: true, force: true })
}

/** A fresh folder under the temporary folder, removed at the latest after the last test file. */
export function tempDir(prefix = 'm2a-') {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  madeDirs.push(dir)
  return dir
}

export function captureLogs() {
  const lines: string[] = []
  const stream = new Writable({
    write(chunk, _enc, done) {
      lines.push(...String(chunk).split('\n').filter(Boolean))
      done()
    },
  })
  return { lines, stream, parsed: () => lines.map((l) => JSON.parse(l) as Record<string, any>) }
}

export interface HarnessOptions {
  env?: Record<string, string | undefined>
  synapse?: FakeSynapseOptions
  compose?: ComposeOptions
}

export async function startHarness(options: HarnessOptions = {}) {
  const synapse = startFakeSynapse(options.synapse)
  const pnm = startFakePnm()
  const dir = tempDir()
  const logs = captureLogs()
  const result = loadConfig({
    MATRIX_HOMESERVER_URL: synapse.url,
    MATRIX_AS_TOKEN: synapse.asToken,
    MATRIX_SERVER_NAME: synapse.serverName,
    PROXY_URL: 'https://push.example.org',
    PNM_URL: pnm.url,
    PUSH_TOKEN_DB_PATH: join(dir, 'tokens.db'),
    LOGLEVEL: 'DEBUG',
    ...options.env,
  })
  if (!result.ok) throw new Error(result.errors.join('\n'))
  // DATABASE_URL in env: the service on PostgreSQL (tests give it a schema of their own).
  const pg = result.config.databaseUrl === undefined ? undefined : await openPostgres(result.config.databaseUrl, { timeoutMs: options.compose?.databaseTimeoutMs ?? DATABASE_TIMEOUT_MS })
  const service = compose(result.config, {
    store: pg?.store,
    postgres: pg?.sql,
    logDestination: logs.stream,
    pusherRetryBaseMs: 50,
    pusherRetryMaxMs: 400,
    pnmRetryDelaysMs: [10, 20],
    ...options.compose,
  })
  service.worker.start()
  await service.messaging.start()

  async function request(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
    const init: RequestInit = { method, headers: { ...headers } }
    if (body !== undefined) {
      init.body = typeof body === 'string' ? body : JSON.stringify(body)
      if (typeof body !== 'string') (init.headers as Record<string, string>)['content-type'] = 'application/json'
    }
    return readAnswer(await service.app.handle(new Request(`http://localhost${path}`, init)))
  }

  return {
    ...service,
    config: result.config,
    synapse,
    pnm,
    logs,
    dir,
    request,
    report: (fields: Record<string, string>) => request('POST', '/api/client/push_token_report', fields),
    notify: (notification: Record<string, unknown>) => request('POST', '/_matrix/push/v1/notify', { notification }),
    async close() {
      await service.worker.stop()
      await service.journal.flush()
      await service.messaging.stop()
      await service.store.close()
      service.outbox?.close()
      service.index?.close()
      synapse.stop()
      pnm.stop()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

export type Harness = Awaited<ReturnType<typeof startHarness>>

/** Polls until `check` returns a truthy value or `ms` have passed. */
export async function eventually<T>(check: () => T | Promise<T>, ms = 3000): Promise<T> {
  const end = Date.now() + ms
  for (;;) {
    const value = await check()
    if (value) return value
    if (Date.now() > end) throw new Error('condition not met in time')
    await Bun.sleep(10)
  }
}
