/**
 * Batch writes of projection rows: one `INSERT … SELECT FROM unnest($1::text[], $2::text[], …)`
 * per batch (CONVENTIONS.md), one array parameter per column, each value cast to its column's
 * type in the SELECT. node-postgres turns a JS array into an array literal itself. Measured on
 * run_state's 35 columns: jsonb_to_recordset costs about twice as much per row, and typed arrays
 * (`$1::numeric[]`, `$2::jsonb[]`) about 10 % more than text arrays cast in the SELECT.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect } from "effect"

export interface Column<S> {
  readonly name: string
  /** The value's SQL type: text, integer, bigint, numeric, float8, boolean, jsonb. */
  readonly type: string
  readonly value: (row: S) => unknown
  /** How the value `v` (already of `type`) becomes the column's value (default: `v` itself). */
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

/** A value as its text form ("123", "0.30000000000000004", "true"); null stays null. */
const textOf = (v: unknown): string | null => (v === null || v === undefined ? null : String(v))

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
  const unnest = columns.map((_, i) => `$${i + 1}::text[]`).join(", ")
  const alias = columns.map((_, i) => `c${i}`).join(", ")
  const values = columns.map((c, i) => {
    const typed = c.type === "text" ? `u.c${i}` : `u.c${i}::${c.type}`
    return c.expr === undefined ? typed : c.expr(typed)
  }).join(", ")
  const keys = new Set(key)
  const set = columns.filter((c) => !keys.has(c.name)).map((c) => `${ident(c.name)} = EXCLUDED.${ident(c.name)}`).join(", ")
  const text = `INSERT INTO ${table} (${names}) SELECT ${values} FROM unnest(${unnest}) AS u(${alias})
    ON CONFLICT (${key.map(ident).join(", ")}) DO UPDATE SET ${set}`
  const params = columns.map((c) => rows.map((row) => textOf(c.value(row))))
  return Effect.asVoid(sql.unsafe(text, params))
}
