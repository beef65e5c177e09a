/** `appservice-registration` and `--help`, on the built executable. */
import { afterAll, describe, expect, test } from 'bun:test'
import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { binaryPath } from '../e2e/binary.ts'
import { tempDir } from '../harness.ts'
import { runCommand } from './run.ts'

const dir = tempDir('m2a-reg-')
afterAll(() => rmSync(dir, { recursive: true, force: true }))

interface Registration {
  id: string
  url: string | null
  as_token: string
  hs_token: string
  sender_localpart: string
  rate_limited: boolean
  namespaces: { users: { exclusive: boolean; regex: string }[] }
}

describe('appservice-registration', () => {
  test('prints one valid YAML document with fresh tokens, url null, a non-exclusive users namespace, and the env lines', async () => {
    const first = await runCommand(['appservice-registration', '--server-name', 'example.org'])
    const second = await runCommand(['appservice-registration'], { MATRIX_SERVER_NAME: 'example.org' })
    expect(first.exitCode).toBe(0)
    expect(second.exitCode).toBe(0)
    const a = Bun.YAML.parse(first.stdout) as Registration
    const b = Bun.YAML.parse(second.stdout) as Registration
    expect(a.url).toBeNull()
    expect(a.rate_limited).toBe(false)
    expect(a.id).toBe('matrix2acrobits')
    expect(a.sender_localpart).toBe('matrix2acrobits')
    expect(a.as_token).toMatch(/^[0-9a-f]{64}$/)
    expect(a.hs_token).toMatch(/^[0-9a-f]{64}$/)
    expect(a.hs_token).not.toBe(a.as_token)
    // Fresh on every run.
    expect(b.as_token).not.toBe(a.as_token)
    expect(b.hs_token).not.toBe(a.hs_token)
    expect(a.namespaces.users).toHaveLength(1)
    const [users] = a.namespaces.users
    expect(users!.exclusive).toBe(false)
    // Synapse uses re.match (anchored at the start only); the regex must cover every user of the server and no other.
    const regex = new RegExp('^(?:' + users!.regex + ')')
    for (const user of ['@alice:example.org', '@bob.smith:example.org', '@+49123:example.org']) expect(regex.test(user)).toBe(true)
    for (const user of ['@alice:example.org.evil.com', '@alice:exampleXorg', '@alice:other.org']) expect(regex.test(user)).toBe(false)
    // The env lines are comments that match the registration.
    expect(first.stdout).toContain(`# MATRIX_AS_TOKEN=${a.as_token}`)
    expect(first.stdout).toContain('# MATRIX_SERVER_NAME=example.org')
    // Without --url or PROXY_URL: url null, with a note that messaging stays off.
    expect(first.stderr).toContain('messaging stays off')
    // The proxy checks Synapse's transactions with hs_token: the env lines carry it.
    expect(first.stdout).toContain(`# MATRIX_HS_TOKEN=${a.hs_token}`)
    expect(first.stdout).toContain('# MATRIX_AS_ID=matrix2acrobits')
  })

  test('takes the server name from MATRIX_HOMESERVER_URL, and the homeserver URL and PROXY_URL into the env lines', async () => {
    const r = await runCommand(['appservice-registration'], { MATRIX_HOMESERVER_URL: 'https://matrix.example.com:8448', PROXY_URL: 'https://push.example.com' })
    expect(r.exitCode).toBe(0)
    const reg = Bun.YAML.parse(r.stdout) as Registration
    expect(reg.namespaces.users[0]!.regex).toBe('@.*:matrix\\.example\\.com$')
    expect(r.stdout).toContain('# MATRIX_HOMESERVER_URL=https://matrix.example.com:8448')
    expect(r.stdout).toContain('# PROXY_URL=https://push.example.com')
    // PROXY_URL is where Synapse sends transactions, unless --url says otherwise.
    expect(reg.url).toBe('https://push.example.com')
    const other = await runCommand(['appservice-registration', '--url', 'http://10.0.0.5:8080/'], { MATRIX_SERVER_NAME: 'example.org', PROXY_URL: 'https://push.example.com' })
    expect((Bun.YAML.parse(other.stdout) as Registration).url).toBe('http://10.0.0.5:8080')
    const bad = await runCommand(['appservice-registration', '--url', 'ftp://x'], { MATRIX_SERVER_NAME: 'example.org' })
    expect(bad.exitCode).toBe(2)
  })

  test('-o writes the registration with mode 0600, prints the env lines, and never overwrites a file', async () => {
    const file = join(dir, 'registration.yaml')
    const r = await runCommand([
      'appservice-registration', '--server-name', 'example.org', '-o', file, '--id', 'push', '--sender-localpart', 'pushbot',
      '--homeserver-url', 'https://matrix.example.org', '--proxy-url', 'https://push.example.org',
    ])
    expect(r.exitCode).toBe(0)
    expect(statSync(file).mode & 0o777).toBe(0o600)
    const reg = Bun.YAML.parse(readFileSync(file, 'utf8')) as Registration
    expect(reg.id).toBe('push')
    expect(reg.sender_localpart).toBe('pushbot')
    expect(r.stdout).toContain(`MATRIX_AS_TOKEN=${reg.as_token}\n`)
    expect(r.stdout).not.toContain('#')

    const existing = join(dir, 'existing.yaml')
    writeFileSync(existing, 'as_token: keep-me\n')
    const again = await runCommand(['appservice-registration', '--server-name', 'example.org', '-o', existing])
    expect(again.exitCode).toBe(1)
    expect(readFileSync(existing, 'utf8')).toBe('as_token: keep-me\n')
  })

  test('-o without the URLs writes them commented out: an unedited env file fails `check` naming what to fill in', async () => {
    const file = join(dir, 'unedited.yaml')
    const envFile = join(dir, 'unedited.env')
    const r = await runCommand(['appservice-registration', '--server-name', 'example.org', '-o', file])
    expect(r.exitCode).toBe(0)
    writeFileSync(envFile, r.stdout)
    expect(r.stdout).toContain('# FILL IN MATRIX_HOMESERVER_URL: ')
    expect(r.stdout).toContain('\n# MATRIX_HOMESERVER_URL=https://matrix.example.org\n')
    expect(r.stdout).toContain('# FILL IN PROXY_URL: ')
    expect(r.stdout).toContain('\n# PROXY_URL=https://push.example.org\n')
    // As step 3 of the README loads it, without a single edit.
    const check = Bun.spawn(['sh', '-c', `set -a; . "${envFile}"; set +a; exec "$0" check`, binaryPath()], {
      env: { PATH: process.env.PATH ?? '', PUSH_TOKEN_DB_PATH: join(dir, 'unedited.db') },
      stdout: 'pipe',
      stderr: 'pipe',
    })
    const [out, code] = await Promise.all([new Response(check.stdout).text(), check.exited])
    expect(code).toBe(2)
    expect(out).toContain('FAIL  MATRIX_HOMESERVER_URL is not set')
    expect(out).toContain('FAIL  PROXY_URL is not set')
    expect(out).not.toContain('FAIL  MATRIX_AS_TOKEN')
  })

  test('--homeserver-url and --proxy-url are checked like the variables they fill in', async () => {
    const r = await runCommand(['appservice-registration', '--proxy-url', 'https://push.example.org/some/path', '--homeserver-url', 'https://matrix.example.com'])
    expect(r.exitCode).toBe(2)
    expect(r.stderr).toContain('PROXY_URL: "https://push.example.org/some/path" has the path /some/path')
    expect(r.stdout).toBe('')
    const good = await runCommand(['appservice-registration', '--homeserver-url', 'https://matrix.example.com', '--proxy-url', 'https://push.example.com'])
    expect(good.exitCode).toBe(0)
    expect(good.stdout).toContain('# MATRIX_SERVER_NAME=matrix.example.com\n')
    expect(good.stdout).toContain('# PROXY_URL=https://push.example.com\n')
    expect(good.stdout).not.toContain('FILL IN')
  })

  test('without any server name, or with a bad one, exits 2 saying what to set', async () => {
    const none = await runCommand(['appservice-registration'])
    expect(none.exitCode).toBe(2)
    expect(none.stderr).toContain('--server-name')
    expect(none.stdout).toBe('')
    const bad = await runCommand(['appservice-registration', '--server-name', 'bad name'])
    expect(bad.exitCode).toBe(2)
    const badLocalpart = await runCommand(['appservice-registration', '--server-name', 'example.org', '--sender-localpart', 'Bot!'])
    expect(badLocalpart.exitCode).toBe(2)
  })
})

