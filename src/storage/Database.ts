/**
 * Storage: one `PgClient` for the whole gateway.
 *
 * - `DATABASE_URL` set   → that PostgreSQL server.
 * - `DATABASE_URL` unset → an embedded PostgreSQL: PGlite (data in `AWOOOP_DATA_DIR`, default
 *   `./.data/pglite`) served on a loopback TCP socket by `PGLiteSocketServer`, so the very same
 *   `PgClient` (node-postgres) code path runs in both cases.
 *
 * BIGINT: node-postgres returns `int8` as a string. We keep that default (CONVENTIONS.md relies on
 * it: decode with `Schema.NumberFromString` or cast in SQL, e.g. `global_position::float8`).
 */
import { PGlite } from "@electric-sql/pglite"
import { PGLiteSocketServer } from "@electric-sql/pglite-socket"
import type * as SqlClient from "@effect/sql/SqlClient"
import * as SqlError from "@effect/sql/SqlError"
import * as PgClient from "@effect/sql-pg/PgClient"
import { Config, Effect, Layer, Option, Redacted } from "effect"
import type { ConfigError } from "effect"
import { mkdir } from "node:fs/promises"
import * as Path from "node:path"
import * as StoreLock from "./StoreLock.ts"

/** What `DatabaseLive` and friends provide. */
export type Database = PgClient.PgClient | SqlClient.SqlClient

/** The URL with its password (and any query string, which may carry one) removed: safe to log. */
export const describeUrl = (url: string): string => {
  try {
    const u = new URL(url)
    const user = u.username ? `${decodeURIComponent(u.username)}@` : ""
    return `${u.protocol}//${user}${u.host}${u.pathname}`
  } catch {
    return "(unparseable DATABASE_URL)"
  }
}

/**
 * A pool on an external PostgreSQL server.
 */
export const layerFromUrl = (
  url: Redacted.Redacted<string> | string,
  options?: { readonly maxConnections?: number | undefined; readonly applicationName?: string | undefined }
): Layer.Layer<Database, SqlError.SqlError> => {
  const redacted = typeof url === "string" ? Redacted.make(url) : url
  return Layer.unwrapEffect(
    Effect.logInfo(`Storage: PostgreSQL at ${describeUrl(Redacted.value(redacted))}`).pipe(
      Effect.as(
        PgClient.layer({
          url: redacted,
          maxConnections: options?.maxConnections ?? 10,
          applicationName: options?.applicationName ?? "awooop-gateway"
        })
      )
    )
  )
}

const pgliteError = (message: string) => (cause: unknown) => new SqlError.SqlError({ message, cause })

/**
 * An embedded PostgreSQL: PGlite on `dataDir`, served on 127.0.0.1:<ephemeral port>, with a
 * one-connection pool in front of it.
 *
 * PGlite is a single backend (one session): `PGLiteSocketServer` multiplexes connections at the
 * protocol-message level, so two pg connections with extended-protocol queries in flight could
 * interleave Parse/Bind/Execute on the same unnamed statement. We therefore accept exactly one
 * connection and size the pool to exactly one (kept open: `minConnections: 1`, so the pool never
 * closes and re-opens it and races the server's single slot). Consequences: statements are
 * serialised (fine for an embedded single-node setup), and `PgClient.listen` (which opens a
 * second connection) is not available on the embedded store. One process at a time: a lock file
 * with its pid (StoreLock.ts) makes a second one refuse.
 */
export const layerEmbedded = (dataDir: string): Layer.Layer<Database, SqlError.SqlError> =>
  Layer.unwrapScoped(
    Effect.gen(function*() {
      const dir = Path.resolve(dataDir)
      yield* Effect.tryPromise({
        try: () => mkdir(dir, { recursive: true }),
        catch: pgliteError(`Cannot create the PGlite data directory ${dir}`)
      })
      // One process per store: refuse (naming the holder) while another one has it open.
      yield* StoreLock.acquire(dir)
      const db = yield* Effect.acquireRelease(
        Effect.tryPromise({
          try: () => PGlite.create(dir),
          catch: pgliteError(`Cannot open PGlite in ${dir}`)
        }),
        (db) => Effect.promise(() => db.closed ? Promise.resolve() : db.close()).pipe(Effect.ignoreLogged)
      )
      const server = yield* Effect.acquireRelease(
        Effect.tryPromise({
          try: async () => {
            const server = new PGLiteSocketServer({ db, host: "127.0.0.1", port: 0, maxConnections: 1 })
            await server.start()
            return server
          },
          catch: pgliteError("Cannot start the PGlite socket server")
        }),
        (server) => Effect.promise(() => server.stop())
      )
      const conn = server.getServerConn()
      const port = Number(conn.slice(conn.lastIndexOf(":") + 1))
      yield* Effect.logInfo(`Storage: embedded PGlite in ${dir} (served on 127.0.0.1:${port})`)
      return PgClient.layer({
        host: "127.0.0.1",
        port,
        username: "postgres",
        database: "postgres",
        maxConnections: 1,
        minConnections: 1,
        applicationName: "awooop-gateway"
      })
    })
  )

/**
 * The gateway's storage, chosen by configuration (see the module comment).
 */
export const DatabaseLive: Layer.Layer<Database, SqlError.SqlError | ConfigError.ConfigError> = Layer.unwrapEffect(
  Effect.gen(function*() {
    const url = yield* Config.option(Config.redacted("DATABASE_URL"))
    if (Option.isSome(url) && Redacted.value(url.value).trim() !== "") {
      return layerFromUrl(url.value)
    }
    const dataDir = yield* Config.string("AWOOOP_DATA_DIR").pipe(Config.withDefault("./.data/pglite"))
    return layerEmbedded(dataDir)
  })
)
