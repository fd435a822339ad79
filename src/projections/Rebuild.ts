/**
 * Rebuilding projections from the journal alone, into a scratch schema, and comparing or swapping
 * the result with the live tables. `verify` and `rebuild` (src/replay/cli.ts) are built on these.
 *
 * The rebuild is the same fold as the live projector (Projections.applyEvents), run from an empty
 * state over the whole history (journal + archive), in the same commit order.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect } from "effect"
import {
  catchUp,
  type CatchUpResult,
  type Checkpoint,
  checkpointName,
  checkpointTable,
  liveSchema,
  origin,
  readCheckpoint,
  writeCheckpoint
} from "./Projector.ts"
import { tables } from "./Projections.ts"

export const defaultBatchSize = 10_000

const qualified = (sql: SqlClient.SqlClient, schema: string, table: string) => sql(`${schema}.${table}`)

/**
 * A fresh schema with empty copies of the projection tables and the checkpoint table. UNLOGGED:
 * scratch tables are rebuilt from the journal anyway, so they need no WAL (a crash loses only them).
 */
export const createScratch = (sql: SqlClient.SqlClient, schema: string): Effect.Effect<void, SqlError> =>
  Effect.gen(function*() {
    yield* sql`DROP SCHEMA IF EXISTS ${sql(schema)} CASCADE`
    yield* sql`CREATE SCHEMA ${sql(schema)}`
    for (const table of [...tables.map((t) => t.name), checkpointTable]) {
      yield* sql`CREATE UNLOGGED TABLE ${qualified(sql, schema, table)} (LIKE ${qualified(sql, liveSchema, table)} INCLUDING ALL)`
    }
  })

export const dropScratch = (sql: SqlClient.SqlClient, schema: string): Effect.Effect<void, SqlError> =>
  sql`DROP SCHEMA IF EXISTS ${sql(schema)} CASCADE`.pipe(Effect.asVoid)

/** Folds the whole journal (and archive) into `schema`, from nothing, up to `upTo` if given. */
export const rebuildInto = (
  sql: SqlClient.SqlClient,
  schema: string,
  options: { readonly upTo?: Checkpoint | undefined; readonly batchSize?: number | undefined } = {}
): Effect.Effect<CatchUpResult, SqlError> =>
  Effect.zipRight(
    createScratch(sql, schema),
    catchUp(sql, { schema, source: "journal+archive", batchSize: options.batchSize ?? defaultBatchSize, upTo: options.upTo })
  )

export interface TableDiff {
  readonly table: string
  /** Rows in the live table that the rebuild does not have (or has with other values). */
  readonly onlyLive: number
  readonly onlyRebuilt: number
  /** Keys of a few differing rows, for the report. */
  readonly samples: ReadonlyArray<string>
}

/** Compares every projection table of two schemas row by row (all columns). */
export const diffSchemas = (
  sql: SqlClient.SqlClient,
  live: string,
  rebuilt: string
): Effect.Effect<ReadonlyArray<TableDiff>, SqlError> =>
  Effect.forEach(tables, (t) =>
    Effect.gen(function*() {
      const a = qualified(sql, live, t.name)
      const b = qualified(sql, rebuilt, t.name)
      const counts = yield* sql<{ readonly onlyLive: number; readonly onlyRebuilt: number }>`
        SELECT (SELECT count(*) FROM (SELECT * FROM ${a} EXCEPT ALL SELECT * FROM ${b}) x)::float8 AS "onlyLive",
               (SELECT count(*) FROM (SELECT * FROM ${b} EXCEPT ALL SELECT * FROM ${a}) y)::float8 AS "onlyRebuilt"`
      const { onlyLive, onlyRebuilt } = counts[0]!
      const key = sql.literal(t.key.map((k) => `${k}::text`).join(` || ' / ' || `))
      const samples = onlyLive + onlyRebuilt === 0 ? [] : yield* sql<{ readonly key: string }>`
        SELECT DISTINCT ${key} AS key FROM (
          (SELECT * FROM ${a} EXCEPT ALL SELECT * FROM ${b}) UNION ALL (SELECT * FROM ${b} EXCEPT ALL SELECT * FROM ${a})
        ) d LIMIT 5`.pipe(Effect.map((rows) => rows.map((r) => r.key)))
      return { table: t.name, onlyLive, onlyRebuilt, samples }
    }))

