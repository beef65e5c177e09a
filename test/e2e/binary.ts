/**
 * Builds the executable once per test process, into a temporary folder (so parallel test runs and
 * `npm run build` never overwrite each other's file), and runs it as an operator would.
 */
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { buildExecutable } from '../../scripts/build.ts'
import { startFakePnm, type FakePnm } from '../fakes/pnm.ts'
import { startFakeSynapse, type FakeSynapse, type FakeSynapseOptions } from '../fakes/synapse.ts'
import { tempDir } from '../harness.ts'

let built: string | undefined

export function binaryPath(): string {
  if (!built) {
    const dir = tempDir('m2a-bin-')
    // The executable is shared by every test file of the process; it goes when the process ends.
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }))
    const file = join(dir, 'matrix2acrobits')
    buildExecutable(file)
    built = file
  }
  return built
}

/** Runs a one-shot command of the executable and collects its output. */
export function runBinary(args: string[], env: Record<string, string> = {}, cwd?: string) {
  const result = Bun.spawnSync([binaryPath(), ...args], { env: { PATH: process.env.PATH ?? '', ...env }, cwd, stdout: 'pipe', stderr: 'pipe' })
  return { exitCode: result.exitCode, stdout: result.stdout.toString(), stderr: result.stderr.toString() }
}

export interface RunningBinary {
  url: string
  port: number
  proc: ReturnType<typeof Bun.spawn>
  lines: string[]
  /** Sends SIGTERM and waits for the exit code. */
  stop(signal?: NodeJS.Signals | number): Promise<number>
}

/**
 * Starts `serve` on a free port and resolves once it says it listens. `command` runs the executable
 * some other way (as another user, say).
 */
export async function startBinary(env: Record<string, string>, cwd?: string, command: string[] = [binaryPath()]): Promise<RunningBinary> {
  const proc = Bun.spawn(command, {
    env: { PATH: process.env.PATH ?? '', PROXY_HOST: '127.0.0.1', PROXY_PORT: '0', ...env },
    cwd,
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const lines: string[] = []
  let port: number | undefined
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder()
    let rest = ''
    for await (const chunk of stream) {
      rest += decoder.decode(chunk, { stream: true })
      const parts = rest.split('\n')
      rest = parts.pop()!
      for (const line of parts) {
        lines.push(line)
        const m = /"msg":"matrix2acrobits listening"/.test(line) ? /"port":(\d+)/.exec(line) : null
        if (m) port = Number(m[1])
      }
    }
  }
  void pump(proc.stdout)
  void pump(proc.stderr)
  const end = Date.now() + 15_000
  while (port === undefined) {
    if (proc.exitCode !== null) throw new Error(`binary exited with ${proc.exitCode}:\n${lines.join('\n')}`)
    if (Date.now() > end) throw new Error(`binary did not start:\n${lines.join('\n')}`)
    await Bun.sleep(10)
  }
  const url = `http://127.0.0.1:${port}`
  return {
    url,
    port,
    proc,
    lines,
    async stop(signal = 'SIGTERM') {
      proc.kill(signal)
      return proc.exited
    },
  }
}

/** What a test file runs its executables against: a fake Synapse, a fake PNM, a state folder. */
export interface ExecutableFakes {
  synapse: FakeSynapse
  pnm: FakePnm
  dir: string
}

/** Builds the executable (if not yet) and starts the fakes; for a file's beforeAll. */
export function startExecutableFakes(synapse: FakeSynapseOptions = {}, prefix?: string): ExecutableFakes {
  binaryPath()
  return { synapse: startFakeSynapse(synapse), pnm: startFakePnm(), dir: tempDir(prefix) }
}

/** Kills what is still running, waits for it to go, stops the fakes and removes the folder; for afterAll. */
export async function stopExecutableFakes(fakes: ExecutableFakes, running: readonly RunningBinary[]) {
  for (const b of running) if (b.proc.exitCode === null) b.proc.kill('SIGKILL')
  fakes.synapse.stop()
  fakes.pnm.stop()
  await Promise.all(running.map((b) => b.proc.exited))
  rmSync(fakes.dir, { recursive: true, force: true })
}
