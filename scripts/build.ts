/**
 * Builds the single executable.
 *   bun scripts/build.ts            -> dist/matrix2acrobits for this machine
 *   bun scripts/build.ts --release  -> dist/release/: matrix2acrobits-<version>-<target> for every
 *                                      release target, matrix2acrobits.service (the systemd unit),
 *                                      and SHA256SUMS of them all
 *   --out-dir DIR                      build there instead of dist/ (dist/release/)
 * Every executable this machine can run is smoke-run (`--version` must answer the package version):
 * `bun build` has been seen to print a failure and still exit 0. The version is baked in from
 * package.json at build time.
 * No --minify: identifier renaming breaks Elysia's handler analysis. --sourcemap embeds the source
 * map in the executable (stack traces name src/ files and lines); the .map file bun also writes
 * beside it is not needed and is removed. The binary does not read .env or bunfig.toml from its
 * working directory: under systemd, configuration comes from EnvironmentFile=, and a stray file in
 * the working directory must not change behaviour.
 */
import { createHash } from 'node:crypto'
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { basename, dirname, join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import pkg from '../package.json' with { type: 'json' }

export const RELEASE_TARGETS = ['bun-linux-x64', 'bun-linux-x64-baseline', 'bun-linux-arm64'] as const

const root = join(import.meta.dir, '..')

/**
 * `entry` (relative to the checkout, or absolute) is the service by default; the benchmark's
 * baselines, and an earlier commit it compares with, are built with the same flags.
 */
export function buildExecutable(outfile: string, target?: string, entry = 'src/main.ts') {
  outfile = resolve(outfile)
  mkdirSync(dirname(outfile), { recursive: true })
  const args = [
    'build',
    resolve(root, entry),
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
  // Run in the output's folder: bun writes its work file (.<hash>.bun-build) in the working
  // directory, and a build that is killed leaves it behind; never in the checkout, then.
  const result = Bun.spawnSync([process.execPath, ...args], { cwd: dirname(outfile), stdout: 'inherit', stderr: 'inherit' })
  if (result.exitCode !== 0) throw new Error(`bun build failed for ${target ?? 'this machine'} (exit ${result.exitCode})`)
  rmSync(`${outfile}.map`, { force: true })
}

export const UNIT_FILE = 'matrix2acrobits.service'

/**
 * A release in `dir`: one executable per target, the systemd unit, and SHA256SUMS over them all.
 * Returns the names of the files, SHA256SUMS last.
 */
export function buildRelease(dir: string, targets: readonly string[] = RELEASE_TARGETS): string[] {
  mkdirSync(dir, { recursive: true })
  const names: string[] = []
  for (const target of targets) {
    const file = join(dir, `matrix2acrobits-${pkg.version}-${target.replace(/^bun-/, '')}`)
    buildExecutable(file, target)
    if (canRun(target)) console.log(`${basename(file)}: ${smokeRun(file)}`)
    names.push(basename(file))
  }
  copyFileSync(join(root, 'scripts', UNIT_FILE), join(dir, UNIT_FILE))
  names.push(UNIT_FILE)
  const sums = names.map((name) => `${createHash('sha256').update(readFileSync(join(dir, name))).digest('hex')}  ${name}`)
  writeFileSync(join(dir, 'SHA256SUMS'), sums.join('\n') + '\n')
  console.log(sums.join('\n'))
  return [...names, 'SHA256SUMS']
}

/** Whether this machine runs executables of `target` (x64-baseline runs on any x64). */
export function canRun(target: string | undefined): boolean {
  if (target === undefined) return true
  const arch = /-(x64|arm64|aarch64)(-|$)/.exec(target)?.[1]
  return process.platform === 'linux' && !target.includes('musl') && (arch === process.arch || (arch === 'aarch64' && process.arch === 'arm64'))
}

/** Runs `<file> --version` and throws unless it answers this package's version. */
export function smokeRun(file: string) {
  const result = Bun.spawnSync([file, '--version'], { env: { PATH: process.env.PATH ?? '' }, stdout: 'pipe', stderr: 'pipe' })
  const answer = result.stdout.toString().trim()
  if (result.exitCode !== 0 || answer !== `matrix2acrobits ${pkg.version}`) {
    throw new Error(`smoke run of ${file} failed (exit ${result.exitCode}): ${answer} ${result.stderr.toString().trim()}`)
  }
  return answer
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Bun.argv.slice(2), options: { release: { type: 'boolean' }, 'out-dir': { type: 'string' } } })
  const outDir = values['out-dir'] ? resolve(values['out-dir']) : join(root, 'dist')
  if (!values.release) {
    const file = join(outDir, 'matrix2acrobits')
    buildExecutable(file)
    console.log(`${file}: ${smokeRun(file)}`)
  } else {
    const dir = values['out-dir'] ? outDir : join(outDir, 'release')
    // dist/release is ours to empty (no stale version's files in SHA256SUMS' company); a folder
    // given with --out-dir is not.
    if (!values['out-dir']) rmSync(dir, { recursive: true, force: true })
    buildRelease(dir)
    console.log(`release files in ${dir}`)
  }
}
