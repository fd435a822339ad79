/**
 * A fresh database on the local PostgreSQL for one test suite.
 *
 * `CREATE DATABASE <TEST_DATABASE_PREFIX>t_<random>` (default prefix `awooop_`) through the admin URL (`TEST_DATABASE_URL`, default
 * `postgres://postgres@127.0.0.1:5432/postgres`), migrated, provided as `PgClient` / `SqlClient`,
 * and given back when the layer's scope closes (dropped `WITH (FORCE)`, or emptied for reuse: DatabasePool.ts).
 *
 * Under `npm test` the migrations ran once, on a template database (test/support/globalSetup.ts,
 * named in `TEST_DATABASE_TEMPLATE`): a copy of it takes ~0.5 s where creating and migrating took ~3 s,
 * and a copy a suite gave back is emptied and reused by the worker's next suite (DatabasePool.ts).
 *
 *   layer(TestDatabaseLive, { excludeTestServices: true })((it) => { ... })
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type * as PgClient from "@effect/sql-pg/PgClient"
import { Config, Effect, Layer, Logger, LogLevel } from "effect"
import type { ConfigError } from "effect"
import { randomUUID } from "node:crypto"
import { layerFromUrl } from "../../src/storage/Database.ts"
import { runMigrations } from "../../src/storage/Migrations.ts"
import { admin, withDatabase } from "./AdminSql.ts"
import * as DatabasePool from "./DatabasePool.ts"

export const defaultTestDatabaseUrl = "postgres://postgres@127.0.0.1:5432/postgres"

/**
 * The prefix of every database the tests create (`TEST_DATABASE_PREFIX`, default `awooop_`), so
 * several checkouts on one server can tell theirs apart (and clean up after a killed run):
 * `<prefix><kind>_<random>`, kind `t` (a suite), `f` (the fault matrix), or a suite's own.
 */
export const testDatabaseName = (kind: string): string => {
  const prefix = process.env.TEST_DATABASE_PREFIX ?? "awooop_"
  if (!/^[a-z_][a-z0-9_]{0,39}$/.test(prefix)) {
    throw new Error(`TEST_DATABASE_PREFIX must be 1-40 of a-z 0-9 _ (not starting with a digit): got ${JSON.stringify(prefix)}`)
  }
  return `${prefix}${kind}_${randomUUID().replaceAll("-", "").slice(0, 16)}`
}

export type TestDatabase = PgClient.PgClient | SqlClient.SqlClient

export interface TestDatabaseOptions {
  /** run `migrations/*.sql` after creating it (default true) */
  readonly migrate?: boolean
}

/** The migrated template database of this run (test/support/globalSetup.ts), if there is one. */
export const templateDatabase = (): string | undefined => {
  const name = process.env.TEST_DATABASE_TEMPLATE
  return name === undefined || name === "" ? undefined : name
}

/**
 * `CREATE DATABASE <name>`, as a copy of the run's migrated template when there is one (a copy takes
 * a fraction of the time migrating takes: a gateway started on it finds nothing to migrate).
 */
export const createDatabaseStatement = (name: string): string => {
  const template = templateDatabase()
  return template === undefined ? `CREATE DATABASE ${name}` : `CREATE DATABASE ${name} TEMPLATE ${template}`
}

/**
 * Creates a database with every migration applied, to be copied with `CREATE DATABASE … TEMPLATE`.
 * Nothing may stay connected to it (PostgreSQL refuses to copy a database in use): the pool used
 * to migrate it is closed before this returns.
 */
export const createTemplateDatabase = (adminUrl: string = process.env.TEST_DATABASE_URL ?? defaultTestDatabaseUrl): Promise<{ readonly name: string; readonly drop: () => Promise<void> }> => {
  const name = testDatabaseName("tpl")
  const drop = () =>
    Effect.runPromise(Effect.zipRight(DatabasePool.dropPooled(adminUrl, name), admin(adminUrl, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)))
  const migrate = Effect.zipRight(
    admin(adminUrl, `CREATE DATABASE ${name}`),
    Effect.provide(runMigrations, layerFromUrl(withDatabase(adminUrl, name), { maxConnections: 1, applicationName: "awooop-test-template" }))
  )
  return Effect.runPromise(migrate.pipe(Logger.withMinimumLogLevel(LogLevel.Warning))).then(() => ({ name, drop }))
}

export const layerTestDatabase = (
  options?: TestDatabaseOptions
): Layer.Layer<TestDatabase, SqlError | ConfigError.ConfigError> =>
  Layer.unwrapScoped(
    Effect.gen(function*() {
      const adminUrl = yield* Config.string("TEST_DATABASE_URL").pipe(Config.withDefault(defaultTestDatabaseUrl))
      const migrate = options?.migrate !== false
      const template = migrate ? templateDatabase() : undefined
      // Under `npm test`, an emptied database this worker used before, or a copy of the template (DatabasePool.ts).
      const name = template !== undefined
        ? yield* Effect.acquireRelease(DatabasePool.take(adminUrl, template), (name) => DatabasePool.giveBack(adminUrl, name).pipe(Effect.orDie))
        : yield* Effect.acquireRelease(
          Effect.sync(() => testDatabaseName("t")).pipe(Effect.tap((name) => admin(adminUrl, `CREATE DATABASE ${name}`))),
          (name) => admin(adminUrl, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).pipe(Effect.orDie)
        )
      const client = layerFromUrl(withDatabase(adminUrl, name), { applicationName: "awooop-test" })
      return template !== undefined || !migrate ? client : Layer.provideMerge(Layer.effectDiscard(runMigrations), client)
    })
  )

/** A fresh, migrated database. */
export const TestDatabaseLive: Layer.Layer<TestDatabase, SqlError | ConfigError.ConfigError> = layerTestDatabase()
