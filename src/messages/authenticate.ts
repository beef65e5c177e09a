/**
 * Who is asking, for the messaging routes: always a password check, the token report's (its
 * verifier, cache and failure limiter): the homeserver's, or with AUTH_MODE=ext the CTI server's. With AUTH_MODE=none there is no password check,
 * and nobody's messages may be read or sent in their name: the routes refuse with 403.
 */
import { forbidden, notConfigured, unauthorized } from '../errors.ts'
import type { AuthMode } from '../config.ts'
import type { PasswordVerifier } from '../matrix/auth.ts'

export interface MessagingAuthDeps {
  readonly verifier?: PasswordVerifier
  readonly authMode: AuthMode
  /** The variable messaging still needs, when it is off. */
  readonly missing?: string
}

export async function authenticateMessaging(
  deps: MessagingAuthDeps,
  what: string,
  credentials: { username?: string; password?: string },
  clientAddress: string | undefined,
): Promise<string> {
  if (deps.missing !== undefined) throw notConfigured(deps.missing, 'Messaging')
  if (deps.authMode === 'none') {
    throw forbidden(`${what} needs AUTH_MODE=matrix or ext: without a password check, anyone could read and send anyone's messages`)
  }
  if (credentials.username === undefined || credentials.password === undefined) throw unauthorized('username and password are required')
  if (deps.verifier === undefined) throw notConfigured(deps.authMode === 'ext' ? 'EXT_AUTH_URL' : 'MATRIX_HOMESERVER_URL', 'Checking the password')
  return deps.verifier.verify(credentials.username, credentials.password, clientAddress)
}
