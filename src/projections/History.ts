/**
 * Reads of the journal's history for the audit and the read API: the live table and the archive
 * (`journal archive` moves old events there), as one. Every read here is an index lookup
 * (by trace, by stream and time), so it stays fast on a journal of millions of rows.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect } from "effect"
import { traceStreams } from "../journal/Reads.ts"
import type { ProjectionEvent } from "./Event.ts"

export interface HistoryEvent extends ProjectionEvent {
  /** epoch ms, the database's commit-time clock */
  readonly recordedAt: number
  readonly archived: boolean
}

const columns = (archived: boolean) => `global_position::float8 AS "globalPosition", transaction_id::text AS "transactionId",
  stream_id AS "streamId", stream_position AS "streamPosition", trace_id AS "traceId", project_id AS "projectId", lane,
  type, data, floor(extract(epoch FROM occurred_at) * 1000)::float8 AS "occurredAt",
  floor(extract(epoch FROM recorded_at) * 1000)::float8 AS "recordedAt", ${archived} AS archived`

/** Every event of a trace, in journal order (live rows through the trace's streams: Reads.traceStreams). */
export const traceEvents = (sql: SqlClient.SqlClient, traceId: string): Effect.Effect<ReadonlyArray<HistoryEvent>, SqlError> =>
  sql<HistoryEvent>`
    SELECT * FROM (
      SELECT ${sql.literal(columns(false))} FROM step_journal WHERE trace_id = ${traceId} AND stream_id IN (${traceStreams(sql, traceId)})
      UNION ALL
      SELECT ${sql.literal(columns(true))} FROM step_journal_archive WHERE trace_id = ${traceId}
    ) e ORDER BY "globalPosition"`

/** Every event of one stream, in stream order. */
export const streamEvents = (sql: SqlClient.SqlClient, streamId: string): Effect.Effect<ReadonlyArray<HistoryEvent>, SqlError> =>
  sql<HistoryEvent>`
    SELECT * FROM (
      SELECT ${sql.literal(columns(false))} FROM step_journal WHERE stream_id = ${streamId}
      UNION ALL
      SELECT ${sql.literal(columns(true))} FROM step_journal_archive WHERE stream_id = ${streamId}
    ) e ORDER BY "streamPosition"`

/** The first event of a stream (to find a run's trace). */
export const firstOfStream = (sql: SqlClient.SqlClient, streamId: string): Effect.Effect<HistoryEvent | null, SqlError> =>
  sql<HistoryEvent>`
    SELECT * FROM (
      (SELECT ${sql.literal(columns(false))} FROM step_journal WHERE stream_id = ${streamId} ORDER BY stream_position LIMIT 1)
      UNION ALL
      (SELECT ${sql.literal(columns(true))} FROM step_journal_archive WHERE stream_id = ${streamId}
        ORDER BY global_position LIMIT 1)
    ) e ORDER BY "streamPosition" LIMIT 1`.pipe(Effect.map((rows) => rows[0] ?? null))

const iso = (ms: number) => new Date(ms).toISOString()

/** Events of some host streams between two times, in time order (the time index covers host streams only). */
export const streamsBetween = (
  sql: SqlClient.SqlClient,
  streamIds: ReadonlyArray<string>,
  from: number,
  to: number,
  limit = 1_000
): Effect.Effect<ReadonlyArray<HistoryEvent>, SqlError> => {
  if (streamIds.length === 0) return Effect.succeed([])
  const ids = JSON.stringify(streamIds)
  return sql<HistoryEvent>`
    SELECT * FROM (
      SELECT ${sql.literal(columns(false))} FROM step_journal
      WHERE stream_id IN (SELECT jsonb_array_elements_text(${ids}::jsonb)) AND stream_id LIKE 'host-%'
        AND occurred_at BETWEEN ${iso(from)}::timestamptz AND ${iso(to)}::timestamptz
      UNION ALL
      SELECT ${sql.literal(columns(true))} FROM step_journal_archive
      WHERE stream_id IN (SELECT jsonb_array_elements_text(${ids}::jsonb)) AND stream_id LIKE 'host-%'
        AND occurred_at BETWEEN ${iso(from)}::timestamptz AND ${iso(to)}::timestamptz
    ) e ORDER BY "occurredAt", "globalPosition" LIMIT ${limit}`
}

/** For each host stream, its latest event of `type` at or before `at` (e.g. when a breaker opened). */
export const latestOfType = (
  sql: SqlClient.SqlClient,
  streamIds: ReadonlyArray<string>,
  type: string,
  at: number
): Effect.Effect<ReadonlyArray<HistoryEvent>, SqlError> => {
  if (streamIds.length === 0) return Effect.succeed([])
  return sql<HistoryEvent>`
    SELECT e.* FROM jsonb_array_elements_text(${JSON.stringify(streamIds)}::jsonb) AS h(stream)
    CROSS JOIN LATERAL (
      SELECT ${sql.literal(columns(false))} FROM step_journal
      WHERE stream_id = h.stream AND stream_id LIKE 'host-%' AND type = ${type} AND occurred_at <= ${iso(at)}::timestamptz
      ORDER BY occurred_at DESC LIMIT 1
    ) e`
}
