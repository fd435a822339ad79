/**
 * Events the journal could not keep, counted by why (`lost` in the stats, the
 * awooop_journal_events_lost_total metric) and logged at ERROR with how many:
 * - dropped: Postgres and the spill both refuse writes and the queue is full, so an append drops
 *   its events rather than hang its request (logged at most once a second while it lasts; the
 *   replayer and the shutdown log what is left);
 * - torn: lines of a spill segment cut by a process killed mid-write;
 * - shutdown: appended after the journal closed, or not drained within the shutdown timeout.
 */
import { Clock, Effect } from "effect"
import type { JournalState } from "./JournalState.ts"
import type { Spill } from "./Spill.ts"

export const makeLostEvents = (state: JournalState, spillDir: string) => {
  const lost = state.lost
  let droppedUnlogged = 0
  let lastDropLogAt = 0

  const logDropped = Effect.suspend(() => {
    if (droppedUnlogged === 0) return Effect.void
    const n = droppedUnlogged
    droppedUnlogged = 0
    return Effect.logError(
      `Journal: ${n} event(s) DROPPED (${lost.dropped} since start): neither Postgres nor the spill in ${spillDir} ` +
        `takes writes and the queue is full; awooop_journal_events_lost_total counts them`
    )
  })

  const drop = (n: number) =>
    Effect.suspend(() => {
      lost.dropped += n
      droppedUnlogged += n
      // At most one line a second while it lasts (the replayer and the shutdown log what is left).
      return Effect.flatMap(Clock.currentTimeMillis, (now) => {
        if (now - lastDropLogAt < 1_000) return Effect.void
        lastDropLogAt = now
        return logDropped
      })
    })

  /** Lines of a segment that are not rows: a process killed mid-write. Reported and counted. */
  const reportTorn = (segment: string, torn: ReturnType<Spill["read"]>["torn"]) =>
    Effect.suspend(() => {
      if (torn.length === 0) return Effect.void
      lost.torn += torn.length
      return Effect.logError(
        `Journal: spill segment ${segment} has ${torn.length} torn line(s) (${
          torn.map((t) => `line ${t.line}, ${t.bytes} bytes${t.last ? ", the last" : ""}`).join("; ")
        }): ${torn.length} event(s) LOST (a process died while writing them); the rest is replayed`
      )
    })

  const closedWarning = (n: number) =>
    Effect.suspend(() => {
      lost.shutdown += n
      return Effect.logError(`Journal: ${n} event(s) appended after the journal closed; NOT written (${lost.shutdown} lost at shutdown)`)
    })

  return { logDropped, drop, reportTorn, closedWarning } as const
}

export type LostEvents = ReturnType<typeof makeLostEvents>