export interface ProjectionCheck {
  /** How far the live projections were when compared. */
  readonly checkpoint: Checkpoint
  readonly events: number
  readonly diffs: ReadonlyArray<TableDiff>
  readonly ok: boolean
}

/**
 * Rebuilds into `scratch` exactly as far as the live projections are, and compares. The bulk of
 * the rebuild runs without locks; the last stretch and the comparison run while holding the live
 * checkpoint (FOR SHARE), so the live projector cannot move underneath the comparison.
 */
export const verifyProjections = (
  sql: SqlClient.SqlClient,
  options: { readonly scratch?: string | undefined; readonly batchSize?: number | undefined } = {}
): Effect.Effect<ProjectionCheck, SqlError> => {
  const scratch = options.scratch ?? "awooop_verify"
  return Effect.gen(function*() {
    const first = (yield* readCheckpoint(sql, liveSchema)) ?? origin
    const bulk = yield* rebuildInto(sql, scratch, { upTo: first, batchSize: options.batchSize })
    return yield* sql.withTransaction(Effect.gen(function*() {
      const at = (yield* readCheckpoint(sql, liveSchema, checkpointName, "share")) ?? origin
      const rest = yield* catchUp(sql, {
        schema: scratch,
        source: "journal+archive",
        batchSize: options.batchSize ?? defaultBatchSize,
        upTo: at
      })
      const diffs = yield* diffSchemas(sql, liveSchema, scratch)
      return {
        checkpoint: at,
        events: bulk.events + rest.events,
        diffs,
        ok: diffs.every((d) => d.onlyLive === 0 && d.onlyRebuilt === 0)
      }
    }))
  }).pipe(Effect.ensuring(dropScratch(sql, scratch).pipe(Effect.ignore)))
}

/**
 * Rebuilds the live projections: fold everything into a scratch schema, then, holding the live
 * checkpoint, fold what arrived meanwhile and replace the live tables and checkpoint with the
 * rebuilt ones in one transaction. Readers see the old tables until the commit.
 */
export const rebuildLive = (
  sql: SqlClient.SqlClient,
  options: { readonly scratch?: string | undefined; readonly batchSize?: number | undefined } = {}
): Effect.Effect<{ readonly events: number; readonly checkpoint: Checkpoint }, SqlError> => {
  const scratch = options.scratch ?? "awooop_rebuild"
  const batchSize = options.batchSize ?? defaultBatchSize
  return Effect.gen(function*() {
    const bulk = yield* rebuildInto(sql, scratch, { batchSize })
    return yield* sql.withTransaction(Effect.gen(function*() {
      yield* readCheckpoint(sql, liveSchema, checkpointName, "update")
      const rest = yield* catchUp(sql, { schema: scratch, source: "journal+archive", batchSize })
      const at = (yield* readCheckpoint(sql, scratch)) ?? origin
      for (const t of tables) {
        const live = qualified(sql, liveSchema, t.name)
        yield* sql`TRUNCATE ${live}`
        yield* sql`INSERT INTO ${live} SELECT * FROM ${qualified(sql, scratch, t.name)}`
      }
      yield* sql`INSERT INTO ${qualified(sql, liveSchema, checkpointTable)} (name, transaction_id, global_position)
        VALUES (${checkpointName}, '0'::xid8, 0) ON CONFLICT (name) DO NOTHING`
      yield* sql`UPDATE ${qualified(sql, liveSchema, checkpointTable)} SET events = 0 WHERE name = ${checkpointName}`
      yield* writeCheckpoint(sql, liveSchema, checkpointName, at, bulk.events + rest.events)
      return { events: bulk.events + rest.events, checkpoint: at }
    }))
  }).pipe(Effect.ensuring(dropScratch(sql, scratch).pipe(Effect.ignore)))
}
