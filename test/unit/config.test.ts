import { describe, expect, test } from 'bun:test'
import { rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { loadConfig } from '../../src/config.ts'
import { tempDir } from '../harness.ts'

const io = { readFile: (p: string) => require('node:fs').readFileSync(p, 'utf8'), cwd: '/srv/m2a' }
const ok = (env: Record<string, string>) => {
  const r = loadConfig(env, io)
  if (!r.ok) throw new Error(r.errors.join('\n'))
  return r.config
}
const errors = (env: Record<string, string>) => {
  const r = loadConfig(env, io)
  return r.ok ? [] : r.errors
}

describe('loadConfig', () => {
  test('nothing is required; defaults', () => {
    const c = ok({})
    expect(c).toMatchObject({
      host: '0.0.0.0',
      port: 8080,
      dbPath: '/srv/m2a/data/push_tokens.db',
      pnmUrl: 'https://pnm.cloudsoftphone.com/pnm2/send',
      pnmTimeoutMs: 10000,
      pusherFormat: 'event_id_only',
      pnmVerb: 'NotifyTextMessage',
      fallbackText: 'New message',
      authMode: 'matrix',
      logLevel: 'info',
    })
    expect(c.homeserverUrl).toBeUndefined()
    expect(c.pushGatewayUrl).toBeUndefined()
  })

  test('server name defaults to the homeserver hostname; URLs lose trailing slashes', () => {
    const c = ok({ MATRIX_HOMESERVER_URL: 'https://matrix.example.org:8448/', PROXY_URL: 'https://push.example.org/' })
    expect(c.homeserverUrl).toBe('https://matrix.example.org:8448')
    expect(c.serverName).toBe('matrix.example.org')
    expect(c.pushGatewayUrl).toBe('https://push.example.org/_matrix/push/v1/notify')
  })

  test('PROXY_URL: a path of its own is invalid (Synapse wants exactly /_matrix/push/v1/notify); the full gateway URL is accepted', () => {
    expect(errors({ PROXY_URL: 'https://x.org/m2a//' })[0]).toStartWith('PROXY_URL: "https://x.org/m2a//" has the path /m2a//: Synapse accepts a push gateway only at /_matrix/push/v1/notify')
    expect(errors({ PROXY_URL: 'https://x.org/m2a/_matrix/push/v1/notify' })[0]).toStartWith('PROXY_URL:')
    expect(errors({ PROXY_URL: 'https://x.org/?a=1' })[0]).toStartWith('PROXY_URL:')
    expect(ok({ PROXY_URL: 'https://x.org/_matrix/push/v1/notify' }).pushGatewayUrl).toBe('https://x.org/_matrix/push/v1/notify')
    expect(ok({ PROXY_URL: 'https://x.org:8443/_matrix/push/v1/notify/' }).proxyUrl).toBe('https://x.org:8443')
  })

  test('PROXY_HOST and the host of METRICS_ADDRESS are IP addresses or host names', () => {
    expect(ok({ PROXY_HOST: '::1' }).host).toBe('::1')
    expect(ok({ PROXY_HOST: '[::1]' }).host).toBe('::1')
    expect(ok({ PROXY_HOST: 'localhost' }).host).toBe('localhost')
    expect(errors({ PROXY_HOST: 'a b' })).toEqual(['PROXY_HOST: "a b" is not an IP address or host name'])
    expect(errors({ METRICS_ADDRESS: '-x-:1' })).toEqual(['METRICS_ADDRESS: "-x-" is not an IP address or host name'])
  })

  test('PUSH_TOKEN_DB_PATH=:memory: is SQLite\'s in-memory database, not a file in the working directory', () => {
    expect(ok({ PUSH_TOKEN_DB_PATH: ':memory:' }).dbPath).toBe(':memory:')
  })

  test('TLS_CERT_FILE and TLS_KEY_FILE come together and must be readable PEM', () => {
    expect(errors({ TLS_CERT_FILE: '/x/cert.pem' })).toEqual(['TLS_KEY_FILE: not set, but TLS_CERT_FILE is: HTTPS needs both'])
    const e = errors({ TLS_CERT_FILE: '/nonexistent/cert.pem', TLS_KEY_FILE: '/nonexistent/key.pem' })
    expect(e).toHaveLength(2)
    expect(e[0]).toStartWith('TLS_CERT_FILE: cannot read "/nonexistent/cert.pem"')
    expect(e[1]).toStartWith('TLS_KEY_FILE: cannot read "/nonexistent/key.pem"')
  })

  test('abuse limits: defaults, values, and invalid values named', () => {
    expect(ok({})).toMatchObject({
      authFailuresPerMinute: 5,
      authUserFailuresPerMinute: 20,
      authChecksPerMinute: 30,
      authMaxInflight: 10,
      maxDevicesPerUser: 20,
      reportsPerMinute: 30,
    })
    expect(
      ok({ AUTH_USER_FAILURES_PER_MINUTE: '50', AUTH_CHECKS_PER_MINUTE: '60', AUTH_MAX_INFLIGHT: '4', MAX_DEVICES_PER_USER: '3', REPORTS_PER_MINUTE: '7' }),
    ).toMatchObject({ authUserFailuresPerMinute: 50, authChecksPerMinute: 60, authMaxInflight: 4, maxDevicesPerUser: 3, reportsPerMinute: 7 })
    const names = ['AUTH_USER_FAILURES_PER_MINUTE', 'AUTH_CHECKS_PER_MINUTE', 'AUTH_MAX_INFLIGHT', 'MAX_DEVICES_PER_USER', 'REPORTS_PER_MINUTE']
    const found = errors(Object.fromEntries(names.map((n) => [n, '0'])))
    for (const name of names) expect(found.filter((e) => e.startsWith(`${name}: `))).toHaveLength(1)
  })

  test('URL userinfo never appears in an error', () => {
    const found = errors({ MATRIX_HOMESERVER_URL: 'gopher://admin:hunter2@example.org' })
    expect(found).toHaveLength(1)
    expect(found[0]).not.toContain('hunter2')
  })

  test('SUPER_ADMIN_TOKEN is an alias of MATRIX_AS_TOKEN', () => {
    expect(ok({ SUPER_ADMIN_TOKEN: 'abc' }).asToken).toBe('abc')
    expect(ok({ SUPER_ADMIN_TOKEN: 'abc', MATRIX_AS_TOKEN: 'def' }).asToken).toBe('def')
    // Noted at start like every Go name, never with its value.
    expect(ok({ SUPER_ADMIN_TOKEN: 'abc' }).notes).toEqual(["SUPER_ADMIN_TOKEN (the Go proxy's name) is read as MATRIX_AS_TOKEN"])
    expect(ok({ SUPER_ADMIN_TOKEN: 'abc', MATRIX_AS_TOKEN: 'def' }).notes).toEqual(['SUPER_ADMIN_TOKEN is ignored: MATRIX_AS_TOKEN is set too'])
  })

  test('LOGLEVEL in any case; CRITICAL and ERROR', () => {
    expect(ok({ LOGLEVEL: 'debug' }).logLevel).toBe('debug')
    expect(ok({ LOGLEVEL: 'Warning' }).logLevel).toBe('warn')
    expect(ok({ LOGLEVEL: 'CRITICAL' }).logLevel).toBe('fatal')
    expect(ok({ LOGLEVEL: 'error' }).logLevel).toBe('error')
    // The names the log lines themselves print.
    expect(ok({ LOGLEVEL: 'fatal' }).logLevel).toBe('fatal')
    expect(ok({ LOGLEVEL: 'warn' }).logLevel).toBe('warn')
    expect(errors({ LOGLEVEL: 'loud' })[0]).toStartWith('LOGLEVEL:')
  })

  test('PUSHER_FORMAT, PNM_VERB and AUTH_MODE take their documented values in any case', () => {
    const c = ok({ PUSHER_FORMAT: 'FULL', PNM_VERB: 'notifygenerictextmessage', AUTH_MODE: 'None' })
    expect([c.pusherFormat, c.pnmVerb, c.authMode]).toEqual(['full', 'NotifyGenericTextMessage', 'none'])
  })

  test('empty values count as unset', () => {
    expect(ok({ PROXY_URL: '', PROXY_PORT: ' ' }).port).toBe(8080)
  })

  test('STATE_DIRECTORY (systemd) gives the default database folder', () => {
    expect(ok({ STATE_DIRECTORY: '/var/lib/matrix2acrobits' }).dbPath).toBe('/var/lib/matrix2acrobits/push_tokens.db')
    expect(ok({ STATE_DIRECTORY: '/var/lib/x', PUSH_TOKEN_DB_PATH: 'rel/t.db' }).dbPath).toBe('/srv/m2a/rel/t.db')
  })

  test('every invalid variable is reported at once, each naming itself', () => {
    const list = errors({
      PROXY_PORT: 'eighty',
      MATRIX_HOMESERVER_URL: 'not a url',
      PROXY_URL: 'ftp://x',
      AUTH_MODE: 'ldap',
      PNM_TIMEOUT_MS: '-1',
      PUSHER_FORMAT: 'json',
      PNM_VERB: 'Shout',
      LOGLEVEL: 'loud',
      MAPPING_FILE: '/nonexistent/map.json',
      PNM_URL: '::',
    })
    for (const name of ['PROXY_PORT', 'MATRIX_HOMESERVER_URL', 'PROXY_URL', 'AUTH_MODE', 'PNM_TIMEOUT_MS', 'PUSHER_FORMAT', 'PNM_VERB', 'LOGLEVEL', 'MAPPING_FILE', 'PNM_URL']) {
      expect(list.filter((e) => e.startsWith(`${name}:`))).toHaveLength(1)
    }
    expect(list).toHaveLength(10)
  })

  test('port out of range and zero timeout are invalid', () => {
    expect(errors({ PROXY_PORT: '70000' })[0]).toStartWith('PROXY_PORT:')
    expect(errors({ PNM_TIMEOUT_MS: '0' })[0]).toStartWith('PNM_TIMEOUT_MS:')
  })

  test('a mapping file that is not a valid mapping is invalid; a valid one is loaded', () => {
    const dir = tempDir()
    writeFileSync(join(dir, 'bad.json'), '{"matrix_id":"@a:b"}')
    writeFileSync(join(dir, 'good.json'), '[{"matrix_id":"@a:b","number":"100"}]')
    expect(errors({ MAPPING_FILE: join(dir, 'bad.json') })[0]).toStartWith('MAPPING_FILE:')
    expect(ok({ MAPPING_FILE: join(dir, 'good.json') }).mapping[0]!.matrixId).toBe('@a:b')
    rmSync(dir, { recursive: true, force: true })
  })

  test('address lists for TRUST_PROXY and NOTIFY_ALLOWED_IPS', () => {
    const c = ok({ NOTIFY_ALLOWED_IPS: '10.0.0.0/8, ::1 192.168.1.5' })
    expect(c.notifyAllowedIps!.has('10.2.3.4')).toBe(true)
    expect(c.notifyAllowedIps!.has('::1')).toBe(true)
    expect(c.notifyAllowedIps!.has('192.168.1.6')).toBe(false)
    expect(errors({ TRUST_PROXY: '10.0.0.0/33' })[0]).toStartWith('TRUST_PROXY:')
    expect(errors({ NOTIFY_ALLOWED_IPS: 'example.org' })[0]).toStartWith('NOTIFY_ALLOWED_IPS:')
  })
  test('SEND_DEDUPE_SECONDS: 10 by default, 0 turns it off, anything else whole seconds', () => {
    expect(ok({}).sendDedupeSeconds).toBe(10)
    expect(ok({ SEND_DEDUPE_SECONDS: '0' }).sendDedupeSeconds).toBe(0)
    expect(ok({ SEND_DEDUPE_SECONDS: '30' }).sendDedupeSeconds).toBe(30)
    expect(errors({ SEND_DEDUPE_SECONDS: '-1' })[0]).toStartWith('SEND_DEDUPE_SECONDS:')
    expect(errors({ SEND_DEDUPE_SECONDS: '1.5' })[0]).toStartWith('SEND_DEDUPE_SECONDS:')
  })
})

describe('DATABASE_URL', () => {
  test('postgres:// and postgresql:// select PostgreSQL; unset keeps the SQLite file', () => {
    expect(ok({}).databaseUrl).toBeUndefined()
    expect(ok({ DATABASE_URL: 'postgres://app:pw@db:5432/push' }).databaseUrl).toBe('postgres://app:pw@db:5432/push')
    expect(ok({ DATABASE_URL: 'postgresql://app@db/push' }).databaseUrl).toBe('postgresql://app@db/push')
    expect(ok({ DATABASE_URL: '' }).databaseUrl).toBeUndefined()
    // A Unix socket, as libpq writes it: an empty host after the user, the socket's folder in host=.
    expect(ok({ DATABASE_URL: 'postgres://app:pw@/push?host=/run/postgresql' }).databaseUrl).toBe('postgres://app:pw@/push?host=/run/postgresql')
    expect(ok({ DATABASE_URL: 'postgres:///push?host=/run/postgresql&user=app' }).databaseUrl).toBe('postgres:///push?host=/run/postgresql&user=app')
  })

  test('anything else is refused, the password replaced by [REDACTED]', () => {
    expect(errors({ DATABASE_URL: 'mysql://app:hunter2@db/push' })).toEqual([
      'DATABASE_URL: "mysql://app:[REDACTED]@db/push" must start with postgres:// or postgresql:// (unset it to use the SQLite file PUSH_TOKEN_DB_PATH)',
    ])
    expect(errors({ DATABASE_URL: 'postgres:///push?password=hunter2' })[0]).toBe(
      'DATABASE_URL: "postgres:///push?password=[REDACTED]" names no host (postgres://user:password@host:5432/database)',
    )
    expect(errors({ DATABASE_URL: 'db.example.org' })[0]).toContain('is not a URL')
    expect(errors({ DATABASE_URL: 'postgres://app:hunter2@/push' })).toEqual([
      'DATABASE_URL: "postgres://app:[REDACTED]@/push" names no host (postgres://user:password@host:5432/database)',
    ])
  })
})
