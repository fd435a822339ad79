/**
 * What the journal stores and gives back: an event as its writer hands it over, the same event as
 * read back from `step_journal`, and the journal's one error.
 */
import { Data } from "effect"

export interface JournalEvent {
  readonly streamId: string // "run-<uuid>", "host-<name>", ...
  readonly streamPosition: number // assigned by the caller (0-based within the stream)
  readonly type: string // "RunStarted", "RouteDecided", ...
  readonly traceId: string | null
  readonly projectId: string | null
  readonly lane: string | null
  readonly data: unknown // JSON-serialisable
  readonly occurredAt: number // epoch millis (read from effect Clock by the caller)
}

export interface StoredEvent extends JournalEvent {
  readonly globalPosition: number
  /** epoch millis (database clock, `now()` of the writing transaction) */
  readonly recordedAt: number
}

export class JournalError extends Data.TaggedError("JournalError")<{
  readonly reason: string
  readonly cause?: unknown
}> {}
