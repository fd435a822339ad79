/**
 * The writer fiber: takes up to `batchSize` queued items at a time, waits up to `linger` for a batch
 * to fill (group commit: one INSERT and commit for many requests' events), persists the rows
 * (SpillMode.ts) and resolves the markers behind them. Somebody waiting for the batch (a durable
 * append, a flush, the shutdown) ends the linger at once.
 */
import { Chunk, Deferred, Duration, Effect, Exit, Queue } from "effect"
import { type JournalConfigShape, journalConfigDefaults } from "./JournalConfig.ts"
import { JournalError } from "./JournalEvent.ts"
import type { JournalState } from "./JournalState.ts"
import type { Item } from "./QueueItem.ts"
import type { Row } from "./Row.ts"

const degradedError = new JournalError({ reason: "the journal is degraded (Postgres unavailable; events spill to local disk)" })

export const makeGroupCommit = (
  config: JournalConfigShape,
  batchSize: number,
  queue: Queue.Queue<Item>,
  state: JournalState,
  persist: (rows: ReadonlyArray<Row>) => Effect.Effect<"committed" | "spilled">
) => {
  // A real timer, not the Effect Clock: batching is about wall-clock I/O, and a test's TestClock
  // must not hold the writer.
  const lingerMs = Duration.toMillis(config.linger ?? journalConfigDefaults.linger)
  // Somebody waiting for the batch (a durable append, a flush, the shutdown) ends the linger at once,
  // or, if the writer is not lingering yet (it may not have run since it was handed an event), keeps
  // the next one from starting.
  let endLinger: (() => void) | null = null
  let awaited = false
  const linger = Effect.async<void>((resume) => {
    const done = () => {
      endLinger = null
      clearTimeout(timer)
      resume(Effect.void)
    }
    const timer = setTimeout(done, lingerMs)
    endLinger = done
    return Effect.sync(() => {
      endLinger = null
      clearTimeout(timer)
    })
  })
  const waitedFor = Effect.sync(() => {
    if (endLinger !== null) endLinger()
    else awaited = true
  })

  /** Write one batch of items; resolve its markers. Returns whether it contained `Stop`. */
  const processBatch = (items: ReadonlyArray<Item>): Effect.Effect<boolean> =>
    Effect.gen(function*() {
      state.inFlight = items
      const rows: Array<Row> = []
      for (const item of items) if (item._tag === "Row") rows.push(item)
      const outcome = rows.length > 0 ? yield* persist(rows) : state.failing ? "spilled" : "committed"
      state.inFlight = []
      let stop = false
      for (const item of items) {
        if (item._tag === "Marker") {
          const ok = outcome === "committed" || item.level === "disk"
          Deferred.unsafeDone(item.done, ok ? Exit.void : Exit.fail(degradedError))
        } else if (item._tag === "Stop") stop = true
      }
      return stop
    })

  const writerLoop: Effect.Effect<void> = Effect.gen(function*() {
    while (true) {
      let items: ReadonlyArray<Item> = Chunk.toReadonlyArray(yield* Queue.takeBetween(queue, 1, batchSize))
      // Group commit: wait a moment for more, unless somebody waits for this batch or the writer stops.
      if (lingerMs > 0 && items.length < batchSize && items.every((item) => item._tag === "Row")) {
        if (awaited) awaited = false
        else {
          state.inFlight = items // held while lingering: a timed-out shutdown counts them as not written
          yield* linger
        }
        const more = yield* Queue.takeUpTo(queue, batchSize - items.length)
        if (more.length > 0) items = [...items, ...more]
      }
      const stop = yield* processBatch(items)
      if (stop) return
    }
  })

  return { writerLoop, processBatch, waitedFor } as const
}
