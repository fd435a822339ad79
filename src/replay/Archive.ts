/**
 * `journal archive --before <date>`: moves old events out of `step_journal` into
 * `step_journal_archive`, keeping the hot table (and its indexes) small without losing history.
 *
 * Why projections do not break:
 * - it refuses while any event older than the cutoff is not yet projected (past the live
 *   checkpoint), so the live projector never needs an archived event again;
 * - rebuild, verify and explain read the archive too, so a rebuild still equals the live tables;
 * - the last event of every stream stays in `step_journal`: writers take a stream's next
 *   position from it (`Journal.streamHead`), and the folds' per-stream positions stay consistent.
 * Everything happens in one transaction that holds the live checkpoint (FOR SHARE).
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Data, Effect } from "effect"
import { checkpointName, liveSchema, origin, readCheckpoint } from "../projections/Projector.ts"

export class ArchiveRefused extends Data.TaggedError("ArchiveRefused")<{ readonly reason: string }> {
  override get message() {
    return this.reason
  }
}

export interface ArchiveResult {
  readonly before: string
  readonly moved: number
  /** Older events left in place because they are the last of their stream. */
  readonly kept: number
  readonly dryRun: boolean
}

export const archive = (
  sql: SqlClient.SqlClient,
  before: Date,
  options: { readonly dryRun?: boolean | undefined } = {}
): Effect.Effect<ArchiveResult, SqlError | ArchiveRefused> =>
  sql.withTransaction(Effect.gen(function*() {
    const cutoff = before.toISOString()
    const at = (yield* readCheckpoint(sql, liveSchema, checkpointName, "share")) ?? origin
    const counts = yield* sql<{ readonly pending: number; readonly older: number; readonly last: number }>`
      SELECT
        count(*) FILTER (WHERE (transaction_id, global_position) > (${at.transactionId}::xid8, ${at.globalPosition}::bigint))::float8 AS pending,
        count(*)::float8 AS older,
        count(*) FILTER (WHERE stream_position = (SELECT max(s.stream_position) FROM step_journal s WHERE s.stream_id = j.stream_id))::float8 AS last
      FROM step_journal j WHERE occurred_at < ${cutoff}::timestamptz`
    const { pending, older, last } = counts[0]!
    if (pending > 0) {
      return yield* new ArchiveRefused({
        reason: `${pending} event(s) older than ${cutoff} are not projected yet (the projector's checkpoint is behind them); ` +
          `let the gateway's projector catch up (or run \`journal rebuild\`), then archive again`
      })
    }
    if (options.dryRun === true) return { before: cutoff, moved: older - last, kept: last, dryRun: true }
    const moved = yield* sql<{ readonly n: number }>`
      WITH moved AS (
        DELETE FROM step_journal j
        WHERE occurred_at < ${cutoff}::timestamptz
          AND (transaction_id, global_position) <= (${at.transactionId}::xid8, ${at.globalPosition}::bigint)
          AND stream_position < (SELECT max(s.stream_position) FROM step_journal s WHERE s.stream_id = j.stream_id)
        RETURNING global_position, stream_id, stream_position, trace_id, project_id, lane, type, data, occurred_at,
          recorded_at, transaction_id
      ), inserted AS (
        INSERT INTO step_journal_archive (global_position, stream_id, stream_position, trace_id, project_id, lane, type,
          data, occurred_at, recorded_at, transaction_id)
        SELECT * FROM moved
        RETURNING 1
      )
      SELECT count(*)::float8 AS n FROM inserted`
    return { before: cutoff, moved: moved[0]?.n ?? 0, kept: last, dryRun: false }
  }))
