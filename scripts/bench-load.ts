/**
 * The load generator of the benchmark, run on Node (autocannon is a Node tool): scripts/bench.ts
 * bundles this file with `bun build --target=node` and runs it once per measurement.
 *
 * argv[2] is a JSON LoadSpec. Protocol on stdio, one JSON object per line:
 *   -> {"phase":"warm"}        after the warm-up; the orchestrator snapshots CPU and resets peak RSS
 *   <- any line on stdin       start measuring
 *   -> {"phase":"result",...}  the measurement (LoadResult), then exit
 * Every request carries a new event ID (the proxy drops a (event, pushkey) it delivered in the last
 * hour, so repeating one would measure the duplicate path) and a stored token picked at random.
 */
import { createRequire } from 'node:module'
import { createInterface } from 'node:readline'
import { eventIdFor, eventIdOnlyNotifyBody, fullNotifyBody, randomIndexes, reportBody, tokenFor } from './bench-data.ts'

export type LoadKind = 'notify-full' | 'notify-event-id-only' | 'report'

export interface LoadSpec {
  /** Folder holding node_modules/autocannon (the project root). */
  root: string
  url: string
  path: string
  kind: LoadKind
  connections: number
  warmupSeconds: number
  seconds: number
  /** When set, the measurement sends exactly this many requests instead of running `seconds`. */
  amount?: number
  /** Tokens 0..tokens-1 are stored; notifications pick among them. */
  tokens: number
  /** Makes event IDs, report selectors and the random sequence distinct per run. */
  tag: string
  seed: number
  expectBody: string
}

export interface LoadResult {
  phase: 'result'
  ok: number
  non2xx: number
  errors: number
  timeouts: number
  mismatches: number
  elapsedMs: number
  perSecond: number
  latencyMs: { p50: number; p90: number; p99: number; max: number; mean: number }
}

interface AutocannonResponseListener {
  on(event: 'response', fn: (client: unknown, status: number, bytes: number, ms: number) => void): void
}
type Autocannon = (opts: Record<string, unknown>, done: (err: Error | null, result: Record<string, number>) => void) => AutocannonResponseListener

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!
}

async function main() {
  const spec = JSON.parse(process.argv[2]!) as LoadSpec
  const autocannon = createRequire(`${spec.root}/package.json`)('autocannon') as Autocannon
  const pick = randomIndexes(spec.seed, spec.tokens)
  let n = 0
  let mismatches = 0
  const body = (): string => {
    n++
    if (spec.kind === 'report') return reportBody(spec.tag, n)
    const eventId = eventIdFor(spec.tag, n)
    const pushkey = tokenFor(pick())
    return spec.kind === 'notify-full' ? fullNotifyBody(eventId, pushkey) : eventIdOnlyNotifyBody(eventId, pushkey)
  }

  const run = (seconds: number, latencies?: number[], amount?: number) =>
    new Promise<{ result: Record<string, number>; elapsedMs: number }>((resolve, reject) => {
      const started = performance.now()
      const instance = autocannon(
        {
          url: spec.url,
          connections: spec.connections,
          pipelining: 1,
          ...(amount === undefined ? { duration: seconds } : { amount }),
          timeout: 30,
          requests: [
            {
              method: 'POST',
              path: spec.path,
              headers: { 'content-type': 'application/json', 'user-agent': 'Synapse/1.157.0' },
              setupRequest: (req: Record<string, unknown>) => ({ ...req, body: body() }),
              // autocannon refuses `expectBody` with `requests`: the answer is checked here.
              onResponse: (status: number, answer: unknown) => {
                if (status >= 200 && status < 300 && String(answer) !== spec.expectBody) {
                  mismatches++
                  if (mismatches === 1) process.stderr.write(`unexpected answer: ${String(answer).slice(0, 300)}\n`)
                }
              },
            },
          ],
        },
        (err, result) => (err ? reject(err) : resolve({ result, elapsedMs: performance.now() - started })),
      )
      if (latencies) {
        instance.on('response', (_client, status, _bytes, ms) => {
          if (status >= 200 && status < 300) latencies.push(ms)
        })
      }
    })

  if (spec.warmupSeconds > 0) await run(spec.warmupSeconds)
  process.stdout.write(JSON.stringify({ phase: 'warm' }) + '\n')
  const lines = createInterface({ input: process.stdin })
  await new Promise<void>((resolve) => lines.once('line', () => resolve()))
  lines.close()

  const latencies: number[] = []
  mismatches = 0
  const { result, elapsedMs } = await run(spec.seconds, latencies, spec.amount)
  const sorted = Float64Array.from(latencies).sort()
  const ok = result['2xx'] ?? 0
  const out: LoadResult = {
    phase: 'result',
    ok,
    non2xx: result.non2xx ?? 0,
    errors: result.errors ?? 0,
    timeouts: result.timeouts ?? 0,
    mismatches,
    elapsedMs,
    perSecond: ok / (elapsedMs / 1000),
    latencyMs: {
      p50: percentile(sorted, 50),
      p90: percentile(sorted, 90),
      p99: percentile(sorted, 99),
      max: sorted.length ? sorted[sorted.length - 1]! : NaN,
      mean: sorted.reduce((a, b) => a + b, 0) / (sorted.length || 1),
    },
  }
  process.stdout.write(JSON.stringify(out) + '\n')
  process.exit(0)
}

if (process.argv[2]) void main()
