/**
 * Builds the single executable.
 *   bun scripts/build.ts            -> dist/matrix2acrobits for this machine
 *   bun scripts/build.ts --release  -> dist/release/matrix2acrobits-<version>-<target> for every
 *                                      release target, plus SHA256SUMS
 * No --minify: identifier renaming breaks Elysia's handler analysis. The binary does not read
 * .env or bunfig.toml from its working directory: under systemd, configuration comes from
 * EnvironmentFile=, and a stray file in the working directory must not change behaviour.
 */
import { createHash } from 'node:crypto'
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { basename, join } from 'node:path'
import { parseArgs } from 'node:util'
import pkg from '../package.json' with { type: 'json' }

export const RELEASE_TARGETS = ['bun-linux-x64', 'bun-linux-x64-baseline', 'bun-linux-arm64'] as const

const root = join(import.meta.dir, '..')

export function buildExecutable(outfile: string, target?: string) {
  const args = [
    'build',
    join(root, 'src/main.ts'),
    '--compile',
    '--minify-whitespace',
    '--minify-syntax',
    '--sourcemap',
    '--no-compile-autoload-dotenv',
    '--no-compile-autoload-bunfig',
    '--outfile',
    outfile,
  ]
  if (target) args.push(`--target=${target}`)
  const result = Bun.spawnSync([process.execPath, ...args], { cwd: root, stdout: 'inherit', stderr: 'inherit' })
  if (result.exitCode !== 0) throw new Error(`bun build failed for ${target ?? 'this machine'} (exit ${result.exitCode})`)
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Bun.argv.slice(2), options: { release: { type: 'boolean' } } })
  if (!values.release) {
    buildExecutable(join(root, 'dist/matrix2acrobits'))
  } else {
    const dir = join(root, 'dist/release')
    rmSync(dir, { recursive: true, force: true })
    mkdirSync(dir, { recursive: true })
    const sums: string[] = []
    for (const target of RELEASE_TARGETS) {
      const file = join(dir, `matrix2acrobits-${pkg.version}-${target.replace(/^bun-/, '')}`)
      buildExecutable(file, target)
      sums.push(`${createHash('sha256').update(readFileSync(file)).digest('hex')}  ${basename(file)}`)
    }
    writeFileSync(join(dir, 'SHA256SUMS'), sums.join('\n') + '\n')
    console.log(sums.join('\n'))
  }
}
