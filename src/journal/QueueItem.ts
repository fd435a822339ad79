/**
 * What the writer's queue holds: rows, and the markers and the stop that travel behind them. The
 * queue is FIFO, so a marker resolves once everything enqueued before it is committed.
 */
import type { Deferred } from "effect"
import type { JournalError } from "./JournalEvent.ts"
import type { Row } from "./Row.ts"

/** Resolved once every item before it in the queue is committed. */
export interface Marker {
  readonly _tag: "Marker"
  readonly done: Deferred.Deferred<void, JournalError>
  /** commit: resolved once committed to Postgres (fails while degraded); disk: committed or fsync'd to the spill. */
  readonly level: "commit" | "disk"
}

/** Put on the queue by the finalizer: the writer stops after it. */
export interface Stop {
  readonly _tag: "Stop"
}

export type Item = Row | Marker | Stop

export const STOP: Stop = { _tag: "Stop" }
