/** What withTimeout rejects with: the bounded work took too long (it may still finish later). */
export class TimeoutError extends Error {
  override name = 'TimeoutError'
}

/** A promise bounded in time; the timer goes with the answer, so nothing lingers. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(`${what} took longer than ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}
