/**
 * Appends the events of one journal stream (a run, a host) with consecutive positions. The writer
 * owns the position counter, so two events of a stream can never claim the same position.
 */
import { Effect } from "effect"
import { Journal, type JournalEvent } from "./Journal.ts"

export interface StreamBase {
  readonly streamId: string
  readonly traceId: string | null
  readonly projectId: string | null
  readonly lane: string | null
}

export interface StreamWriter {
  readonly streamId: string
  /** Queue an event for the group commit (off the request path). */
  readonly append: (type: string, data: unknown) => Effect.Effect<void>
  /** Append and wait until it is committed (before money is spent, say). */
  readonly appendDurable: (type: string, data: unknown) => Effect.Effect<void, unknown>
  /** The next position this writer will use. */
  readonly position: () => number
}

export const makeStreamWriter = (journal: Journal, base: StreamBase, startPosition = 0): StreamWriter => {
  let next = startPosition
  const event = (type: string, data: unknown, occurredAt: number): JournalEvent => ({
    streamId: base.streamId,
    streamPosition: next++,
    type,
    traceId: base.traceId,
    projectId: base.projectId,
    lane: base.lane,
    data,
    occurredAt
  })
  return {
    streamId: base.streamId,
    append: (type, data) => Effect.clockWith((clock) => journal.append(event(type, data, clock.unsafeCurrentTimeMillis()))),
    appendDurable: (type, data) => Effect.clockWith((clock) => journal.appendDurable(event(type, data, clock.unsafeCurrentTimeMillis()))),
    position: () => next
  }
}
