/**
 * Sends one request to the Acrobits PNM with fetch and a timeout, and caps how many are in flight
 * so that a PNM that stops answering cannot make the proxy queue without bound.
 */
import type { FetchFn } from '../matrix/client.ts'
import type { PnmAnswer } from './outcome.ts'
import type { PnmRequest } from '../gateway/translate.ts'

/** Answers are a few hundred bytes; a larger one is garbage and is not read further. */
const MAX_ANSWER_BYTES = 64 * 1024

export interface PnmClient {
  /** undefined when PNM_MAX_INFLIGHT requests are already in flight. */
  send(request: PnmRequest, timeoutMs: number): Promise<PnmAnswer> | undefined
  inflight(): number
}

async function readCapped(response: Response): Promise<string> {
  // A declared length within the cap (the usual answer): one read, without a stream reader. Bun
  // never hands over more than a declared Content-Length.
  const declared = Number(response.headers.get('content-length') ?? NaN)
  if (declared >= 0 && declared <= MAX_ANSWER_BYTES && !response.headers.has('transfer-encoding')) return response.text()
  const reader = response.body?.getReader()
  if (!reader) return ''
  const chunks: Uint8Array[] = []
  let size = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    chunks.push(value)
    size += value.byteLength
    if (size > MAX_ANSWER_BYTES) {
      await reader.cancel()
      break
    }
  }
  return Buffer.concat(chunks).toString('utf8', 0, Math.min(size, MAX_ANSWER_BYTES))
}

export function createPnmClient(options: { url: string; maxInflight: number; fetch?: FetchFn }): PnmClient {
  const doFetch = options.fetch ?? fetch
  let inflight = 0

  async function send(request: PnmRequest, timeoutMs: number): Promise<PnmAnswer> {
    // What AbortSignal.timeout does, but the timer goes as soon as the answer is read: a timeout
    // signal lives out its full delay, and at thousands of requests per second the idle ones held
    // megabytes (scripts/bench.ts).
    const controller = new AbortController()
    const { signal } = controller
    const timer = setTimeout(() => controller.abort(new DOMException('The operation timed out.', 'TimeoutError')), timeoutMs)
    timer.unref()
    try {
      const response = await doFetch(options.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body: JSON.stringify(request),
        signal,
        redirect: 'manual',
      })
      return { kind: 'answer', status: response.status, body: await readCapped(response) }
    } catch (e) {
      const err = e as Error
      if (signal.aborted) return { kind: 'timeout', afterMs: timeoutMs }
      return { kind: 'network', message: err.message }
    } finally {
      clearTimeout(timer)
      inflight--
    }
  }

  return {
    send(request, timeoutMs) {
      if (inflight >= options.maxInflight) return undefined
      inflight++
      return send(request, timeoutMs)
    },
    inflight: () => inflight,
  }
}
