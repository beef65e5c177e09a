/**
 * scripts/build.ts: the executable ignores .env and bunfig.toml in its working directory, and
 * (with M2A_TEST_RELEASE=1, since cross-compiling downloads each target's runtime) the release
 * build makes the three targets and a SHA256SUMS that matches them.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { createHash } from 'node:crypto'
import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { canRun, RELEASE_TARGETS } from '../../scripts/build.ts'
import { tempDir } from '../harness.ts'
import { runCommand } from '../cli/run.ts'

const root = join(import.meta.dir, '../..')
const dir = tempDir('m2a-build-')
afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe('the build', () => {
  test('the executable does not read .env or bunfig.toml from its working directory', async () => {
    writeFileSync(join(dir, '.env'), 'MATRIX_SERVER_NAME=from-dotenv.example\n')
    writeFileSync(join(dir, 'bunfig.toml'), 'preload = ["./nope.ts"]\n')
    const r = await runCommand(['appservice-registration'], {}, dir)
    expect(r.exitCode).toBe(2)
    expect(r.stdout).not.toContain('from-dotenv')
  })

  test('knows which targets this machine can smoke-run', () => {
    expect(canRun(undefined)).toBe(true)
    const native = process.arch === 'arm64' ? 'bun-linux-arm64' : 'bun-linux-x64'
    expect(canRun(native)).toBe(process.platform === 'linux')
    expect(canRun(process.arch === 'arm64' ? 'bun-linux-x64' : 'bun-linux-arm64')).toBe(false)
    expect(canRun('bun-linux-x64-musl')).toBe(false)
  })

  test.skipIf(process.env.M2A_TEST_RELEASE !== '1')(
    '--release builds linux-x64, linux-x64-baseline and linux-arm64 with a matching SHA256SUMS',
    () => {
      const out = join(dir, 'release')
      const result = Bun.spawnSync([process.execPath, join(root, 'scripts/build.ts'), '--release', '--out-dir', out], { cwd: root, stdout: 'pipe', stderr: 'pipe' })
      expect(result.exitCode).toBe(0)
      const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }
      const names = RELEASE_TARGETS.map((t) => `matrix2acrobits-${pkg.version}-${t.replace(/^bun-/, '')}`)
      expect(names.map((n) => n.replace(/^matrix2acrobits-[^-]+-/, ''))).toEqual(['linux-x64', 'linux-x64-baseline', 'linux-arm64'])
      const sums = readFileSync(join(out, 'SHA256SUMS'), 'utf8').trim().split('\n')
      expect(sums).toHaveLength(3)
      for (const [i, name] of names.entries()) {
        const bytes = readFileSync(join(out, name))
        expect(sums[i]).toBe(`${createHash('sha256').update(bytes).digest('hex')}  ${name}`)
        // ELF e_machine: 0x3e x86-64, 0xb7 aarch64.
        expect(bytes.readUInt16LE(18)).toBe(name.includes('arm64') ? 0xb7 : 0x3e)
      }
      expect(readdirSync(out)).toContain('SHA256SUMS')
      // Each runnable one was smoke-run by the build itself.
      expect(result.stdout.toString()).toContain(`${names[0]}: matrix2acrobits ${pkg.version}`)
    },
    120_000,
  )
})
