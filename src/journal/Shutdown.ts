/**
 * Closing the journal (its scope's finalizer): ends the synchronous runs still open (RunEnds.ts),
 * then drains the queue through the writer, bounded by `shutdownTimeout`; if that is not possible,
 * logs how many events were NOT written (counted as lost) and fails the pending durable waits.
 */
import { Chunk, Clock, Deferred, Duration, Effect, Exit, Fiber, Queue } from "effect"
import * as fs from "node:fs"
import { forgetFreshSpillDir, type JournalConfigShape } from "./JournalConfig.ts"
import { JournalError } from "./JournalEvent.ts"
import type { JournalState } from "./JournalState.ts"
import type { LostEvents } from "./LostEvents.ts"
import { type Item, STOP } from "./QueueItem.ts"
import { prepare, type Row } from "./Row.ts"
import { closingEvents } from "./RunEnds.ts"
import type { Spill } from "./Spill.ts"

export interface ShutdownParts {
  readonly config: JournalConfigShape
  readonly batchSize: number
  readonly queue: Queue.Queue<Item>
  readonly state: JournalState
  readonly spill: Spill
  readonly lost: LostEvents
  /** The writer fiber (GroupCommit.ts), its batch step and its linger's end. */
  readonly writer: Fiber.RuntimeFiber<void>
  readonly processBatch: (items: ReadonlyArray<Item>) => Effect.Effect<boolean>
  readonly waitedFor: Effect.Effect<void>
}

/** Everything still in the queue (including offers suspended by back-pressure). */
const takeRemaining = (queue: Queue.Queue<Item>) =>
  Effect.gen(function*() {
    const all: Array<Item> = []
    while (true) {
      const chunk = yield* Queue.takeAll(queue)
      if (Chunk.isEmpty(chunk)) return all
      for (const item of chunk) all.push(item)
    }
  })

/**
 * The synchronous runs still open when the journal closes (what the lanes could not end: the
 * process is going away) end here, so that no run stream of a stopped gateway stays open.
 */
const endOpenRuns = (state: JournalState, queue: Queue.Queue<Item>) =>
  Effect.gen(function*() {
    const open = state.openRuns.drain()
    if (open.length === 0) return
    const now = yield* Clock.currentTimeMillis
    const rows: Array<Row> = []
    for (const run of open) {
      for (const events of closingEvents(run, now, { status: 503, error: "ShuttingDown", message: "the gateway shut down before the run ended", shutdown: true })) {
        const row = prepare(events)
        if (row._tag === "Row") rows.push(row)
      }
    }
    state.offered += rows.length
    yield* Queue.offerAll(queue, rows)
    yield* Effect.logWarning(`Journal: ${open.length} run(s) still open at shutdown ended with RunFailed (ShuttingDown)`)
  })

/** Ends the open runs, stops the writer behind everything queued, and writes what came after the stop. */
const drain = ({ batchSize, queue, state, writer, processBatch, waitedFor }: ShutdownParts) =>
  Effect.gen(function*() {
    yield* endOpenRuns(state, queue)
    yield* Queue.offer(queue, STOP)
    yield* waitedFor
    yield* Fiber.join(writer)
    // Offers that passed the `closed` check just before it was set may sit behind STOP.
    const rest = yield* takeRemaining(queue)
    for (let i = 0; i < rest.length; i += batchSize) {
      yield* processBatch(rest.slice(i, i + batchSize))
    }
  })

/** The drain timed out: what is left is counted as lost and its durable waits fail. */
const abandon = ({ config, queue, state, writer }: ShutdownParts) =>
  Effect.gen(function*() {
    yield* Fiber.interrupt(writer).pipe(Effect.timeout(Duration.seconds(2)), Effect.ignore)
    const left = [...state.inFlight, ...(yield* takeRemaining(queue))]
    state.inFlight = []
    let unwritten = 0
    const failure = new JournalError({
      reason: `the journal closed before these events were committed (shutdown timeout ${
        Duration.format(config.shutdownTimeout)
      })`
    })
    for (const item of left) {
      if (item._tag === "Row") unwritten++
      else if (item._tag === "Marker") Deferred.unsafeDone(item.done, Exit.fail(failure))
    }
    state.lost.shutdown += unwritten
    yield* Effect.logError(
      `Journal: shutdown could not drain the queue within ${Duration.format(config.shutdownTimeout)}: ` +
        `${unwritten} events were NOT written to step_journal`
    )
  })

/** The journal's finalizer. */
export const shutdown = (parts: ShutdownParts): Effect.Effect<void> =>
  Effect.gen(function*() {
    const { config, queue, state, spill, lost } = parts
    state.closed = true
    const drained = yield* drain(parts).pipe(Effect.interruptible, Effect.timeout(config.shutdownTimeout), Effect.exit)
    yield* lost.logDropped
    if (Exit.isSuccess(drained)) {
      yield* Effect.logDebug(`Journal: closed; ${state.written} events written in total`)
      if (forgetFreshSpillDir(config.spillDir) && !spill.pending) {
        yield* Effect.sync(() => fs.rmSync(config.spillDir, { recursive: true, force: true })).pipe(Effect.ignore)
      }
    } else {
      yield* abandon(parts)
    }
    yield* Queue.shutdown(queue)
  })
