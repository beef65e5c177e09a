/**
 * The operator's view of the running executable: /health, /ready, /openapi.json, /metrics on its
 * own listener (METRICS_ADDRESS), one JSON log line per request (probes at DEBUG), LOG_FORMAT=pretty, and the
 * database under systemd's STATE_DIRECTORY.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { existsSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { buildOpenApiDocument } from '../../src/openapi.ts'
import { binaryPath, startBinary, type RunningBinary } from '../e2e/binary.ts'
import { tempDir } from '../harness.ts'

const dir = tempDir('m2a-ops-bin-')
const running: RunningBinary[] = []
afterAll(async () => {
  for (const b of running) if (b.proc.exitCode === null) await b.stop()
  rmSync(dir, { recursive: true, force: true })
})

async function start(env: Record<string, string>) {
  const b = await startBinary(env)
  running.push(b)
  return b
}

const json = (lines: string[]) => lines.map((l) => JSON.parse(l) as Record<string, unknown>)

describe('the running executable', () => {
  test('/health, /ready, /openapi.json; /metrics only on METRICS_ADDRESS; a JSON log line per request; SIGTERM exits 0', async () => {
    const state = join(dir, 'state')
    const b = await start({ STATE_DIRECTORY: state, METRICS_ADDRESS: '127.0.0.1:0' })
    // The database follows systemd's StateDirectory=, readable by the service's user only.
    expect(statSync(join(state, 'push_tokens.db')).mode & 0o777).toBe(0o600)

    expect(await (await fetch(`${b.url}/health`)).json()).toEqual({ status: 'ok' })
    expect(await (await fetch(`${b.url}/ready`)).json()).toEqual({ status: 'ready' })
    const openapi = await fetch(`${b.url}/openapi.json`)
    expect(openapi.status).toBe(200)
    expect(await openapi.json()).toEqual(JSON.parse(JSON.stringify(buildOpenApiDocument())))
    expect((await fetch(`${b.url}/metrics`)).status).toBe(404)

    const metricsLine = json(b.lines).find((l) => l.msg === 'metrics listening')!
    const metricsUrl = `http://${metricsLine.address as string}`
    const metrics = await fetch(`${metricsUrl}/metrics`)
    expect(metrics.status).toBe(200)
    expect(metrics.headers.get('content-type')).toStartWith('text/plain')
    const text = await metrics.text()
    for (const name of [
      'matrix2acrobits_notifications_total',
      'matrix2acrobits_pnm_request_duration_seconds',
      'matrix2acrobits_pnm_responses_total',
      'matrix2acrobits_pnm_inflight_requests',
      'matrix2acrobits_pusher_registrations_total',
      'matrix2acrobits_token_reports_total',
      'matrix2acrobits_auth_failures_total',
      'matrix2acrobits_stored_tokens',
      'matrix2acrobits_process_resident_memory_bytes',
    ]) {
      expect(text).toContain(`# TYPE ${name} `)
    }
    expect((await fetch(`${metricsUrl}/health`)).status).toBe(404)

    const bad = await fetch(`${b.url}/_matrix/push/v1/notify`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{nope' })
    expect(bad.status).toBe(400)
    const id = bad.headers.get('x-request-id')
    expect(id).toBeTruthy()
    await Bun.sleep(50)
    // Every line on stdout is one JSON object.
    const logged = json(b.lines)
    const line = logged.find((l) => l.msg === 'request' && l.req_id === id)!
    expect(line).toMatchObject({ level: 'info', method: 'POST', route: '/_matrix/push/v1/notify', status: 400, errcode: 'M_NOT_JSON', service: 'matrix2acrobits' })
    expect(typeof line.duration_ms).toBe('number')
    expect(typeof line.time).toBe('string')
    // Probes and scrapes are DEBUG lines, not written at the default INFO.
    expect(logged.filter((l) => l.msg === 'request' && ['/health', '/ready', '/metrics'].includes(l.route as string))).toEqual([])

    // A notify for a pushkey stored nowhere: its one line says so (the pushkey at DEBUG only).
    const unknown = await fetch(`${b.url}/_matrix/push/v1/notify`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ notification: { event_id: '$e', devices: [{ app_id: 'com.acrobits.softphone', pushkey: 'never-reported' }] } }),
    })
    expect(await unknown.json()).toEqual({ rejected: ['never-reported'] })
    const unknownId = unknown.headers.get('x-request-id')
    await Bun.sleep(50)
    const ofUnknown = json(b.lines).filter((l) => l.req_id === unknownId)
    expect(ofUnknown).toEqual([
      expect.objectContaining({ level: 'info', msg: 'request', status: 200, unknown_pushkeys: 1, devices: [expect.objectContaining({ outcome: 'rejected' })] }),
    ])

    expect(await b.stop()).toBe(0)
    expect(json(b.lines).at(-1)!.msg).toBe('stopped')
  })

  test('LOG_FORMAT=pretty writes lines for humans, not JSON', async () => {
    const proc = Bun.spawn([binaryPath()], {
      env: { PATH: process.env.PATH ?? '', PROXY_HOST: '127.0.0.1', PROXY_PORT: '0', LOG_FORMAT: 'pretty', PUSH_TOKEN_DB_PATH: join(dir, 'pretty.db') },
      stdout: 'pipe',
      stderr: 'pipe',
    })
    let out = ''
    const decoder = new TextDecoder()
    const reader = proc.stdout.getReader()
    const end = Date.now() + 10_000
    while (!out.includes('matrix2acrobits listening') && Date.now() < end) {
      const { value, done } = await reader.read()
      if (done) break
      out += decoder.decode(value, { stream: true })
    }
    reader.releaseLock()
    // The SIGTERM handler is installed just after that line is written.
    await Bun.sleep(200)
    proc.kill('SIGTERM')
    expect(await proc.exited).toBe(0)
    expect(out).toMatch(/INFO.*matrix2acrobits listening/)
    expect(out.split('\n')[0]!.trimStart().startsWith('{')).toBe(false)
    expect(existsSync(join(dir, 'pretty.db'))).toBe(true)
  })
})
