/**
 * HTTPS served by the executable itself (TLS_CERT_FILE, TLS_KEY_FILE), the pair re-read on SIGHUP
 * without dropping a connection in the middle of a request. Certificates are made by openssl in a
 * temporary folder (skipped where openssl is missing).
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { copyFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import tls from 'node:tls'
import { runCommand } from '../cli/run.ts'
import { startBinary, type RunningBinary } from '../e2e/binary.ts'
import { eventually, SELECTOR, APP_ID, TOKEN, tempDir } from '../harness.ts'

const openssl = Bun.which('openssl')
const dir = tempDir('m2a-tls-')
const running: RunningBinary[] = []
afterAll(async () => {
  for (const b of running) {
    if (b.proc.exitCode === null) b.proc.kill('SIGKILL')
    await b.proc.exited
  }
  rmSync(dir, { recursive: true, force: true })
})

/** A self-signed certificate for 127.0.0.1 with common name `name`: [cert file, key file]. */
function selfSigned(name: string): [string, string] {
  const cert = join(dir, `${name}.crt`)
  const key = join(dir, `${name}.key`)
  const r = Bun.spawnSync(
    [openssl!, 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', `/CN=${name}`, '-addext', 'subjectAltName=IP:127.0.0.1'],
    { stdout: 'pipe', stderr: 'pipe' },
  )
  if (r.exitCode !== 0) throw new Error(r.stderr.toString())
  return [cert, key]
}

const pem = (file: string) => Bun.file(file).text()

/** The common name of the certificate the server presents to a new connection. */
function presented(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      resolve(socket.getPeerCertificate().subject.CN as string)
      socket.end()
    })
    socket.on('error', reject)
  })
}

const base = { AUTH_MODE: 'none', MATRIX_SERVER_NAME: 'example.org' }

describe.skipIf(openssl === null)('native TLS', () => {
  test('serves HTTPS with the given pair; SIGHUP loads a new pair without dropping a request in flight', async () => {
    const [cert1, key1] = selfSigned('one')
    const [cert2, key2] = selfSigned('two')
    const certFile = join(dir, 'live.crt')
    const keyFile = join(dir, 'live.key')
    copyFileSync(cert1, certFile)
    copyFileSync(key1, keyFile)
    const b = await startBinary({ ...base, TLS_CERT_FILE: certFile, TLS_KEY_FILE: keyFile, PUSH_TOKEN_DB_PATH: join(dir, 'a.db') })
    running.push(b)
    const https = `https://127.0.0.1:${b.port}`
    // Verified against the certificate itself: this is the pair configured, not just any TLS.
    const health = await fetch(`${https}/health`, { tls: { ca: await pem(cert1) } })
    expect(await health.json()).toEqual({ status: 'ok' })
    expect(await presented(b.port)).toBe('one')

    // A request half sent when the certificate changes.
    const body = JSON.stringify({ selector: SELECTOR, token_msgs: TOKEN, app_id_msgs: APP_ID, username: 'alice' })
    const socket = tls.connect({ host: '127.0.0.1', port: b.port, ca: await pem(cert1) })
    await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject))
    let answer = ''
    socket.on('data', (chunk) => (answer += chunk.toString()))
    socket.write(
      `POST /api/client/push_token_report HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n` +
        body.slice(0, 10),
    )
    await Bun.sleep(100)

    copyFileSync(cert2, certFile)
    copyFileSync(key2, keyFile)
    b.proc.kill('SIGHUP')
    await eventually(() => b.lines.some((l) => l.includes('"msg":"TLS certificate reloaded"')), 10_000)
    expect(await presented(b.port)).toBe('two')
    const after = await fetch(`${https}/health`, { tls: { ca: await pem(cert2) } })
    expect(after.status).toBe(200)

    socket.write(body.slice(10))
    await eventually(() => answer.includes('\r\n\r\n{}'), 10_000)
    expect(answer).toStartWith('HTTP/1.1 200')
    socket.end()

    // A pair that does not fit is refused; the service keeps the one it has.
    writeFileSync(keyFile, await pem(key1))
    b.proc.kill('SIGHUP')
    const refused = await eventually(() => b.lines.find((l) => l.includes('the certificate files are not usable')), 10_000)
    expect(refused).toContain('is not the private key of the certificate')
    expect(await presented(b.port)).toBe('two')

    expect(await b.stop()).toBe(0)
  }, 60_000)

  test('a certificate file that is missing, or a key that is not the certificate\'s: exit 2, one line each', async () => {
    const [cert1] = selfSigned('three')
    const [, key2] = selfSigned('four')
    const missing = await runCommand([], { ...base, TLS_CERT_FILE: join(dir, 'nope.crt'), TLS_KEY_FILE: key2, PROXY_PORT: '0' })
    expect(missing.exitCode).toBe(2)
    expect(missing.stderr.trim().split('\n')).toEqual([expect.stringContaining(`invalid configuration: TLS_CERT_FILE: cannot read "${join(dir, 'nope.crt')}"`)])
    const mismatch = await runCommand([], { ...base, TLS_CERT_FILE: cert1, TLS_KEY_FILE: key2, PROXY_PORT: '0' })
    expect(mismatch.exitCode).toBe(2)
    expect(mismatch.stderr.trim()).toBe(`matrix2acrobits: invalid configuration: TLS_KEY_FILE: "${key2}" is not the private key of the certificate in "${cert1}"`)
  })

  test('with TLS too, a port in use stops the start with exit 1', async () => {
    const [cert, key] = selfSigned('five')
    const first = await startBinary({ ...base, TLS_CERT_FILE: cert, TLS_KEY_FILE: key, PUSH_TOKEN_DB_PATH: join(dir, 'b.db') })
    running.push(first)
    const second = await runCommand([], { ...base, TLS_CERT_FILE: cert, TLS_KEY_FILE: key, PROXY_HOST: '127.0.0.1', PROXY_PORT: String(first.port), PUSH_TOKEN_DB_PATH: join(dir, 'c.db') })
    expect(second.exitCode).toBe(1)
    expect(second.stdout).toContain('the port is in use')
    expect(await first.stop()).toBe(0)
  })
})

test('SIGHUP without TLS leaves the service running', async () => {
  const b = await startBinary({ ...base, PUSH_TOKEN_DB_PATH: join(dir, 'd.db') })
  running.push(b)
  b.proc.kill('SIGHUP')
  await eventually(() => b.lines.some((l) => l.includes('nothing to reload')), 10_000)
  expect((await fetch(`${b.url}/health`)).status).toBe(200)
  expect(await b.stop()).toBe(0)
})
