/**
 * A per-stream state table (run_state, host_state): one row per journal stream, keyed by
 * `stream_id`, that is the stream's folded state. The projector loads the states of the streams a
 * batch touches that it does not hold yet, and writes the states it changed back whole.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect } from "effect"
import { type Column, qualify, upsertReplace } from "./Sql.ts"

/** The states of `streamIds` in `schema.table`, by stream id; `fromRow` turns a row read with `selectList` into a state. */
export const loadStates = <R extends { readonly streamId: string }, S>(
  sql: SqlClient.SqlClient,
  schema: string,
  table: string,
  selectList: string,
  streamIds: ReadonlyArray<string>,
  fromRow: (row: R) => S
): Effect.Effect<Map<string, S>, SqlError> =>
  streamIds.length === 0
    ? Effect.succeed(new Map())
    : sql<R>`SELECT ${sql.literal(selectList)} FROM ${sql(`${schema}.${table}`)}
        WHERE stream_id IN (SELECT jsonb_array_elements_text(${JSON.stringify(streamIds)}::jsonb))`.pipe(
        Effect.map((rows) => new Map(rows.map((r) => [r.streamId, fromRow(r)])))
      )

/** Writes whole states, replacing the row of each stream. */
export const upsertStates = <S>(
  sql: SqlClient.SqlClient,
  schema: string,
  table: string,
  columns: ReadonlyArray<Column<S>>,
  states: ReadonlyArray<S>
): Effect.Effect<void, SqlError> => upsertReplace(sql, qualify(schema, table), ["stream_id"], columns, states)
