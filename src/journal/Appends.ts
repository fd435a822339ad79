/**
 * The appends: events onto the writer's bounded queue. A full queue suspends the caller
 * (back-pressure); nothing is dropped — unless Postgres and the spill both refuse writes, when a
 * full queue drops (counted, LostEvents.ts) rather than hang requests. `appendDurable` /
 * `appendPersisted` / `flush` enqueue a marker behind the events and wait for the writer to pass
 * it: since the queue is FIFO, everything enqueued before the marker is committed when it resolves.
 */
import { Deferred, Effect, Exit, Option, Queue } from "effect"
import { type JournalEvent, JournalError } from "./JournalEvent.ts"
import type { JournalState } from "./JournalState.ts"
import type { LostEvents } from "./LostEvents.ts"
import type { Item, Marker } from "./QueueItem.ts"
import { invalidEvent, prepare, prepareAll } from "./Row.ts"

const isEvent = (value: JournalEvent | Iterable<JournalEvent>): value is JournalEvent =>
  typeof (value as JournalEvent).streamId === "string" && !(Symbol.iterator in (value as object))

const unavailableError = new JournalError({ reason: "the journal is unavailable (neither Postgres nor the spill takes writes)" })
const closedError = () => new JournalError({ reason: "the journal is closed" })

export const makeAppends = (
  capacity: number,
  queue: Queue.Queue<Item>,
  state: JournalState,
  { drop, closedWarning }: LostEvents,
  /** Ends the writer's linger: somebody waits for the batch. */
  waitedFor: Effect.Effect<void>
) => {
  const { openRuns, unavailableLatch } = state

  /**
   * Enqueues items (`events` of them rows); a full queue waits for room (back-pressure) unless, or
   * until, the journal is unavailable: then what did not fit is dropped and counted rather than hang
   * its request, and its markers fail.
   */
  const enqueue = (items: ReadonlyArray<Item>, events: number): Effect.Effect<void> => {
    // Room for all of them (the usual case): no waiting, no race.
    if (Option.getOrElse(queue.unsafeSize(), () => capacity) + items.length <= capacity) {
      return Effect.map(Queue.offerAll(queue, items), () => {
        state.offered += events
      })
    }
    // One at a time, so that what is dropped is exactly what was not enqueued.
    return Effect.gen(function*() {
      for (let i = 0; i < items.length; i++) {
        const item = items[i]!
        // Room now: in it goes (the latch may be open as well; room wins).
        const put = Queue.unsafeOffer(queue, item) ||
          (yield* Effect.raceFirst(Effect.as(Queue.offer(queue, item), true), Effect.as(unavailableLatch.await, false)))
        if (put) {
          if (item._tag === "Row") state.offered++
          continue
        }
        const rest = items.slice(i)
        for (const left of rest) {
          if (left._tag === "Marker") Deferred.unsafeDone(left.done, Exit.fail(unavailableError))
        }
        return yield* drop(rest.filter((left) => left._tag === "Row").length)
      }
    })
  }

  const append = (event: JournalEvent): Effect.Effect<void> =>
    Effect.suspend(() => {
      if (state.closed) return closedWarning(1)
      const row = prepare(event)
      if (row._tag !== "Row") return invalidEvent(row)
      openRuns.note(event)
      // Room in the queue (the usual case): enqueued in this step. Full: wait for room (back-pressure).
      if (Queue.unsafeOffer(queue, row)) {
        state.offered++
        return Effect.void
      }
      return enqueue([row], 1)
    })

  const appendAll = (events: Iterable<JournalEvent>): Effect.Effect<void> =>
    Effect.suspend(() => {
      const list = Array.from(events)
      if (list.length === 0) return Effect.void
      if (state.closed) return closedWarning(list.length)
      const rows = prepareAll(list)
      if (!Array.isArray(rows)) return invalidEvent(rows)
      for (const event of list) openRuns.note(event)
      return enqueue(rows, rows.length)
    })

  const appendMarked = (events: JournalEvent | Iterable<JournalEvent>, level: Marker["level"]): Effect.Effect<void, JournalError> =>
    Effect.suspend(() => {
      const list: Array<JournalEvent> = isEvent(events) ? [events] : Array.from(events)
      if (state.closed) return Effect.fail(closedError())
      const rows = prepareAll(list)
      if (!Array.isArray(rows)) return invalidEvent(rows)
      for (const event of list) openRuns.note(event)
      return Effect.flatMap(Deferred.make<void, JournalError>(), (done) =>
        enqueue([...rows, { _tag: "Marker", done, level } satisfies Marker], rows.length).pipe(
          Effect.zipRight(waitedFor),
          Effect.zipRight(Deferred.await(done))
        ))
    })

  const flush: Effect.Effect<void> = Effect.suspend(() => {
    if (state.closed) return Effect.void
    return Effect.flatMap(Deferred.make<void, JournalError>(), (done) =>
      enqueue([{ _tag: "Marker", done, level: "commit" } satisfies Marker], 0).pipe(
        Effect.zipRight(waitedFor),
        Effect.zipRight(Deferred.await(done)),
        // Fails only when a shutdown timed out, which is logged with the count of lost events.
        Effect.ignore
      ))
  })

  return {
    append,
    appendAll,
    /** Resolved once committed to Postgres; fails while degraded (money needs Postgres: fail closed). */
    appendDurable: (events: JournalEvent | Iterable<JournalEvent>) => appendMarked(events, "commit"),
    /** Resolved once committed or fsync'd to the spill (a run's end, `server.durableRunEnd`). */
    appendPersisted: (events: JournalEvent | Iterable<JournalEvent>) => appendMarked(events, "disk"),
    flush
  } as const
}
