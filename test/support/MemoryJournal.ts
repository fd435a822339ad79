/**
 * The Journal service backed by an array, for tests of routing decisions that need no Postgres: every
 * append is "committed" at once (in order, numbered like `global_position`), reads see it at once.
 * It keeps whatever rows it is given (`JournalEvent`), so it follows the service's row shape.
 *
 *   const journal = yield* makeMemoryJournal   // or Layer: MemoryJournalLive
 *   yield* journal.readStream("host-gcp-a")
 */
import { Effect, Layer } from "effect"
import { Journal, type JournalEvent, type JournalStats, type StoredEvent } from "../../src/journal/Journal.ts"

export interface MemoryJournal extends Journal {
  /** Every event appended so far, in append order. */
  readonly events: () => ReadonlyArray<StoredEvent>
}

export const makeMemoryJournal: Effect.Effect<MemoryJournal> = Effect.sync(() => {
  const stored: Array<StoredEvent> = []
  const write = (events: Iterable<JournalEvent>) =>
    Effect.sync(() => {
      for (const event of events) stored.push({ ...event, globalPosition: stored.length + 1, recordedAt: event.occurredAt })
    })
  const one = (events: JournalEvent | Iterable<JournalEvent>): Iterable<JournalEvent> =>
    Symbol.iterator in (events as object) ? (events as Iterable<JournalEvent>) : [events as JournalEvent]
  const stats: JournalStats = {
    queued: 0, degraded: false, unavailable: false, spillFailing: false, spilled: 0, written: 0, batches: 0, retries: 0,
    lost: { dropped: 0, torn: 0, shutdown: 0 }, openRuns: 0
  }
  const journal = Journal.make({
    instance: crypto.randomUUID(),
    append: (event) => write([event]),
    appendAll: write,
    appendDurable: (events) => write(one(events)),
    appendPersisted: (events) => write(one(events)),
    flush: Effect.void,
    unavailable: () => false,
    degraded: () => false,
    streamHead: (streamId) =>
      Effect.sync(() => stored.reduce((head, e) => (e.streamId === streamId ? Math.max(head, e.streamPosition + 1) : head), 0)),
    readStream: (streamId) => Effect.sync(() => stored.filter((e) => e.streamId === streamId)),
    readTrace: (traceId) => Effect.sync(() => stored.filter((e) => e.traceId === traceId)),
    stats: Effect.sync(() => ({ ...stats, written: stored.length }))
  })
  return Object.assign(journal, { events: () => [...stored] })
})

export const MemoryJournalLive: Layer.Layer<Journal> = Layer.effect(Journal, makeMemoryJournal)
