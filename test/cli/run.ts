/**
 * Runs a one-shot command of the built executable without blocking this process: the fakes the
 * command talks to (Synapse, PNM) are served from this very process, so runBinary's spawnSync
 * would deadlock them.
 */
import { binaryPath } from '../e2e/binary.ts'

export interface CommandResult {
  exitCode: number
  stdout: string
  stderr: string
}

/**
 * `command` runs the executable some other way (as another user, say). A command that is expected
 * to exit but does not is killed after `timeoutMs`, so that a regression fails instead of hanging.
 */
export async function runCommand(
  args: string[],
  env: Record<string, string> = {},
  cwd?: string,
  options: { command?: string[]; timeoutMs?: number } = {},
): Promise<CommandResult> {
  const proc = Bun.spawn([...(options.command ?? [binaryPath()]), ...args], {
    env: { PATH: process.env.PATH ?? '', ...env },
    cwd,
    stdout: 'pipe',
    stderr: 'pipe',
    timeout: options.timeoutMs ?? 20_000,
    killSignal: 'SIGKILL',
  })
  const [stdout, stderr, exitCode] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited])
  return { exitCode, stdout, stderr }
}
