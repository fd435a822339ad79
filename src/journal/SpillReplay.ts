/**
 * Replays the spill into Postgres, in order: segment by segment, oldest first, each in batches, with
 * re-delivery allowed (a crash mid-replay only means some rows are offered twice; the
 * (stream_id, stream_position) uniqueness makes that a no-op). A segment is removed once all of it
 * is in. Runs at start-up, for a spill an earlier (killed) process left, and in a fiber of its own
 * while the journal is degraded; when no segment is left the writer writes directly again
 * (SpillMode.ts).
 */
import { Duration, Effect } from "effect"
import type { JournalConfigShape } from "./JournalConfig.ts"
import type { JournalState } from "./JournalState.ts"
import type { LostEvents } from "./LostEvents.ts"
import type { PostgresWriter } from "./PostgresWriter.ts"
import type { Row } from "./Row.ts"
import type { Spill } from "./Spill.ts"

export const makeSpillReplay = (
  config: JournalConfigShape,
  batchSize: number,
  state: JournalState,
  spill: Spill,
  lost: LostEvents,
  { insertTimed }: PostgresWriter
) => {
  // The replayer is off the request path: its writes may take longer (a loaded database replaying a
  // big spill), and a retry racing the cancel of its predecessor only adds load.
  const replayTimeout = Duration.times(Duration.decode(config.writeTimeout), 3)

  /**
   * Replays spilled segments into Postgres; true when none is left. `inherited`: the segments are an
   * earlier process's (start-up), so their rows count as handed to this journal now; otherwise they
   * were counted when spilled. Either way `queued` (offered − written − spilled) stays exact.
   */
  const replaySpill = (inherited: boolean): Effect.Effect<boolean> => Effect.gen(function*() {
    spill.seal()
    for (const segment of spill.segments()) {
      const read = spill.read(segment)
      const rows = read.rows.map((r): Row => ({ _tag: "Row", ...r }))
      for (let i = 0; i < rows.length; i += batchSize) {
        const result = yield* insertTimed(rows.slice(i, i + batchSize), replayTimeout, true)
        if (result._tag === "Left") return false
      }
      yield* lost.reportTorn(segment, read.torn)
      spill.remove(segment)
      if (inherited) state.offered += rows.length
      else state.spilledRows = Math.max(0, state.spilledRows - rows.length)
      state.written += rows.length
      if (rows.length > 0) state.batches++
    }
    return true
  })

  // Spilled events from an earlier run go in before anything new, so stream heads read at start-up
  // (host streams continue their positions) see them.
  const replayEarlierRun = Effect.gen(function*() {
    if (!spill.pending) return
    yield* Effect.logInfo(`Journal: replaying events spilled by an earlier run from ${config.spillDir}`)
    while (!(yield* replaySpill(true))) yield* Effect.sleep(config.retryCap)
  })

  /** While degraded: replay, and once nothing is left, let the writer write directly again. */
  const replayer = Effect.gen(function*() {
    while (true) {
      yield* Effect.sleep(state.failing ? config.retryBase : config.retryCap)
      yield* lost.logDropped
      if (!state.failing) continue
      if (!(yield* replaySpill(false))) {
        yield* Effect.sleep(config.retryCap)
        continue
      }
      // In one step with the check: the writer, which spills synchronously, cannot add a segment
      // between the two (one it added during the replay is replayed in the next round).
      const back = yield* Effect.sync(() => {
        if (spill.pending) return false
        state.spillReplayed()
        return true
      })
      if (back) yield* Effect.logInfo("Journal: Postgres accepts writes again; every spilled event is now in step_journal")
    }
  }).pipe(
    // It must outlive anything a round can throw (an unreadable spill folder, say).
    Effect.catchAllCause((cause) => Effect.zipRight(Effect.logError("Journal: the spill replayer failed; restarting it", cause), Effect.sleep(config.retryCap))),
    Effect.forever
  )

  return { replayEarlierRun, replayer } as const
}
