/**
 * Statements on the tests' PostgreSQL server, each on a short-lived connection of its own: creating,
 * copying, emptying and dropping test databases (TestDatabase.ts, DatabasePool.ts, ClusterDatabase.ts).
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect, Redacted } from "effect"

/** One connection to `url` for the length of `f`. */
export const connected = <A>(url: string, f: (sql: PgClient.PgClient) => Effect.Effect<A, SqlError>): Effect.Effect<A, SqlError> =>
  Effect.flatMap(PgClient.PgClient, f).pipe(
    Effect.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 1, applicationName: "awooop-test-admin" }))
  )

/** Runs one statement on the admin database (CREATE / DROP DATABASE cannot run in a pool's transaction). */
export const admin = (adminUrl: string, statement: string): Effect.Effect<void, SqlError> =>
  connected(adminUrl, (sql) => sql.unsafe(statement)).pipe(Effect.asVoid)

/** The admin URL with its database name replaced. */
export const withDatabase = (adminUrl: string, database: string): string => {
  const url = new URL(adminUrl)
  url.pathname = `/${database}`
  return url.toString()
}
