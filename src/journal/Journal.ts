/**
 * The journal: every routing step goes through here into `step_journal`. This file puts the
 * service together; each part is a file of its own:
 *
 * - Appends.ts: `append` / `appendAll` put events on a bounded in-memory queue. A full queue
 *   suspends the caller (back-pressure); nothing is dropped — unless Postgres and the spill both
 *   refuse writes, when a full queue drops (counted in `lost`, logged at ERROR with the count,
 *   LostEvents.ts) rather than hang requests. `appendDurable` / `flush` enqueue a marker behind the
 *   events and wait for the writer to pass it: since the queue is FIFO, everything enqueued before
 *   the marker is committed when it resolves.
 * - GroupCommit.ts: one writer fiber takes up to `batchSize` queued items at a time (waiting up to
 *   `linger` for a batch to fill) and commits them as ONE `INSERT … SELECT … FROM
 *   jsonb_to_recordset($1) ON CONFLICT (stream_id, stream_position) DO NOTHING` (group commit;
 *   re-delivering an event is a no-op), through the `step_journal_append` function
 *   (PostgresWriter.ts; migrations/008: planned once per connection, and without the ON CONFLICT's
 *   per-row cost unless the batch does hold an event already stored).
 * - SpillMode.ts, SpillReplay.ts: a failing (or too slow) database switches the writer to the local
 *   spill (Spill.ts): batches are fsync'd to segment files and replayed into Postgres, in order, by
 *   a replayer fiber once it takes writes again; a spill left by a killed process is replayed at
 *   start-up. Durable appends fail while degraded; persisted appends (`appendPersisted`) are
 *   satisfied by the spill.
 * - Shutdown.ts: closing the service's scope ends the synchronous runs still open (RunEnds.ts), then
 *   drains the queue (bounded by `shutdownTimeout`); if that is not possible, it logs how many
 *   events were NOT written and fails the pending durable waits.
 * - Row.ts: events are serialised when they are appended (a snapshot); input that could never be
 *   stored is a defect at the call site rather than wedging the writer.
 * - Reads.ts: a stream's head, a stream, a trace.
 * - JournalState.ts: the counters and modes the parts share (`stats`).
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Queue } from "effect"
import { makeAppends } from "./Appends.ts"
import { makeGroupCommit } from "./GroupCommit.ts"
import { JournalConfig, withOwnSpillDir } from "./JournalConfig.ts"
import { JournalState } from "./JournalState.ts"
import { makeLostEvents } from "./LostEvents.ts"
import { makePostgresWriter } from "./PostgresWriter.ts"
import type { Item } from "./QueueItem.ts"
import { makeReads } from "./Reads.ts"
import { OpenRuns } from "./RunEnds.ts"
import { shutdown } from "./Shutdown.ts"
import { Spill } from "./Spill.ts"
import { makeSpillMode } from "./SpillMode.ts"
import { makeSpillReplay } from "./SpillReplay.ts"

export {
  JournalConfig,
  journalConfigDefaults,
  JournalConfigFromEnv,
  journalConfigLayer,
  type JournalConfigShape
} from "./JournalConfig.ts"
export { JournalError, type JournalEvent, type StoredEvent } from "./JournalEvent.ts"
export type { JournalStats } from "./JournalState.ts"
export { closingEvents, type ClosingFields } from "./RunEnds.ts"

const make = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const config = withOwnSpillDir(yield* JournalConfig)
  const batchSize = Math.max(1, Math.floor(config.batchSize))
  const capacity = Math.max(1, Math.floor(config.capacity))
  const queue = yield* Queue.bounded<Item>(capacity)
  const state = new JournalState(yield* Effect.makeLatch(false), new OpenRuns())
  const lost = makeLostEvents(state, config.spillDir)
  const spill = new Spill(config.spillDir)
  const postgres = makePostgresWriter(sql, config.writeTimeout)
  const { persist } = makeSpillMode(config, state, spill, postgres)
  const { replayEarlierRun, replayer } = makeSpillReplay(config, batchSize, state, spill, lost, postgres)

  yield* replayEarlierRun
  yield* Effect.forkScoped(replayer)

  const { writerLoop, processBatch, waitedFor } = makeGroupCommit(config, batchSize, queue, state, persist)
  const writer = yield* Effect.forkScoped(writerLoop)
  yield* Effect.addFinalizer(() => shutdown({ config, batchSize, queue, state, spill, lost, writer, processBatch, waitedFor }))

  return {
    /** This journal's (this process's) instance id: recorded on RunStarted, see Orphans.ts. */
    instance: crypto.randomUUID(),
    ...makeAppends(capacity, queue, state, lost, waitedFor),
    /** True while neither Postgres nor the spill takes writes: new runs are refused (503). */
    unavailable: state.isUnavailable,
    /** True while Postgres does not take writes (events spill). */
    degraded: () => state.failing,
    ...makeReads(sql),
    stats: Effect.sync(() => state.stats())
  } as const
})

export class Journal extends Effect.Service<Journal>()("awooop/Journal", {
  scoped: make,
  dependencies: []
}) {}