describe('the command line', () => {
  test('--help lists every command with one line each; a command answers --help with its usage', async () => {
    const help = await runCommand(['--help'])
    expect(help.exitCode).toBe(0)
    for (const command of ['serve', 'check', 'appservice-registration', 'tokens list', 'tokens show <selector>', 'tokens delete <selector>', 'pushers sync']) {
      expect(help.stdout.split('\n').filter((l) => l.startsWith(`  ${command} `))).toHaveLength(1)
    }
    for (const args of [['check', '--help'], ['tokens', 'delete', '-h'], ['pushers', 'sync', '--help'], ['appservice-registration', '-h']]) {
      const r = await runCommand(args)
      expect(r.exitCode).toBe(0)
      expect(r.stdout).toStartWith(`Usage: matrix2acrobits ${args[0]}`)
    }
    // A group's --help: the usage of each of its commands, not the whole help.
    const tokens = await runCommand(['tokens', '--help'])
    expect(tokens.exitCode).toBe(0)
    expect(tokens.stdout.split('\n').filter((l) => l.startsWith('Usage: '))).toEqual([
      'Usage: matrix2acrobits tokens list [--json]',
      'Usage: matrix2acrobits tokens show <selector> [--json]',
      'Usage: matrix2acrobits tokens delete <selector>',
    ])
    expect((await runCommand(['migrate-db', '--help'])).stdout).toContain('message index and the send outbox')
  })

  test('--version (-v) prints the package version, alone and after any command, and changes nothing', async () => {
    const pkg = (await Bun.file(join(import.meta.dir, '../../package.json')).json()) as { version: string }
    for (const args of [['--version'], ['-v'], ['check', '--version'], ['tokens', 'list', '--version'], ['pushers', 'sync', '-v'], ['push-test', '--version'], ['migrate-db', '--version'], ['appservice-registration', '--version']]) {
      const r = await runCommand(args)
      expect({ args, exitCode: r.exitCode, out: r.stdout.trim() }).toEqual({ args, exitCode: 0, out: `matrix2acrobits ${pkg.version}` })
    }
  })

  test('usage errors exit 2: unknown command, missing or extra argument, unknown option', async () => {
    for (const args of [['frobnicate'], ['tokens'], ['tokens', 'show'], ['tokens', 'list', 'extra'], ['pushers', 'flush'], ['check', '--bogus']]) {
      const r = await runCommand(args)
      expect({ args, exitCode: r.exitCode }).toEqual({ args, exitCode: 2 })
      expect(r.stderr).toContain('Try --help.')
    }
  })
})
