/**
 * A fresh, migrated database whose URL the test keeps: several runners (in this process or spawned
 * gateways) connect to it with their own pools, as replicas on one Postgres would.
 */
import { Config, Effect, type Scope } from "effect"
import type { SqlError } from "@effect/sql/SqlError"
import type { ConfigError } from "effect"
import { layerFromUrl } from "../../src/storage/Database.ts"
import { runMigrations } from "../../src/storage/Migrations.ts"
import { admin, withDatabase } from "./AdminSql.ts"
import { createDatabaseStatement, defaultTestDatabaseUrl, templateDatabase, testDatabaseName } from "./TestDatabase.ts"

/** Creates `<prefix>c_<random>` (a copy of the migrated template, or migrated here), drops it when the scope closes; returns its URL. */
export const clusterDatabase: Effect.Effect<string, SqlError | ConfigError.ConfigError, Scope.Scope> = Effect.gen(function*() {
  const adminUrl = yield* Config.string("TEST_DATABASE_URL").pipe(Config.withDefault(defaultTestDatabaseUrl))
  const name = testDatabaseName("c")
  yield* Effect.acquireRelease(
    admin(adminUrl, createDatabaseStatement(name)),
    () => admin(adminUrl, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).pipe(Effect.orDie)
  )
  const url = withDatabase(adminUrl, name)
  if (templateDatabase() === undefined) yield* runMigrations.pipe(Effect.provide(layerFromUrl(url, { maxConnections: 2 })))
  return url
})
