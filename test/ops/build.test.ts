/**
 * scripts/build.ts: the executable ignores .env and bunfig.toml in its working directory; a
 * release holds the executables, the systemd unit and a SHA256SUMS that matches them, and no .map
 * file (the source map is inside the executable). With M2A_TEST_RELEASE=1 (cross-compiling
 * downloads each target's runtime) the README's `npm run build -- --release` makes all three targets.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { createHash } from 'node:crypto'
import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { buildRelease, canRun, RELEASE_TARGETS } from '../../scripts/build.ts'
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

  test('the checkout has the MIT LICENSE package.json names, and a CHANGELOG with a section for this version', () => {
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string; license: string }
    expect(pkg.license).toBe('MIT')
    const license = readFileSync(join(root, 'LICENSE'), 'utf8')
    expect(license).toStartWith('MIT License\n')
    expect(license).toContain('THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND')
    expect(readFileSync(join(root, 'CHANGELOG.md'), 'utf8')).toMatch(new RegExp(`^## ${pkg.version.replaceAll('.', '\\.')} `, 'm'))
  })

  test('knows which targets this machine can smoke-run', () => {
    expect(canRun(undefined)).toBe(true)
    const native = process.arch === 'arm64' ? 'bun-linux-arm64' : 'bun-linux-x64'
    expect(canRun(native)).toBe(process.platform === 'linux')
    expect(canRun(process.arch === 'arm64' ? 'bun-linux-x64' : 'bun-linux-arm64')).toBe(false)
    expect(canRun('bun-linux-x64-musl')).toBe(false)
  })

  test('a release holds the executable, the systemd unit and their SHA256SUMS, and no .map file', () => {
    const out = join(dir, 'native-release')
    const native = process.arch === 'arm64' ? 'bun-linux-arm64' : 'bun-linux-x64'
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }
    const binary = `matrix2acrobits-${pkg.version}-${native.replace(/^bun-/, '')}`
    expect(buildRelease(out, [native])).toEqual([binary, 'matrix2acrobits.service', 'SHA256SUMS'])
    expect(readdirSync(out).sort()).toEqual([binary, 'SHA256SUMS', 'matrix2acrobits.service'].sort())
    expect(readFileSync(join(out, 'matrix2acrobits.service'), 'utf8')).toBe(readFileSync(join(root, 'scripts/matrix2acrobits.service'), 'utf8'))
    // The README's first install command, as an operator runs it in the release folder.
    const check = Bun.spawnSync(['sha256sum', '--check', '--ignore-missing', 'SHA256SUMS'], { cwd: out, stdout: 'pipe', stderr: 'pipe' })
    expect(check.stdout.toString()).toBe(`${binary}: OK\nmatrix2acrobits.service: OK\n`)
    expect(check.exitCode).toBe(0)
    rmSync(out, { recursive: true, force: true })
  }, 120_000)

  test.skipIf(process.env.M2A_TEST_RELEASE !== '1' || Bun.which('npm') === null)(
    '`npm run build -- --release` builds linux-x64, linux-x64-baseline and linux-arm64 with a matching SHA256SUMS',
    () => {
      const out = join(dir, 'release')
      const result = Bun.spawnSync(['npm', 'run', 'build', '--', '--release', '--out-dir', out], { cwd: root, stdout: 'pipe', stderr: 'pipe' })
      expect(result.exitCode).toBe(0)
      const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }
      const names = RELEASE_TARGETS.map((t) => `matrix2acrobits-${pkg.version}-${t.replace(/^bun-/, '')}`)
      expect(names.map((n) => n.replace(/^matrix2acrobits-[^-]+-/, ''))).toEqual(['linux-x64', 'linux-x64-baseline', 'linux-arm64'])
      const sums = readFileSync(join(out, 'SHA256SUMS'), 'utf8').trim().split('\n')
      expect(sums).toHaveLength(4)
      expect(readdirSync(out).filter((n) => n.endsWith('.map'))).toEqual([])
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
