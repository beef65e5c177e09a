/**
 * The fake Synapse's application-service sender: it queues every event the fake creates and PUTs
 * them to the proxy's `/_matrix/app/v1/transactions/{txnId}` the way Synapse does (FIELD-GUIDE §7):
 * one request in flight, what queued meanwhile goes out together (at most 100 events), txnIds from
 * an increasing decimal counter with gaps, and a failure (non-2xx, an answer that is not JSON, a
 * timeout, a connection error) resends the same txnId with the same events after a backoff.
 * Events are in client format with the legacy top-level copies Synapse adds.
 *
 * The proxy is reached by URL, or through a handler (`app.handle`) when a test runs it without a port.
 */
import type { FakeEvent } from './rooms.ts'

export type Target = { url: string } | { handle: (request: Request) => Promise<Response> }

export interface TransactionAttempt {
  txnId: string
  events: Record<string, unknown>[]
  status?: number
  /** `ok`, or why Synapse would count it as a failure. */
  outcome: 'ok' | 'status' | 'not_json' | 'timeout' | 'network'
  at: number
}

export interface SenderOptions {
  hsToken: string
  /** Synapse waits 60 s for an answer. */
  timeoutMs?: number
  /** Backoff before resending the failed transaction (Synapse: 2, 4, 8 … s). */
  retryDelayMs?: (attempt: number) => number
}

/** The client-format event of a transaction, as Synapse 1.157 sends it. */
export function transactionFormat(e: FakeEvent, now = Date.now()): Record<string, unknown> {
  const age = now - e.origin_server_ts
  const { redacted_because: _, ...unsignedRest } = e.unsigned
  const out: Record<string, unknown> = {
    type: e.type,
    room_id: e.room_id,
    sender: e.sender,
    content: e.content,
    ...(e.state_key === undefined ? {} : { state_key: e.state_key }),
    ...(e.redacts === undefined ? {} : { redacts: e.redacts }),
    origin_server_ts: e.origin_server_ts,
    unsigned: { ...unsignedRest, age },
    event_id: e.event_id,
    user_id: e.sender,
    age,
  }
  for (const legacy of ['prev_content', 'replaces_state', 'invite_room_state'] as const) {
    if (e.unsigned[legacy] !== undefined) out[legacy] = e.unsigned[legacy]
  }
  return out
}

export function createAppserviceSender(options: SenderOptions) {
  const timeoutMs = options.timeoutMs ?? 60_000
  const retryDelayMs = options.retryDelayMs ?? ((n: number) => Math.min(20 * 2 ** n, 500))
  let target: Target | undefined
  let paused = false
  let txnCounter = 100 + Math.floor(Math.random() * 50)
  const queue: FakeEvent[] = []
  let current: { txnId: string; events: Record<string, unknown>[]; failures: number } | undefined
  let sending = false
  let retryTimer: ReturnType<typeof setTimeout> | undefined
  const attempts: TransactionAttempt[] = []
  const acknowledged: Array<{ txnId: string; events: Record<string, unknown>[] }> = []
  let waiters: Array<() => void> = []
  /** Changes the answer of the next deliveries: return a Response to answer instead of the proxy. */
  let interceptor: ((txnId: string, events: Record<string, unknown>[]) => Response | Promise<Response> | undefined) | undefined

  const idle = () => queue.length === 0 && current === undefined

  function wake() {
    if (idle()) {
      const w = waiters
      waiters = []
      for (const f of w) f()
      return
    }
    if (paused || sending || retryTimer !== undefined || target === undefined) return
    if (current === undefined) {
      // Synapse's server-wide counter is shared by every appservice: ours sees it with gaps.
      txnCounter += 1 + Math.floor(Math.random() * 3)
      const batch = queue.splice(0, 100)
      const now = Date.now()
      current = { txnId: String(txnCounter), events: batch.map((e) => transactionFormat(e, now)), failures: 0 }
    }
    void attempt(current)
  }

  async function deliver(txnId: string, body: string): Promise<Response> {
    const t = target!
    const path = `/_matrix/app/v1/transactions/${txnId}`
    const init: RequestInit = {
      method: 'PUT',
      headers: { authorization: `Bearer ${options.hsToken}`, 'content-type': 'application/json' },
      body,
      signal: AbortSignal.timeout(timeoutMs),
    }
    if ('url' in t) return fetch(t.url + path, init)
    const answer = t.handle(new Request(`http://synapse-sender.invalid${path}`, init))
    let timer: ReturnType<typeof setTimeout> | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(Object.assign(new Error('timeout'), { name: 'TimeoutError' })), timeoutMs)
    })
    return Promise.race([answer, timeout]).finally(() => clearTimeout(timer))
  }

  async function attempt(txn: NonNullable<typeof current>) {
    sending = true
    const record: TransactionAttempt = { txnId: txn.txnId, events: txn.events, outcome: 'ok', at: Date.now() }
    attempts.push(record)
    try {
      const response = (await interceptor?.(txn.txnId, txn.events)) ?? (await deliver(txn.txnId, JSON.stringify({ events: txn.events })))
      record.status = response.status
      const text = await response.text()
      if (!response.ok) record.outcome = 'status'
      else {
        try {
          JSON.parse(text)
        } catch {
          record.outcome = 'not_json'
        }
      }
    } catch (e) {
      record.outcome = (e as Error).name === 'TimeoutError' ? 'timeout' : 'network'
    }
    sending = false
    if (record.outcome === 'ok') {
      acknowledged.push({ txnId: txn.txnId, events: txn.events })
      current = undefined
      wake()
      return
    }
    txn.failures++
    retryTimer = setTimeout(() => {
      retryTimer = undefined
      wake()
    }, retryDelayMs(txn.failures))
  }

  return {
    attempts,
    acknowledged,
    /** Every event acknowledged by the proxy, in order. */
    deliveredEvents: () => acknowledged.flatMap((t) => t.events),
    connect(t: Target | undefined) {
      target = t
      wake()
    },
    enqueue(e: FakeEvent) {
      queue.push(e)
      // Synapse sends 30–300 ms after the event; a microtask lets a burst go out as one batch.
      queueMicrotask(wake)
    },
    pause() {
      paused = true
    },
    resume() {
      paused = false
      wake()
    },
    intercept(fn: typeof interceptor) {
      interceptor = fn
    },
    /** Resolves once everything queued has been acknowledged (rejects after `ms`). */
    flushed(ms = 10_000): Promise<void> {
      if (idle()) return Promise.resolve()
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters = waiters.filter((w) => w !== done)
          reject(new Error(`appservice transactions not acknowledged within ${ms} ms (${queue.length} queued, txn ${current?.txnId ?? 'none'} in flight)`))
        }, ms)
        const done = () => {
          clearTimeout(timer)
          resolve()
        }
        waiters.push(done)
      })
    },
    stop() {
      if (retryTimer) clearTimeout(retryTimer)
      retryTimer = undefined
      paused = true
    },
  }
}

export type AppserviceSender = ReturnType<typeof createAppserviceSender>
