/**
 * scripts/matrix2acrobits.service: the directives the issue asks for, no MemoryDenyWriteExecute
 * (Bun's JIT needs writable-then-executable memory), and `systemd-analyze verify` without a
 * warning where the tool exists (skipped elsewhere).
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { binaryPath } from '../e2e/binary.ts'
import { tempDir } from '../harness.ts'

const UNIT = join(import.meta.dir, '../../scripts/matrix2acrobits.service')
const text = readFileSync(UNIT, 'utf8')
const analyze = Bun.which('systemd-analyze')
const dir = tempDir('m2a-unit-')
afterAll(() => rmSync(dir, { recursive: true, force: true }))

/** `Key=value` settings of the [Service] section, in order (a key may repeat). */
function settings(section: string): [string, string][] {
  const body = text.split(/^\[/m).find((s) => s.startsWith(`${section}]`)) ?? ''
  return body
    .split('\n')
    .slice(1)
    .filter((l) => /^[A-Za-z]+=/.test(l))
    .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as [string, string])
}

/** The unit with ExecStart pointing at a binary that exists here (verify checks that it does). */
function unitFor(binary: string) {
  const file = join(dir, 'matrix2acrobits.service')
  writeFileSync(file, text.replace('ExecStart=/usr/local/bin/matrix2acrobits ', `ExecStart=${binary} `))
  return file
}

describe('the systemd unit', () => {
  test('runs the service the way the issue asks', () => {
    const service = new Map(settings('Service'))
    expect(service.get('Type')).toBe('exec')
    expect(service.get('DynamicUser')).toBe('yes')
    expect(service.get('StateDirectory')).toBe('matrix2acrobits')
    expect(service.get('EnvironmentFile')).toBeTruthy()
    expect(service.get('Restart')).toBe('on-failure')
    expect(service.get('ExecStart')).toBe('/usr/local/bin/matrix2acrobits serve')
    for (const key of ['NoNewPrivileges', 'ProtectSystem', 'ProtectHome', 'PrivateTmp', 'PrivateDevices', 'RestrictAddressFamilies', 'SystemCallFilter', 'CapabilityBoundingSet']) {
      expect(service.has(key)).toBe(true)
    }
    // Only in the explanatory comment, never as a setting.
    expect(service.has('MemoryDenyWriteExecute')).toBe(false)
    expect(new Map(settings('Install')).get('WantedBy')).toBe('multi-user.target')
  })

  test.skipIf(!analyze)('systemd-analyze verify accepts it without a warning', () => {
    const result = Bun.spawnSync([analyze!, 'verify', unitFor(binaryPath())], { stdout: 'pipe', stderr: 'pipe' })
    expect(result.stderr.toString()).toBe('')
    expect(result.exitCode).toBe(0)
  })

  test.skipIf(!analyze)('the check notices a misspelt directive (so the pass above means something)', () => {
    const file = unitFor(binaryPath())
    writeFileSync(file, readFileSync(file, 'utf8').replace('Restart=on-failure', 'Restrat=on-failure'))
    const result = Bun.spawnSync([analyze!, 'verify', file], { stdout: 'pipe', stderr: 'pipe' })
    expect(result.stderr.toString()).toContain('Restrat')
  })

  test.skipIf(!analyze)('systemd-analyze security rates its exposure low', () => {
    const probe = Bun.spawnSync([analyze!, 'security', '--help'], { stdout: 'pipe', stderr: 'pipe' })
    if (!probe.stdout.toString().includes('--offline')) return // systemd < 250 cannot rate a unit file
    const result = Bun.spawnSync([analyze!, 'security', '--offline=yes', '--threshold=20', unitFor(binaryPath())], { stdout: 'pipe', stderr: 'pipe' })
    expect(result.exitCode).toBe(0)
    const level = /Overall exposure level for \S+: (\d+\.\d+)/.exec(result.stdout.toString())
    expect(Number(level?.[1])).toBeLessThanOrEqual(2)
  })
})
