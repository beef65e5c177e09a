/** GET /metrics, /health and /ready on the whole service against the fakes (no port). */
import { afterEach, describe, expect, test } from 'bun:test'
import { NOTIFICATION_OUTCOMES } from '../../src/metrics.ts'
import { APP_ID, SELECTOR, TOKEN, startHarness, type Harness } from '../harness.ts'

let h: Harness
afterEach(async () => h?.close())

const creds = { username: 'alice', password: 'alice-password' }
const BOB_SELECTOR = 'AAAA0E0E6E553673C54F29105A0647204C416A2A:00000001'
/** A device as Synapse sends it for the pushers this service registers (data.selector echoed). */
const device = (pushkey = TOKEN) => ({ app_id: APP_ID, pushkey, pushkey_ts: 1_700_000_000, data: { format: 'event_id_only', selector: pushkey === TOKEN ? SELECTOR : BOB_SELECTOR } })

/** `name{labels} value` lines of the Prometheus text format, as a map. */
function samples(text: string): Map<string, number> {
  const map = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$/.exec(line)
    if (!m) throw new Error(`not Prometheus text format: ${line}`)
    map.set(m[1]!, Number(m[2]))
  }
  return map
}

describe('/metrics', () => {
  test('pnm_inflight_requests counts the PNM requests waiting for an answer at the scrape', async () => {
    h = await startHarness()
    expect((await h.report({ selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, ...creds })).status).toBe(200)
    h.pnm.behave(TOKEN, { kind: 'slow', ms: 400 })
    const pending = h.notify({ event_id: '$slow', room_id: '!r:example.org', devices: [device()] })
    await Bun.sleep(150)
    expect(samples((await h.request('GET', '/metrics')).text).get('matrix2acrobits_pnm_inflight_requests')).toBe(1)
    expect((await pending).status).toBe(200)
    expect(samples((await h.request('GET', '/metrics')).text).get('matrix2acrobits_pnm_inflight_requests')).toBe(0)
  })

  test('every metric the issue names, prefixed, counting what happened, with outcome series from zero', async () => {
    h = await startHarness()
    const fresh = await h.request('GET', '/metrics')
    expect(fresh.status).toBe(200)
    expect(fresh.headers.get('content-type')).toStartWith('text/plain')
    const zero = samples(fresh.text)
    for (const outcome of ['delivered', 'rejected', 'duplicate', 'badge_only', 'failed', ...NOTIFICATION_OUTCOMES]) {
      expect(zero.get(`matrix2acrobits_notifications_total{outcome="${outcome}"}`)).toBe(0)
    }

    expect((await h.report({ selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, ...creds })).status).toBe(200)
    expect((await h.report({ selector: SELECTOR, username: 'alice', password: 'wrong' })).status).toBe(401)
    await h.notify({ event_id: '$a', room_id: '!r:example.org', prio: 'high', counts: { unread: 1 }, devices: [device()] })
    await h.notify({ event_id: '$a', room_id: '!r:example.org', prio: 'high', counts: { unread: 1 }, devices: [device()] })
    await h.notify({ id: '', type: null, sender: '', counts: { unread: 0 }, devices: [device()] })
    await h.report({ selector: BOB_SELECTOR, token_msgs: 'gone-token', app_id_msgs: APP_ID, username: 'bob', password: 'bob-password' })
    h.pnm.forget('gone-token')
    await h.notify({ event_id: '$b', room_id: '!r:example.org', devices: [device('gone-token')] })
    h.pnm.behave(TOKEN, { kind: 'status', status: 503 })
    expect((await h.notify({ event_id: '$c', room_id: '!r:example.org', devices: [device()] })).status).toBe(502)

    const res = await h.request('GET', '/metrics')
    const m = samples(res.text)
    for (const name of m.keys()) expect(name).toStartWith('matrix2acrobits_')
    const n = (outcome: string) => m.get(`matrix2acrobits_notifications_total{outcome="${outcome}"}`)
    expect([n('delivered'), n('duplicate'), n('badge_only'), n('rejected'), n('failed')]).toEqual([1, 1, 1, 1, 1])
    expect(m.get('matrix2acrobits_pnm_responses_total{status="200"}')).toBe(1)
    expect(m.get('matrix2acrobits_pnm_responses_total{status="404"}')).toBe(1)
    expect(m.get('matrix2acrobits_pnm_responses_total{status="503"}')).toBe(3)
    expect(m.get('matrix2acrobits_pnm_request_duration_seconds_count')).toBe(5)
    expect(m.get('matrix2acrobits_pnm_request_duration_seconds_bucket{le="+Inf"}')).toBe(5)
    expect(m.get('matrix2acrobits_pnm_inflight_requests')).toBe(0)
    expect(m.get('matrix2acrobits_pusher_registrations_total{action="set",outcome="ok"}')).toBe(2)
    expect(m.get('matrix2acrobits_pusher_registrations_total{action="delete",outcome="failed"}')).toBe(0)
    expect(m.get('matrix2acrobits_token_reports_total{kind="report",outcome="ok"}')).toBe(2)
    expect(m.get('matrix2acrobits_token_reports_total{kind="report",outcome="401"}')).toBe(1)
    expect(m.get('matrix2acrobits_auth_failures_total{reason="invalid_credentials"}')).toBe(1)
    expect(m.get('matrix2acrobits_stored_tokens')).toBe(2)
    expect(m.get('matrix2acrobits_pusher_jobs_pending')).toBe(0)
    expect([...m.keys()].some((k) => /^matrix2acrobits_build_info\{version="\d+\.\d+\.\d+.*"\}$/.test(k))).toBe(true)
    // Secrets never reach the metrics.
    expect(res.text).not.toContain(TOKEN)
  })

  test('pusher calls the homeserver refuses show as failed registrations and pending jobs', async () => {
    h = await startHarness({ synapse: { namespace: /^@bridge_.*/ } })
    await h.report({ selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, ...creds })
    const m = samples((await h.request('GET', '/metrics')).text)
    expect(m.get('matrix2acrobits_pusher_registrations_total{action="set",outcome="failed"}')).toBeGreaterThanOrEqual(1)
    expect(m.get('matrix2acrobits_pusher_jobs_pending')).toBe(1)
  })

  test('is not on the main app when METRICS_ADDRESS gives it a listener of its own', async () => {
    h = await startHarness({ env: { METRICS_ADDRESS: '127.0.0.1:0' } })
    expect((await h.request('GET', '/metrics')).status).toBe(404)
  })
})

describe('/health and /ready', () => {
  test('/health is 200 while alive; /ready is 200, then 503 while draining', async () => {
    h = await startHarness()
    expect((await h.request('GET', '/health')).json).toEqual({ status: 'ok' })
    expect((await h.request('GET', '/ready')).status).toBe(200)
    h.startDraining()
    const draining = await h.request('GET', '/ready')
    expect(draining.status).toBe(503)
    expect(draining.json).toEqual({ status: 'draining' })
    expect((await h.request('GET', '/health')).status).toBe(200)
  })

  test('/ready is 503 when the database does not accept writes', async () => {
    h = await startHarness()
    // As root (CI containers) a read-only file is still writable, so the refusal is simulated.
    const original = h.store.probeWritable
    h.store.probeWritable = async () => {
      throw new Error('attempt to write a readonly database')
    }
    const res = await h.request('GET', '/ready')
    expect(res.status).toBe(503)
    expect(res.json.status).toBe('database unavailable')
    h.store.probeWritable = original
    expect((await h.request('GET', '/ready')).status).toBe(200)
  })
})
