/**
 * Errors are values with a type and an HTTP status. One mapper in app.ts turns them into the wire
 * shape of the path they happened on: Matrix JSON (`errcode`, `error`) on Matrix paths, `{ error }`
 * on the Acrobits paths.
 */
export type ErrCode =
  | 'M_NOT_JSON'
  | 'M_BAD_JSON'
  | 'M_TOO_LARGE'
  | 'M_UNRECOGNIZED'
  | 'M_FORBIDDEN'
  | 'M_UNKNOWN_TOKEN'
  | 'M_LIMIT_EXCEEDED'
  | 'M_UNAVAILABLE'
  | 'M_UNKNOWN'
  | 'M_UNAUTHORIZED'
  | 'M_NOT_FOUND'

export class AppError extends Error {
  constructor(
    readonly errcode: ErrCode,
    readonly status: number,
    message: string,
    /** Seconds, sent as `Retry-After` where set. */
    readonly retryAfter?: number,
  ) {
    super(message)
    this.name = 'AppError'
  }
}

export const notJson = (message = 'Request body is not valid JSON') => new AppError('M_NOT_JSON', 400, message)
export const badRequest = (message: string) => new AppError('M_BAD_JSON', 400, message)
export const tooLarge = (limit: number) =>
  new AppError('M_TOO_LARGE', 413, `Request body is larger than ${limit} bytes`)
export const unrecognized = () => new AppError('M_UNRECOGNIZED', 404, 'Unrecognized request')
export const methodNotAllowed = () => new AppError('M_UNRECOGNIZED', 405, 'Method not allowed on this path')
export const unauthorized = (message: string) => new AppError('M_FORBIDDEN', 401, message)
export const forbidden = (message: string) => new AppError('M_FORBIDDEN', 403, message)
export const rateLimited = (message: string, retryAfter: number) =>
  new AppError('M_LIMIT_EXCEEDED', 429, message, retryAfter)
export const unavailable = (message: string, retryAfter?: number) =>
  new AppError('M_UNAVAILABLE', 503, message, retryAfter)
export const badGateway = (message: string) => new AppError('M_UNKNOWN', 502, message)
export const notConfigured = (variable: string, what: string) =>
  unavailable(`${what} is not possible: ${variable} is not set`)
export const notFound = (message: string) => new AppError('M_NOT_FOUND', 404, message)
