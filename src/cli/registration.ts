/**
 * `appservice-registration`: the registration file Synapse needs (app_service_config_files) and
 * the environment lines that match it. FIELD-GUIDE §2 fixes its shape: the users namespace must
 * be `exclusive: false` (Synapse sends no pushes for users in an exclusive namespace),
 * `rate_limited: false` (pushers/set on behalf of users must not be throttled), and `url`: the
 * proxy's base URL as Synapse reaches it, where Synapse sends transactions with the hs_token
 * (messaging); `null` only when no URL is known, and messaging then stays off.
 */
import { randomBytes } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { configOrReport, EXIT_CONFIG, EXIT_FAILED, EXIT_OK, type CliIo, type Env, type ExitCode } from './common.ts'

export interface RegistrationOptions {
  serverName?: string
  /** MATRIX_HOMESERVER_URL for the env lines (default: the environment's). */
  homeserverUrl?: string
  /** PROXY_URL, the proxy's base URL as Synapse reaches it (default: the environment's). */
  proxyUrl?: string
  id?: string
  senderLocalpart?: string
  /** Write the YAML to this file (mode 0600, never over an existing file) instead of stdout. */
  output?: string
  /** The proxy's base URL as Synapse reaches it (default PROXY_URL). */
  url?: string
}

export interface Registration {
  id: string
  asToken: string
  hsToken: string
  senderLocalpart: string
  userRegex: string
  url?: string
}

/** Hex: no character that YAML, a shell or an env file would read specially. */
export const freshToken = () => randomBytes(32).toString('hex')

const escapeRegex = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

/**
 * Every user of the server. Synapse matches namespace regexes from the start of the user ID only
 * (Python re.match), so the `$` keeps `@x:example.org.evil` out.
 */
export const usersRegex = (serverName: string) => `@.*:${escapeRegex(serverName)}$`

// Single-quoted YAML keeps backslashes literal; a quote is written twice.
const yamlQuote = (s: string) => `'${s.replaceAll("'", "''")}'`

export function registrationYaml(r: Registration): string {
  return [
    '# Synapse application service registration for matrix2acrobits.',
    '# List this file in app_service_config_files (homeserver.yaml) and restart Synapse.',
    `id: ${yamlQuote(r.id)}`,
    ...(r.url === undefined
      ? ['# No URL was given (--url or PROXY_URL): Synapse sends no transactions, so messaging stays off.', 'url: null']
      : ['# Synapse sends room events here (transactions) for messaging.', `url: ${yamlQuote(r.url)}`]),
    `as_token: ${yamlQuote(r.asToken)}`,
    `hs_token: ${yamlQuote(r.hsToken)}`,
    `sender_localpart: ${yamlQuote(r.senderLocalpart)}`,
    '# Pusher calls on behalf of users must not be rate limited.',
    'rate_limited: false',
    'namespaces:',
    '  users:',
    '    # exclusive: false is essential: Synapse sends no pushes for users in an exclusive namespace.',
    '    - exclusive: false',
    `      regex: ${yamlQuote(r.userRegex)}`,
    '  aliases: []',
    '  rooms: []',
    '',
  ].join('\n')
}

const LOCALPART = /^[a-z0-9._=\-/+]+$/

function envLine(name: string, value: string | undefined, example: string, what: string): string[] {
  if (value !== undefined) return [`${name}=${value}`]
  return [`# FILL IN ${name}: ${what}; then remove the "# " below`, `# ${name}=${example}`]
}

export function runRegistration(env: Env, options: RegistrationOptions, io: CliIo): ExitCode {
  // The options stand for the variables they fill in, and are checked as those are.
  const config = configOrReport(
    {
      ...env,
      ...(options.homeserverUrl !== undefined && { MATRIX_HOMESERVER_URL: options.homeserverUrl }),
      ...(options.proxyUrl !== undefined && { PROXY_URL: options.proxyUrl }),
    },
    io,
  )
  if (!config) return EXIT_CONFIG
  const serverName = options.serverName?.trim() || config.serverName
  if (serverName === undefined) {
    io.err('matrix2acrobits: no server name: pass --server-name, or set MATRIX_SERVER_NAME or MATRIX_HOMESERVER_URL')
    return EXIT_CONFIG
  }
  if (/[\s/@]/.test(serverName)) {
    io.err(`matrix2acrobits: "${serverName}" is not a server name`)
    return EXIT_CONFIG
  }
  const senderLocalpart = options.senderLocalpart ?? 'matrix2acrobits'
  if (!LOCALPART.test(senderLocalpart)) {
    io.err(`matrix2acrobits: "${senderLocalpart}" is not a valid localpart (lower-case letters, digits, ._=-/+)`)
    return EXIT_CONFIG
  }
  let url: string | undefined = config.proxyUrl
  if (options.url !== undefined) {
    try {
      const parsed = new URL(options.url.trim())
      if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new Error('not http(s)')
      url = parsed.toString().replace(/\/+$/, '')
    } catch {
      io.err(`matrix2acrobits: --url "${options.url}" is not an http(s) URL`)
      return EXIT_CONFIG
    }
  }
  const registration: Registration = {
    url,
    id: options.id ?? 'matrix2acrobits',
    asToken: freshToken(),
    hsToken: freshToken(),
    senderLocalpart,
    userRegex: usersRegex(serverName),
  }
  const yaml = registrationYaml(registration)
  // A value not known here is written commented out, with what to fill in: an unedited file then
  // leaves the variable unset, and `check` names it, instead of a placeholder running as a setting.
  const envLines = [
    ...envLine('MATRIX_HOMESERVER_URL', config.homeserverUrl, 'https://matrix.example.org', "the homeserver's client-server API URL (or pass --homeserver-url)"),
    `MATRIX_SERVER_NAME=${serverName}`,
    `MATRIX_AS_TOKEN=${registration.asToken}`,
    `MATRIX_HS_TOKEN=${registration.hsToken}`,
    `MATRIX_AS_ID=${registration.id}`,
    ...envLine('PROXY_URL', config.proxyUrl ?? url, 'https://push.example.org', 'the base URL at which Synapse reaches this proxy (or pass --proxy-url)'),
  ]
  if (options.output !== undefined) {
    try {
      // 'wx': an existing registration holds the token Synapse knows; overwriting it would lock the proxy out.
      writeFileSync(options.output, yaml, { mode: 0o600, flag: 'wx' })
    } catch (e) {
      io.err(`matrix2acrobits: cannot write ${options.output}: ${(e as Error).message}`)
      return EXIT_FAILED
    }
    io.err(`wrote ${options.output} (mode 0600); the environment for matrix2acrobits follows`)
    if (url === undefined) io.err('note: url is null (no --url, no PROXY_URL): Synapse sends no transactions and messaging stays off')
    for (const line of envLines) io.out(line)
    return EXIT_OK
  }
  // Stdout stays one valid YAML document: the env lines follow as comments.
  io.out(yaml.trimEnd())
  io.out('')
  if (url === undefined) io.err('note: url is null (no --url, no PROXY_URL): Synapse sends no transactions and messaging stays off')
  io.out('# Environment for matrix2acrobits (its EnvironmentFile), matching this registration:')
  for (const line of envLines) io.out(line.startsWith('#') ? line : `# ${line}`)
  return EXIT_OK
}
