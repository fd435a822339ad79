/**
 * The journal's counters and modes, shared by its parts (the appends, the writer fiber, the spill
 * replayer, the shutdown): plain fields, only touched from synchronous sections, so the per-event
 * path pays a field update and nothing else.
 */
import { Effect } from "effect"
import type { Item } from "./QueueItem.ts"
import type { OpenRuns } from "./RunEnds.ts"

export interface JournalStats {
  /** events handed to the journal and not yet committed */
  readonly queued: number
  /** events committed (including re-deliveries that were no-ops) */
  readonly written: number
  /** INSERT statements committed */
  readonly batches: number
  /** failed INSERT attempts (each sent its batch to the spill) */
  readonly retries: number
  /** true while Postgres cannot take writes and batches go to the local spill */
  readonly degraded: boolean
  /** events in the local spill, not yet in Postgres */
  readonly spilled: number
  /** true while neither Postgres nor the spill takes writes: new runs are refused (503) */
  readonly unavailable: boolean
  /** true while writing the spill fails (a full disk, say) */
  readonly spillFailing: boolean
  /** events lost, by why: dropped (both stores refused, queue full), torn (a spill line cut by a crash), shutdown (not drained in time) */
  readonly lost: { readonly dropped: number; readonly torn: number; readonly shutdown: number }
  /** synchronous runs started and not ended, as this journal saw them */
  readonly openRuns: number
}

export class JournalState {
  /** events handed to the journal (`queued` is offered − written − spilled) */
  offered = 0
  written = 0
  batches = 0
  retries = 0
  /** Postgres does not take writes: batches go to the spill (`degraded`). */
  failing = false
  /** The spill does not take writes either. */
  spillFailing = false
  /** The journal's scope is closing: appends are refused. */
  closed = false
  /** events in the spill, not yet in Postgres */
  spilledRows = 0
  readonly lost = { dropped: 0, torn: 0, shutdown: 0 }
  /** The batch currently being written (kept so a timed-out shutdown can count it). */
  inFlight: ReadonlyArray<Item> = []

  constructor(
    /** Open while the journal is unavailable: a full queue then drops instead of waiting. */
    readonly unavailableLatch: Effect.Latch,
    readonly openRuns: OpenRuns
  ) {}

  /** Neither Postgres nor the spill takes writes: new runs are refused (503). */
  readonly isUnavailable = (): boolean => this.failing && this.spillFailing

  setFailing(on: boolean): Effect.Effect<void> {
    return Effect.sync(() => {
      this.failing = on
      this.syncLatch()
    })
  }

  setSpillFailing(on: boolean): Effect.Effect<void> {
    return Effect.sync(() => {
      this.spillFailing = on
      this.syncLatch()
    })
  }

  /** Every spilled event is in Postgres: the writer writes directly again. */
  spillReplayed(): void {
    this.spilledRows = 0
    this.failing = false
    this.spillFailing = false // the replayed segments are gone, and their room with them
    this.unavailableLatch.unsafeClose()
  }

  private syncLatch(): void {
    if (this.isUnavailable()) this.unavailableLatch.unsafeOpen()
    else this.unavailableLatch.unsafeClose()
  }

  stats(): JournalStats {
    return {
      queued: Math.max(0, this.offered - this.written - this.spilledRows),
      degraded: this.failing,
      unavailable: this.isUnavailable(),
      spillFailing: this.spillFailing,
      spilled: this.spilledRows,
      written: this.written,
      batches: this.batches,
      retries: this.retries,
      lost: { ...this.lost },
      openRuns: this.openRuns.size
    }
  }
}
