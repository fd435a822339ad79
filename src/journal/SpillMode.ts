/**
 * Postgres or the spill: where the writer puts a batch.
 *
 * While Postgres takes writes, batches go straight in. The first failed write — or one that takes
 * longer than `writeTimeout` — switches to spill mode: that batch and every later one is fsync'd
 * to local segment files, so the request path never waits on a dead or black-holed database and
 * nothing is dropped. The timed-out write is left to finish (or be cancelled) in the background:
 * @effect/sql-pg cancels through the same pool, with its own 5 s timeout, and the writer must not
 * wait for that. A replayer fiber of its own (SpillReplay.ts; the writer keeps spilling meanwhile)
 * puts the segments into Postgres, oldest first; once none is left, the writer writes directly
 * again. Per-stream order holds because nothing is written directly while segments are pending.
 *
 * When the spill refuses too (a full disk), the writer holds the batch and keeps trying both
 * stores — Postgres as soon as the spill is empty, the spill again after a pause — while the
 * journal is `unavailable`: new runs are refused (503) instead of piling up behind it, and an
 * append that finds the queue full drops its events with an ERROR naming how many (and counts
 * them, LostEvents.ts) rather than hang its request.
 *
 * Durable appends (money) need Postgres: they fail while spilling, so they fail closed.
 * Persisted appends (a run's end, `server.durableRunEnd`) are satisfied by the fsync'd spill.
 */
import { Duration, Effect } from "effect"
import type { JournalConfigShape } from "./JournalConfig.ts"
import { JournalError } from "./JournalEvent.ts"
import type { JournalState } from "./JournalState.ts"
import type { PostgresWriter } from "./PostgresWriter.ts"
import type { Row } from "./Row.ts"
import type { Spill } from "./Spill.ts"

export const makeSpillMode = (config: JournalConfigShape, state: JournalState, spill: Spill, { insertTimed }: PostgresWriter) => {
  const spillRows = (rows: ReadonlyArray<Row>) =>
    Effect.try({
      try: () => {
        spill.append(rows)
        state.spilledRows += rows.length
      },
      catch: (cause) => new JournalError({ reason: `cannot write the spill in ${config.spillDir}`, cause })
    }).pipe(Effect.either)

  /**
   * Puts rows in Postgres, or else in the spill: "committed" or "spilled". When neither takes them,
   * keeps them and tries both again (with back-off) until one does.
   */
  const persist = (rows: ReadonlyArray<Row>): Effect.Effect<"committed" | "spilled"> =>
    Effect.gen(function*() {
      let pause = Duration.toMillis(config.retryBase)
      while (true) {
        if (!state.failing) {
          const result = yield* insertTimed(rows)
          if (result._tag === "Right") {
            state.written += rows.length
            state.batches++
            return "committed"
          }
          state.retries++
          yield* state.setFailing(true)
          yield* Effect.logWarning(`Journal: writing ${rows.length} events failed; spilling to ${config.spillDir} until Postgres is back`, result.left)
        }
        const spilled = yield* spillRows(rows)
        if (spilled._tag === "Right") {
          if (state.spillFailing) {
            yield* state.setSpillFailing(false)
            yield* Effect.logWarning(`Journal: the spill in ${config.spillDir} takes writes again`)
          }
          return "spilled"
        }
        if (!state.spillFailing) {
          yield* state.setSpillFailing(true)
          yield* Effect.logError(
            `Journal: UNAVAILABLE — Postgres and the spill in ${config.spillDir} both refuse writes; holding ${rows.length} events ` +
              `and retrying both; new runs are refused (503) until one takes writes`,
            spilled.left
          )
        }
        state.retries++
        yield* Effect.sleep(pause)
        pause = Math.min(pause * 2, Duration.toMillis(config.retryCap))
      }
    })

  return { persist } as const
}
