/**
 * A writer for a stream that several replicas append to (a host's stream: its owner's breaker and
 * maintenance, the poller singleton's health). Each position is taken from `stream_positions` in
 * Postgres, atomically, so two replicas never claim the same one (the journal keeps the first event
 * at a position and drops the second). One round trip per event: host events are rare, and the
 * single-runner gateway keeps the plain writer (journal/StreamWriter.ts).
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import { Clock, Effect, Schedule } from "effect"
import type { Journal } from "../journal/Journal.ts"
import type { AnyEvent } from "../domain/Events.ts"
import type { StreamBase, StreamWriter } from "../journal/StreamWriter.ts"

export const makeSharedStreamWriter = <E extends AnyEvent>(journal: Journal, sql: SqlClient.SqlClient, base: StreamBase): StreamWriter<E> => {
  let last = -1
  const take = Effect.flatMap(journal.streamHead(base.streamId), (head) =>
    sql<{ readonly position: string }>`
      INSERT INTO stream_positions (stream_id, next) VALUES (${base.streamId}, ${head} + 1)
      ON CONFLICT (stream_id) DO UPDATE SET next = greatest(stream_positions.next, ${head}) + 1
      RETURNING (next - 1)::text AS position`).pipe(
      Effect.map((rows) => Number(rows[0]!.position)),
      Effect.retry(Schedule.exponential("100 millis").pipe(Schedule.intersect(Schedule.recurs(4))))
    )
  const event = ({ _tag: type, ...data }: E) =>
    Effect.flatMap(take, (streamPosition) =>
      Effect.map(Clock.currentTimeMillis, (occurredAt) => {
        last = Math.max(last, streamPosition)
        return { streamId: base.streamId, streamPosition, type, traceId: base.traceId, projectId: base.projectId, lane: base.lane, data, occurredAt }
      }))
  return {
    streamId: base.streamId,
    append: (e) =>
      Effect.flatMap(event(e), journal.append).pipe(
        Effect.catchAll((error) => Effect.logError(`Journal: no position for ${e._tag} on ${base.streamId}; the event is lost`, error))
      ),
    appendDurable: (e) => Effect.flatMap(event(e), journal.appendDurable),
    position: () => last + 1,
    progress: () => ({ ended: false, openAttempts: [] })
  }
}
