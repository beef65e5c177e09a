/**
 * The README's commands, run as an operator copies them: install step 2 (twice: it must be safe
 * to repeat) and the curl examples against the executable, a fake Synapse and a fake PNM, each
 * answer compared with the one the README prints. The reverse-proxy examples are not run.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { existsSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { binaryPath, startBinary, type RunningBinary } from '../e2e/binary.ts'
import { startFakePnm } from '../fakes/pnm.ts'
import { startFakeSynapse } from '../fakes/synapse.ts'
import { tempDir } from '../harness.ts'

const README = readFileSync(join(import.meta.dir, '../../README.md'), 'utf8')
const dir = tempDir('m2a-readme-')
const running: RunningBinary[] = []
beforeAll(() => void binaryPath())
afterAll(async () => {
  for (const b of running) if (b.proc.exitCode === null) await b.stop()
  rmSync(dir, { recursive: true, force: true })
})

/** The first ```sh block after `heading`, its indentation removed. */
function shellBlock(heading: string): string {
  const from = README.indexOf(heading)
  expect(from).toBeGreaterThan(-1)
  const m = /^( *)```sh\n([\s\S]*?)^ *```$/m.exec(README.slice(from))!
  return m[2]!
    .split('\n')
    .map((l) => l.slice(m[1]!.length))
    .join('\n')
}

/** Runs a script with sh, the executable on PATH; not spawnSync: the fakes answer from this process. */
async function sh(script: string) {
  const proc = Bun.spawn(['sh', '-c', script], {
    env: { PATH: `${dirname(binaryPath())}:${process.env.PATH ?? ''}` },
    stdout: 'pipe',
    stderr: 'pipe',
    timeout: 20_000,
  })
  const [stdout, stderr, exitCode] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited])
  return { exitCode, stdout, stderr }
}

describe('README: Install in three steps', () => {
  test('step 2 writes the registration and a complete env file, and running it again changes nothing', async () => {
    const etc = join(dir, 'etc')
    mkdirSync(join(etc, 'matrix-synapse'), { recursive: true })
    const script = shellBlock('2. **Connect it to Synapse.**')
      .replaceAll('/etc/', `${etc}/`)
      // There is no matrix-synapse user here; the rest runs as written.
      .replace(/^chown .*$/m, '')
    const registration = join(etc, 'matrix-synapse/matrix2acrobits.yaml')
    const envFile = join(etc, 'matrix2acrobits/env')

    const first = await sh(script)
    expect(first.stderr).toContain(`wrote ${registration}`)
    expect(first.exitCode).toBe(0)
    const env = readFileSync(envFile, 'utf8')
    const yaml = Bun.YAML.parse(readFileSync(registration, 'utf8')) as { as_token: string; hs_token: string; url: string }
    expect(yaml.url).toBe('https://push.example.org')
    expect(env).toBe(
      [
        'MATRIX_HOMESERVER_URL=https://matrix.example.org',
        'MATRIX_SERVER_NAME=example.org',
        `MATRIX_AS_TOKEN=${yaml.as_token}`,
        `MATRIX_HS_TOKEN=${yaml.hs_token}`,
        'MATRIX_AS_ID=matrix2acrobits',
        'PROXY_URL=https://push.example.org',
        '',
      ].join('\n'),
    )
    expect(statSync(envFile).mode & 0o777).toBe(0o600)
    expect(statSync(registration).mode & 0o777).toBe(0o600)

    const again = await sh(script)
    expect(again.exitCode).not.toBe(0)
    expect(readFileSync(envFile, 'utf8')).toBe(env)
    expect((Bun.YAML.parse(readFileSync(registration, 'utf8')) as { as_token: string }).as_token).toBe(yaml.as_token)
  })
})

describe('README: Try it with curl', () => {
  test.skipIf(Bun.which('curl') === null)('every example gets the answer the README shows, and the whole path happens', async () => {
    const synapse = startFakeSynapse()
    const pnm = startFakePnm()
    try {
      const b = await startBinary({
        MATRIX_HOMESERVER_URL: synapse.url,
        MATRIX_AS_TOKEN: synapse.asToken,
        PROXY_URL: 'https://push.example.org',
        PNM_URL: pnm.url,
        PUSH_TOKEN_DB_PATH: join(dir, 'curl', 'push_tokens.db'),
      })
      running.push(b)
      const steps: Array<{ command: string; expected: string }> = []
      let command: string[] = []
      for (const line of shellBlock('### Try it with curl').split('\n')) {
        if (line.startsWith('# → ')) {
          steps.push({ command: command.join('\n'), expected: line.slice('# → '.length) })
          command = []
        } else if (line.trim()) command.push(line)
      }
      expect(steps.map((s) => /^curl \S+ (\S+)/.exec(s.command)?.[1])).toEqual([
        'http://127.0.0.1:8080/health',
        'http://127.0.0.1:8080/ready',
        'http://127.0.0.1:8080/api/client/push_token_report',
        'http://127.0.0.1:8080/_matrix/push/v1/notify',
        'http://127.0.0.1:8080/metrics',
        'http://127.0.0.1:8080/api/client/account_removal_report',
      ])
      for (const step of steps) {
        const r = await sh(step.command.replaceAll('http://127.0.0.1:8080', b.url))
        expect({ command: step.command, answer: r.stdout.trim() }).toEqual({ command: step.command, answer: step.expected })
      }
      // The report set a pusher as the user, the notify reached the PNM, the removal deleted the pusher.
      const pusherCalls = synapse.pusherCalls().map((c) => (c.body as { kind: string | null; pushkey: string }))
      expect(pusherCalls.map((c) => [c.kind, c.pushkey])).toEqual([
        ['http', 'test-device-token'],
        [null, 'test-device-token'],
      ])
      expect(pnm.requests.map((r) => [r.body.DeviceToken, r.body.Id])).toEqual([['test-device-token', '$curl-test-1']])
      expect(existsSync(join(dir, 'curl', 'push_tokens.db'))).toBe(true)
    } finally {
      synapse.stop()
      pnm.stop()
    }
  })
})
