/** The AppError a pure function refuses with, as plain fields; throws when it does not refuse. */
import { AppError } from '../../src/errors.ts'

export const refusal = (fn: () => unknown) => {
  try {
    fn()
  } catch (e) {
    if (e instanceof AppError) return { status: e.status, errcode: e.errcode, message: e.message }
    throw e
  }
  throw new Error('expected a refusal')
}
