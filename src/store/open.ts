/**
 * Which engine keeps the service's state: PostgreSQL when DATABASE_URL is set (several instances
 * share it), else the SQLite file PUSH_TOKEN_DB_PATH (one instance, no other service).
 */
import type { Config } from '../config.ts'
import { redactPassword } from '../secrets.ts'
import type { SQL } from 'bun'
import { describePostgresError, isPostgresRetryable, openPostgres } from './postgres.ts'
import { describeDatabaseError, isBusyError, openSqliteStore } from './sqlite.ts'
import type { TokenStore } from './types.ts'

export async function openStore(config: Pick<Config, 'dbPath' | 'databaseUrl'>, sqlite: { busyTimeoutMs?: number } = {}): Promise<TokenStore> {
  return (await openDatabase(config, sqlite)).store
}

/**
 * The store, and on PostgreSQL the pool through which the instances share the rest. `timeoutMs`
 * bounds each operation on PostgreSQL (the service's, store/bounded.ts); the commands leave it
 * unbounded (`tokens list` of a million accounts takes its time).
 */
export async function openDatabase(
  config: Pick<Config, 'dbPath' | 'databaseUrl'>,
  options: { busyTimeoutMs?: number; timeoutMs?: number } = {},
): Promise<{ store: TokenStore; postgres?: SQL }> {
  if (config.databaseUrl !== undefined) {
    const { sql, store } = await openPostgres(config.databaseUrl, { timeoutMs: options.timeoutMs })
    return { store, postgres: sql }
  }
  return { store: openSqliteStore(config.dbPath, { busyTimeoutMs: options.busyTimeoutMs }) }
}

/** The database as it may be printed: the SQLite path, or the URL without its password. */
export const storeName = (config: Pick<Config, 'dbPath' | 'databaseUrl'>) =>
  config.databaseUrl === undefined ? config.dbPath : redactPassword(config.databaseUrl)

/** What keeps the database from being used, in the operator's terms and without the password. */
export const describeStoreError = (config: Pick<Config, 'dbPath' | 'databaseUrl'>, e: unknown) =>
  config.databaseUrl === undefined ? describeDatabaseError(config.dbPath, e) : describePostgresError(config.databaseUrl, e)

/** Another writer is in the way (a lock, a serialization failure): trying again shortly may succeed. */
export const isRetryableStoreError = (e: unknown) => isBusyError(e) || isPostgresRetryable(e)
