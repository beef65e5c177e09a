/**
 * Log lines leave in one write per turn of the event loop, and none is lost when the process
 * exits: on the executable, the fatal line written just before exit(1) is on stdout.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { writtenPerTurn } from '../../src/log.ts'
import { binaryPath } from '../e2e/binary.ts'
import { tempDir } from '../harness.ts'

const dir = tempDir('m2a-logwrite-')
afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe('log writes', () => {
  test('lines of one turn leave in one write, after the turn; the next turn makes another', async () => {
    const writes: string[] = []
    const stream = writtenPerTurn({ write: (s: string) => void writes.push(s) })
    stream.write('{"a":1}\n')
    stream.write('{"a":2}\n')
    expect(writes).toEqual([])
    await new Promise((r) => setImmediate(r))
    expect(writes).toEqual(['{"a":1}\n{"a":2}\n'])
    stream.write('{"a":3}\n')
    await new Promise((r) => setImmediate(r))
    expect(writes).toEqual(['{"a":1}\n{"a":2}\n', '{"a":3}\n'])
  })

  test('the executable writes its last line before it exits (a fatal listen error, exit 1)', async () => {
    // Held without SO_REUSEPORT, so the service cannot share it.
    const holder = Bun.serve({ hostname: '127.0.0.1', port: 0, reusePort: false, fetch: () => new Response() })
    try {
      const proc = Bun.spawn([binaryPath()], {
        env: { PATH: process.env.PATH ?? '', PROXY_HOST: '127.0.0.1', PROXY_PORT: String(holder.port), PUSH_TOKEN_DB_PATH: join(dir, 'tokens.db') },
        stdout: 'pipe',
        stderr: 'pipe',
      })
      expect(await proc.exited).toBe(1)
      const lines = (await new Response(proc.stdout).text()).split('\n').filter(Boolean).map((l) => JSON.parse(l))
      expect(lines.at(-1)).toMatchObject({ level: 'fatal' })
    } finally {
      holder.stop(true)
    }
  })
})
