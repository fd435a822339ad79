/**
 * Plain-SQL migrations: `migrations/*.sql` (next to `src/`, found through `import.meta.url`, not
 * the working directory), applied in lexical order, one transaction per file, each recorded in
 * `schema_migrations`. Every transaction first takes a transaction-scoped advisory lock, so two
 * gateways starting together against the same database apply each file exactly once.
 *
 * A file is sent as one simple-protocol query (no parameters), so it may hold several statements;
 * this works on PostgreSQL and on PGlite behind the socket server alike.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect, Layer } from "effect"
import { readdir, readFile } from "node:fs/promises"
import * as Path from "node:path"
import { packagePath } from "../config/PackagePaths.ts"

/** `<package root>/migrations/`, resolved from this file's location (config/PackagePaths.ts). */
export const migrationsDir: string = packagePath(import.meta.url, "migrations") + Path.sep

/** Arbitrary constant key for `pg_advisory_xact_lock`: "awooop-migrations". */
const LOCK_KEY = 7_243_158_801

export interface Migration {
  readonly name: string
  readonly sql: string
}

/** The `*.sql` files of `dir` in lexical order. A missing or unreadable directory is a defect. */
export const loadMigrations = (dir: string = migrationsDir): Effect.Effect<ReadonlyArray<Migration>> =>
  Effect.promise(async () => {
    const names = (await readdir(dir)).filter((name) => name.endsWith(".sql")).sort()
    return Promise.all(names.map(async (name) => ({ name, sql: await readFile(Path.join(dir, name), "utf8") })))
  })

/** Apply `migrations` that are not yet recorded. Returns the names applied by this call. */
export const applyMigrations = (
  migrations: ReadonlyArray<Migration>
): Effect.Effect<ReadonlyArray<string>, SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const applied: Array<string> = []
    for (const migration of migrations) {
      const ran = yield* sql.withTransaction(
        Effect.gen(function*() {
          yield* sql`SELECT pg_advisory_xact_lock(${LOCK_KEY})`
          yield* sql`CREATE TABLE IF NOT EXISTS schema_migrations (
            name       text PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
          )`
          const done = yield* sql<{ readonly name: string }>`
            SELECT name FROM schema_migrations WHERE name = ${migration.name}`
          if (done.length > 0) return false
          yield* sql.unsafe(migration.sql)
          yield* sql`INSERT INTO schema_migrations (name, applied_at) VALUES (${migration.name}, now())`
          return true
        })
      )
      if (ran) applied.push(migration.name)
    }
    return applied
  })

/** Apply the package's `migrations/*.sql`. */
export const runMigrations: Effect.Effect<void, SqlError, SqlClient.SqlClient> = Effect.gen(function*() {
  const migrations = yield* loadMigrations()
  const applied = yield* applyMigrations(migrations)
  yield* Effect.logInfo(
    applied.length === 0
      ? `Migrations: schema up to date (${migrations.length} files)`
      : `Migrations: applied ${applied.join(", ")}`
  )
}).pipe(Effect.withSpan("Migrations.run"))

/** Runs the migrations when built; provides nothing. */
export const MigrationsLive: Layer.Layer<never, SqlError, SqlClient.SqlClient> = Layer.effectDiscard(runMigrations)
