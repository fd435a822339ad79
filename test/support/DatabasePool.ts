/**
 * Test databases reused from suite to suite inside one worker process.
 *
 * Copying the migrated template and dropping the copy cost PostgreSQL ~0.37 s of CPU per test
 * database (the copy WAL-logs every block of the catalogs), ~20 s of a full run on two cores that
 * the suite keeps busy (BENCHMARKS.md, issue 11). A database a suite gives back is instead emptied
 * — every table truncated, sequences restarted, the rows the migrations seeded put back — and kept
 * for the worker's next suite, which then starts on what a fresh copy would hold.
 *
 * A database whose shape changed (a table, column, function or schema the template does not have:
 * @effect/cluster's runtime tables, a projection rebuild's schema) is dropped, not reused. What is
 * still idle when the run ends is dropped by globalSetup's teardown (`dropPooled`), by name:
 * `<prefix>p_<8 hex of the template's name>_<8 random hex>`, so two runs never touch each other's.
 */
import type * as PgClient from "@effect/sql-pg/PgClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect } from "effect"
import { randomUUID } from "node:crypto"
import { admin, connected, withDatabase } from "./AdminSql.ts"

/** What a fresh copy of the template holds: what emptying a database must give back. */
interface Shape {
  readonly fingerprint: string
  readonly tables: ReadonlyArray<string>
  readonly sequences: ReadonlyArray<string>
  readonly seeded: ReadonlyArray<{ readonly table: string; readonly rows: string }>
}

// Module state is per worker: workers are reused from file to file (vitest.config.ts, isolate: false).
const idle: Array<string> = []
let templateShape: Shape | undefined

const userSchemas = `n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'`

/** Every schema, relation, column and function outside the system catalogs, hashed. */
const fingerprintQuery = `SELECT md5(
  coalesce((SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace n WHERE ${userSchemas}), '') || '|' ||
  coalesce((SELECT string_agg(x, ',' ORDER BY x) FROM (SELECT format('%s.%s:%s', n.nspname, c.relname, c.relkind) AS x
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE ${userSchemas}) r), '') || '|' ||
  coalesce((SELECT string_agg(x, ',' ORDER BY x) FROM (SELECT format('%s.%s.%s:%s', n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod)) AS x
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE ${userSchemas} AND a.attnum > 0 AND NOT a.attisdropped) r), '') || '|' ||
  coalesce((SELECT string_agg(x, ',' ORDER BY x) FROM (SELECT p.oid::regprocedure::text AS x
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE ${userSchemas}) r), '')
) AS fingerprint`

const relationsQuery = (kinds: string) =>
  `SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE ${userSchemas} AND c.relkind IN (${kinds}) ORDER BY 1`

const fingerprint = (sql: PgClient.PgClient) =>
  Effect.map(sql.unsafe<{ fingerprint: string }>(fingerprintQuery), (rows) => rows[0].fingerprint)

const readShape = (sql: PgClient.PgClient): Effect.Effect<Shape, SqlError> =>
  Effect.gen(function*() {
    const tables = (yield* sql.unsafe<{ name: string }>(relationsQuery("'r', 'p'"))).map((r) => r.name)
    const sequences = (yield* sql.unsafe<{ name: string }>(relationsQuery("'S'"))).map((r) => r.name)
    const seeded: Array<{ table: string; rows: string }> = []
    for (const table of tables) {
      const [row] = yield* sql.unsafe<{ rows: string | null }>(`SELECT json_agg(t)::text AS rows FROM ${table} t`)
      if (row.rows !== null) seeded.push({ table, rows: row.rows })
    }
    return { fingerprint: yield* fingerprint(sql), tables, sequences, seeded }
  })

/** Empties a database back to `shape`; false (and nothing changed) when its shape is not the template's. */
const empty = (sql: PgClient.PgClient, shape: Shape): Effect.Effect<boolean, SqlError> =>
  Effect.gen(function*() {
    // A suite's gateways are closed by now; anything still connected (a pool closing late) would hold locks.
    yield* sql.unsafe(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`)
    if ((yield* fingerprint(sql)) !== shape.fingerprint) return false
    yield* sql.withTransaction(Effect.gen(function*() {
      if (shape.tables.length > 0) yield* sql.unsafe(`TRUNCATE ${shape.tables.join(", ")} RESTART IDENTITY CASCADE`)
      for (const sequence of shape.sequences) yield* sql.unsafe(`ALTER SEQUENCE ${sequence} RESTART`)
      for (const { rows, table } of shape.seeded) {
        yield* sql.unsafe(`INSERT INTO ${table} OVERRIDING SYSTEM VALUE SELECT * FROM json_populate_recordset(NULL::${table}, $1::json)`, [rows])
      }
    }))
    return true
  })

/** The name pattern of this run's pooled databases (template `<prefix>tpl_<16 hex>`). */
const pooledPrefix = (template: string): string => `${template.slice(0, template.lastIndexOf("tpl_"))}p_${template.slice(-16, -8)}_`

/** A database holding what a fresh copy of `template` holds: an emptied one this worker gave back, or a new copy. */
export const take = (adminUrl: string, template: string): Effect.Effect<string, SqlError> =>
  Effect.suspend(() => {
    const reused = idle.pop()
    if (reused !== undefined) return Effect.succeed(reused)
    const name = `${pooledPrefix(template)}${randomUUID().replaceAll("-", "").slice(0, 8)}`
    return admin(adminUrl, `CREATE DATABASE ${name} TEMPLATE ${template}`).pipe(
      Effect.zipRight(
        templateShape === undefined
          ? connected(withDatabase(adminUrl, name), readShape).pipe(Effect.tap((shape) => (templateShape = shape)))
          : Effect.void
      ),
      Effect.as(name)
    )
  })

/** Gives a database back: emptied and kept for the next suite, or dropped when it cannot be. */
export const giveBack = (adminUrl: string, name: string): Effect.Effect<void, SqlError> =>
  Effect.suspend(() => {
    const shape = templateShape
    const emptied = shape === undefined
      ? Effect.succeed(false)
      : connected(withDatabase(adminUrl, name), (sql) => empty(sql, shape)).pipe(Effect.orElseSucceed(() => false))
    return Effect.flatMap(emptied, (ok) => ok ? Effect.sync(() => void idle.push(name)) : admin(adminUrl, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`))
  })

/** Drops every pooled database of the run whose template is `template` (globalSetup's teardown). */
export const dropPooled = (
  adminUrl: string,
  template: string
): Effect.Effect<void, SqlError> =>
  connected(adminUrl, (sql) =>
    Effect.gen(function*() {
      const pattern = pooledPrefix(template).replaceAll("_", "\\_") + "%"
      const rows = yield* sql.unsafe<{ datname: string }>(`SELECT datname FROM pg_database WHERE datname LIKE $1`, [pattern])
      for (const { datname } of rows) yield* sql.unsafe(`DROP DATABASE IF EXISTS ${datname} WITH (FORCE)`)
    }))
