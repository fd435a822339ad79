/**
 * Writing journal rows straight into `step_journal` (no Journal writer): for projection tests that
 * need to control transactions and positions exactly.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect } from "effect"

export interface Row {
  readonly streamId: string
  readonly streamPosition: number
  readonly type: string
  readonly data: unknown
  readonly occurredAt: number
  readonly traceId?: string | null
  readonly projectId?: string | null
  readonly lane?: string | null
}

/** One INSERT (one transaction unless the caller is in one). */
export const insertRows = (rows: ReadonlyArray<Row>) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    rows.length === 0 ? Effect.void : sql`
      INSERT INTO step_journal (stream_id, stream_position, trace_id, project_id, lane, type, data, occurred_at)
      SELECT "streamId", "streamPosition", "traceId", "projectId", lane, type, data::jsonb, to_timestamp("occurredAt" / 1000.0)
      FROM jsonb_to_recordset(${
      JSON.stringify(rows.map((r) => ({ traceId: null, projectId: null, lane: null, ...r, data: JSON.stringify(r.data ?? null) })))
    }::jsonb) AS r("streamId" text, "streamPosition" integer, "traceId" text, "projectId" text, lane text, type text,
        data text, "occurredAt" float8)`.pipe(Effect.asVoid))

/** Empties the journal, the archive, the projections and the checkpoints. */
export const resetJournal = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  sql`TRUNCATE step_journal, step_journal_archive, run_state, host_state, cost_ledger, metrics, projector_checkpoints`.pipe(
    Effect.asVoid
  ))
