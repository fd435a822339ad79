/**
 * The journal's reads of the live table: a stream's head (the next position), a stream, a trace.
 * (History over the archive as well is projections/History.ts.)
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect } from "effect"
import type { EventKey } from "./EventRow.ts"
import { JournalError, type StoredEvent } from "./JournalEvent.ts"

interface StoredRow extends EventKey {
  readonly globalPosition: number
  readonly data: unknown
  readonly occurredAt: number
  readonly recordedAt: number
}

const toStored = (row: StoredRow): StoredEvent => ({
  globalPosition: row.globalPosition,
  streamId: row.streamId,
  streamPosition: row.streamPosition,
  traceId: row.traceId,
  projectId: row.projectId,
  lane: row.lane,
  type: row.type,
  data: row.data,
  occurredAt: row.occurredAt,
  recordedAt: row.recordedAt
})

/**
 * The streams of a trace, found by their first events: migrations/011 indexes trace ids at position 0
 * only (every row of a stream carries its stream's trace id). The archive is asked too, since it may
 * hold a stream's first event while the rest is live (`journal archive` keeps each stream's last).
 */
export const traceStreams = (sql: SqlClient.SqlClient, traceId: string) =>
  sql`SELECT stream_id FROM step_journal WHERE trace_id = ${traceId} AND stream_position = 0
    UNION SELECT stream_id FROM step_journal_archive WHERE trace_id = ${traceId}`

const readFailed = (what: string) => (cause: SqlError) => new JournalError({ reason: `cannot read ${what}`, cause })

export const makeReads = (sql: SqlClient.SqlClient) => {
  const streamHead = Effect.fn("Journal.streamHead")(function*(streamId: string) {
    const rows = yield* sql<{ readonly head: number }>`
      SELECT COALESCE(MAX(stream_position) + 1, 0)::int AS "head"
      FROM step_journal WHERE stream_id = ${streamId}`.pipe(Effect.mapError(readFailed(`the head of ${streamId}`)))
    return rows[0]?.head ?? 0
  })

  const selectStored = sql`
    SELECT global_position::float8 AS "globalPosition", stream_id AS "streamId",
      stream_position AS "streamPosition", trace_id AS "traceId", project_id AS "projectId", lane, type, data,
      floor(extract(epoch FROM occurred_at) * 1000)::float8 AS "occurredAt",
      floor(extract(epoch FROM recorded_at) * 1000)::float8 AS "recordedAt"
    FROM step_journal`

  const readStream = Effect.fn("Journal.readStream")(function*(streamId: string) {
    const rows = yield* sql<StoredRow>`${selectStored} WHERE stream_id = ${streamId} ORDER BY global_position`.pipe(
      Effect.mapError(readFailed(`stream ${streamId}`))
    )
    return rows.map(toStored)
  })

  const readTrace = Effect.fn("Journal.readTrace")(function*(traceId: string) {
    const rows = yield* sql<StoredRow>`${selectStored} WHERE trace_id = ${traceId} AND stream_id IN (${traceStreams(sql, traceId)})
      ORDER BY global_position`.pipe(
      Effect.mapError(readFailed(`trace ${traceId}`))
    )
    return rows.map(toStored)
  })

  return {
    streamHead: (streamId: string): Effect.Effect<number, JournalError> => streamHead(streamId),
    readStream: (streamId: string): Effect.Effect<ReadonlyArray<StoredEvent>, JournalError> => readStream(streamId),
    readTrace: (traceId: string): Effect.Effect<ReadonlyArray<StoredEvent>, JournalError> => readTrace(traceId)
  } as const
}
