/**
 * Batch writes of projection rows: one `INSERT … SELECT FROM unnest($1::text[], $2::int[], …)`
 * per batch (CONVENTIONS.md), one array parameter per column. node-postgres turns a JS array
 * into an array literal itself. (jsonb_to_recordset was tried first: its per-field conversions
 * cost ten times more on wide rows.)
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect } from "effect"

export interface Column<S> {
  readonly name: string
  /** The array parameter's element type: text, integer, bigint, numeric, float8, boolean, jsonb. */
  readonly type: string
  readonly value: (row: S) => unknown
  /** How the unnested value `v` becomes the column's value (default: `v` itself). */
  readonly expr?: (v: string) => string
}

const ident = (name: string) => `"${name.replaceAll("\"", "\"\"")}"`

/** `schema.table`, quoted. */
export const qualify = (schema: string, table: string) => `${ident(schema)}.${ident(table)}`

/** epoch ms (float8) → timestamptz */
export const fromMillis = (v: string) => `to_timestamp(${v} / 1000.0)`

/** timestamptz → epoch ms, exactly as `fromMillis` stored it */
export const toMillis = (column: string) => `floor(extract(epoch FROM ${column}) * 1000)::float8`

/** JSON values travel as text and are cast (`jsonb[]` literals need no escaping of their own). */
export const jsonText = (v: unknown): string | null => (v === null || v === undefined ? null : JSON.stringify(v))

/** Inserts `rows`, replacing the whole row on a key conflict (the row is the state). */
export const upsertReplace = <S>(
  sql: SqlClient.SqlClient,
  table: string,
  key: ReadonlyArray<string>,
  columns: ReadonlyArray<Column<S>>,
  rows: ReadonlyArray<S>
): Effect.Effect<void, SqlError> => {
  if (rows.length === 0) return Effect.void
  const names = columns.map((c) => ident(c.name)).join(", ")
  const unnest = columns.map((c, i) => `$${i + 1}::${c.type}[]`).join(", ")
  const alias = columns.map((_, i) => `c${i}`).join(", ")
  const values = columns.map((c, i) => (c.expr ?? ((v: string) => v))(`u.c${i}`)).join(", ")
  const keys = new Set(key)
  const set = columns.filter((c) => !keys.has(c.name)).map((c) => `${ident(c.name)} = EXCLUDED.${ident(c.name)}`).join(", ")
  const text = `INSERT INTO ${table} (${names}) SELECT ${values} FROM unnest(${unnest}) AS u(${alias})
    ON CONFLICT (${key.map(ident).join(", ")}) DO UPDATE SET ${set}`
  const params = columns.map((c) => rows.map(c.value))
  return Effect.asVoid(sql.unsafe(text, params))
}
