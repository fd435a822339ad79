import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it, layer } from "@effect/vitest"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { JournalConfig, withOwnSpillDir } from "../src/journal/JournalConfig.ts"
import { Spill } from "../src/journal/Spill.ts"
import { Context, Deferred, Effect, Exit, Fiber, Layer, Logger, LogLevel, Option, Schedule, Scope } from "effect"
import { randomUUID } from "node:crypto"
import { rm } from "node:fs/promises"
import {
  Journal,
  journalConfigLayer,
  type JournalConfigShape,
  JournalError,
  type JournalEvent
} from "../src/journal/Journal.ts"
import { layerEmbedded } from "../src/storage/Database.ts"
import { applyMigrations, loadMigrations, runMigrations } from "../src/storage/Migrations.ts"
import { pgliteDataDir } from "./support/PgliteDataDir.ts"
import { layerTestDatabase, TestDatabaseLive } from "./support/TestDatabase.ts"

const T0 = 1_750_000_000_000

const event = (streamId: string, streamPosition: number, data: unknown = { n: streamPosition }): JournalEvent => ({
  streamId,
  streamPosition,
  // Not run events: a run stream the journal saw start would be ended by it at close (RunEnds.ts).
  type: streamPosition === 0 ? "StreamOpened" : "StepRecorded",
  traceId: `trace-${streamId}`,
  projectId: "proj-1",
  lane: "alert-fast",
  data,
  occurredAt: T0 + streamPosition
})

const newStream = () => `run-${randomUUID()}`

/** A Journal in the current scope (closing that scope closes the journal). */
const makeJournal = (config: Partial<JournalConfigShape> = {}) =>
  Layer.build(Journal.Default.pipe(Layer.provide(journalConfigLayer(config)))).pipe(
    Effect.map((context) => Context.get(context, Journal))
  )

/** Rows of `step_journal` for one stream, straight from the database. */
const dbRows = (streamId: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ readonly position: number; readonly data: unknown; readonly type: string }>`
      SELECT stream_position AS position, data, type FROM step_journal
      WHERE stream_id = ${streamId} ORDER BY stream_position`)

const countRows = (streamId: string) => Effect.map(dbRows(streamId), (rows) => rows.length)

/**
 * Hold `LOCK TABLE step_journal IN SHARE MODE` (reads pass, INSERTs wait) until the returned
 * effect is run.
 */
const lockJournalTable = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const locked = yield* Deferred.make<void>()
  const release = yield* Deferred.make<void>()
  const holder = yield* sql.withTransaction(
    sql`LOCK TABLE step_journal IN SHARE MODE`.pipe(
      Effect.zipRight(Deferred.succeed(locked, undefined)),
      Effect.zipRight(Deferred.await(release))
    )
  ).pipe(Effect.forkDaemon)
  yield* Deferred.await(locked)
  return Deferred.succeed(release, undefined).pipe(Effect.zipRight(Fiber.join(holder)), Effect.orDie)
})

const isRunning = <A, E>(fiber: Fiber.RuntimeFiber<A, E>) => Effect.map(Fiber.poll(fiber), Option.isNone)

layer(TestDatabaseLive, { excludeTestServices: true })("Journal on PostgreSQL", (it) => {
  it.scoped("appends from concurrent fibers are all committed exactly once, in batches", () =>
    Effect.gen(function*() {
      const journal = yield* makeJournal()
      const streams = Array.from({ length: 20 }, newStream)
      yield* Effect.forEach(
        streams,
        (stream, s) =>
          Effect.forEach(
            Array.from({ length: 100 }, (_, i) => i),
            (i) =>
              // mix single appends and small appendAll groups
              s % 2 === 0
                ? journal.append(event(stream, i))
                : i % 4 === 0
                ? journal.appendAll([0, 1, 2, 3].map((k) => event(stream, i + k)))
                : Effect.void,
            { discard: true }
          ),
        { concurrency: "unbounded", discard: true }
      )
      yield* journal.flush

      for (const stream of streams) {
        const rows = yield* dbRows(stream)
        assert.deepStrictEqual(rows.map((r) => r.position), Array.from({ length: 100 }, (_, i) => i))
        assert.deepStrictEqual(rows[42]!.data, { n: 42 })
      }
      const stats = yield* journal.stats
      assert.strictEqual(stats.written, 2000)
      assert.strictEqual(stats.queued, 0)
      assert.isBelow(stats.batches, 2000, "events are group-committed")

      const stored = yield* journal.readStream(streams[3]!)
      assert.strictEqual(stored.length, 100)
      assert.deepStrictEqual(stored.map((e) => e.streamPosition), Array.from({ length: 100 }, (_, i) => i))
      const first = stored[0]!
      assert.strictEqual(first.type, "StreamOpened")
      assert.strictEqual(first.traceId, `trace-${streams[3]}`)
      assert.strictEqual(first.lane, "alert-fast")
      assert.strictEqual(first.projectId, "proj-1")
      assert.strictEqual(first.occurredAt, T0)
      assert.strictEqual(typeof first.globalPosition, "number")
      assert.strictEqual(typeof first.recordedAt, "number")
      for (let i = 1; i < stored.length; i++) assert.isAbove(stored[i]!.globalPosition, stored[i - 1]!.globalPosition)

      const trace = yield* journal.readTrace(`trace-${streams[3]}`)
      assert.deepStrictEqual(trace, stored)
      assert.strictEqual(yield* journal.streamHead(streams[3]!), 100)
      assert.strictEqual(yield* journal.streamHead(newStream()), 0)
    }))

  it.scoped("re-appending the same (stream, position) is a no-op", () =>
    Effect.gen(function*() {
      const journal = yield* makeJournal()
      const stream = newStream()
      yield* journal.append(event(stream, 0, { v: 1 }))
      yield* journal.flush
      yield* journal.append(event(stream, 0, { v: 2 }))
      // duplicates inside one batch too
      yield* journal.appendAll([event(stream, 1, { v: 1 }), event(stream, 1, { v: 2 }), event(stream, 0, { v: 3 })])
      yield* journal.flush
      const rows = yield* dbRows(stream)
      assert.deepStrictEqual(rows.map((r) => [r.position, r.data]), [[0, { v: 1 }], [1, { v: 1 }]])
    }))

  it.scoped("appendDurable returns only once the row is committed and readable", () =>
    Effect.gen(function*() {
      const journal = yield* makeJournal()
      const stream = newStream()

      yield* journal.appendDurable(event(stream, 0))
      assert.strictEqual(yield* countRows(stream), 1)

      const unlock = yield* lockJournalTable
      const durable = yield* Effect.fork(journal.appendDurable([event(stream, 1), event(stream, 2)]))
      yield* Effect.sleep("300 millis")
      assert.isTrue(yield* isRunning(durable), "appendDurable waits while the INSERT cannot commit")
      assert.strictEqual(yield* countRows(stream), 1)
      yield* unlock
      yield* Fiber.join(durable)
      assert.strictEqual(yield* countRows(stream), 3)
    }))

  it.scoped("a full queue back-pressures the caller and loses nothing", () =>
    Effect.gen(function*() {
      const journal = yield* makeJournal({ capacity: 4, batchSize: 2 })
      const stream = newStream()
      const unlock = yield* lockJournalTable
      const producer = yield* Effect.fork(
        Effect.forEach(Array.from({ length: 50 }, (_, i) => i), (i) => journal.append(event(stream, i)), {
          discard: true
        })
      )
      yield* Effect.sleep("300 millis")
      assert.isTrue(yield* isRunning(producer), "the producer is suspended, not failed or finished")
      const blocked = yield* journal.stats
      assert.isAtMost(blocked.queued, 4 + 2, "at most capacity + one batch in flight")
      assert.strictEqual(blocked.written, 0)
      yield* unlock
      yield* Fiber.join(producer)
      yield* journal.flush
      assert.deepStrictEqual((yield* dbRows(stream)).map((r) => r.position), Array.from({ length: 50 }, (_, i) => i))
    }))

  it.scoped("a failing database sends batches to the local spill and replays them once it is back", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const journal = yield* makeJournal({ retryBase: "10 millis", retryCap: "50 millis" })
      const stream = newStream()
      yield* sql`ALTER TABLE step_journal RENAME TO step_journal_away`
      const restore = sql`ALTER TABLE step_journal_away RENAME TO step_journal`
      yield* Effect.gen(function*() {
        yield* journal.appendAll(Array.from({ length: 10 }, (_, i) => event(stream, i)))
        yield* Effect.sleep("300 millis")
        const during = yield* journal.stats
        assert.isTrue(during.degraded)
        assert.strictEqual(during.spilled, 10, "spilled, not queued: the request path does not wait")
        assert.strictEqual(during.queued, 0)
        // Money fails closed: a durable append cannot be confirmed while degraded.
        const durable = yield* journal.appendDurable(event(stream, 10)).pipe(Effect.either)
        assert.strictEqual(durable._tag, "Left")
      }).pipe(Effect.ensuring(Effect.orDie(restore)))
      // The writer replays on its own once Postgres is back.
      yield* Effect.gen(function*() {
        const stats = yield* journal.stats
        if (stats.degraded) return yield* Effect.fail("still degraded")
      }).pipe(Effect.retry(Schedule.spaced("50 millis").pipe(Schedule.upTo("10 seconds"))))
      assert.deepStrictEqual((yield* dbRows(stream)).map((r) => r.position), Array.from({ length: 11 }, (_, i) => i))
      assert.strictEqual((yield* journal.stats).spilled, 0)
    }))

  it.scoped("events spilled by a killed gateway are written at the next start, before anything new", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "awooop-spill-test-"))
      const stream = newStream()
      // What a SIGKILLed process leaves behind: fsync'd segments, the last line torn mid-write.
      const spill = new Spill(dir)
      spill.append(Array.from({ length: 3 }, (_, i) => ({
        streamId: stream, streamPosition: i, traceId: null, projectId: null, lane: null, type: "T", data: JSON.stringify({ n: i }), occurredAt: new Date().toISOString()
      })))
      spill.seal()
      fs.appendFileSync(path.join(dir, spill.segments()[0]!), '{"streamId":"torn')
      const journal = yield* makeJournal({ spillDir: dir })
      assert.deepStrictEqual((yield* dbRows(stream)).map((r) => r.position), [0, 1, 2], "replayed during start-up")
      assert.strictEqual(yield* journal.streamHead(stream), 3, "stream heads read at start-up see the replayed events")
      assert.deepStrictEqual(new Spill(dir).segments(), [], "the spill is gone once it is in Postgres")
    }))

  it.scoped("a durable append or a flush does not wait out the group-commit linger", () =>
    Effect.gen(function*() {
      const journal = yield* makeJournal({ linger: "30 seconds" })
      const stream = newStream()
      yield* journal.append(event(stream, 0)) // the writer now lingers with it
      const started = Date.now()
      yield* journal.appendDurable(event(stream, 1))
      assert.strictEqual(yield* countRows(stream), 2, "both committed when appendDurable returns")
      yield* journal.append(event(stream, 2))
      yield* journal.flush
      assert.strictEqual(yield* countRows(stream), 3)
      // Bounded far below the linger: a wait for it would take 30 s per step.
      assert.isBelow(Date.now() - started, 10_000)
    }))

  it.scoped("after a start-up replay, `queued` still counts the new events a lingering batch holds", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "awooop-spill-test-"))
      const spill = new Spill(dir)
      spill.append(Array.from({ length: 5 }, (_, i) => ({
        streamId: newStream(), streamPosition: 0, traceId: null, projectId: null, lane: null, type: "T", data: JSON.stringify({ n: i }), occurredAt: new Date().toISOString()
      })))
      spill.seal()
      // A long linger keeps the new events in the writer's hands while the stats are read.
      const journal = yield* makeJournal({ spillDir: dir, linger: "2 seconds" })
      const stream = newStream()
      yield* journal.appendAll([event(stream, 0), event(stream, 1)])
      const stats = yield* journal.stats
      assert.strictEqual(stats.written, 5, "the replayed events are written")
      assert.strictEqual(stats.queued, 2, "the new events are queued, not hidden by the replayed ones")
      yield* journal.flush
      assert.strictEqual((yield* journal.stats).queued, 0)
      assert.strictEqual(yield* countRows(stream), 2)
    }))

  it.effect("closing the journal's scope writes every pending event before it returns", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const journal = yield* makeJournal({ batchSize: 16 }).pipe(Scope.extend(scope))
      const stream = newStream()
      const unlock = yield* lockJournalTable
      yield* journal.appendAll(Array.from({ length: 1000 }, (_, i) => event(stream, i)))
      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      yield* Effect.sleep("200 millis")
      assert.isTrue(yield* isRunning(closing), "close waits for the pending events")
      yield* unlock
      yield* Fiber.join(closing)
      assert.strictEqual(yield* countRows(stream), 1000)
    }))

  it.effect("a shutdown that cannot drain in time says how many events were not written", () => {
    const logs: Array<string> = []
    const logger = Logger.make(({ logLevel, message }) => {
      logs.push(`${logLevel.label} ${Array.isArray(message) ? message.join(" ") : String(message)}`)
    })
    return Effect.gen(function*() {
      const scope = yield* Scope.make()
      const journal = yield* makeJournal({ shutdownTimeout: "300 millis" }).pipe(Scope.extend(scope))
      const stream = newStream()
      const unlock = yield* lockJournalTable
      const durable = yield* Effect.fork(journal.appendDurable(event(stream, 0)))
      yield* journal.appendAll([1, 2, 3, 4, 5].map((i) => event(stream, i)))
      yield* Effect.sleep("100 millis")
      assert.strictEqual((yield* journal.stats).queued, 6)
      assert.isTrue(yield* isRunning(durable))
      const started = Date.now()
      yield* Scope.close(scope, Exit.void)
      const took = Date.now() - started
      yield* unlock
      assert.isBelow(took, 5_000, "shutdown is bounded")
      const result = yield* Fiber.await(durable)
      assert.isTrue(Exit.isFailure(result))
      if (Exit.isFailure(result)) {
        const error = result.cause._tag === "Fail" ? result.cause.error : undefined
        assert.instanceOf(error, JournalError)
      }
      assert.isTrue(
        logs.some((line) => line.startsWith("ERROR") && line.includes("6 events were NOT written")),
        logs.join("\n")
      )
      // appending to a closed journal is refused, not silently dropped
      const late = yield* Effect.exit(journal.appendDurable(event(stream, 9)))
      assert.isTrue(Exit.isFailure(late))
    }).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)), Logger.withMinimumLogLevel(LogLevel.Debug))
  })

  it.effect("migrations run twice are a no-op", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const before = yield* sql<{ readonly name: string; readonly at: string }>`
        SELECT name, applied_at::text AS at FROM schema_migrations ORDER BY name`
      const files = yield* loadMigrations()
      assert.deepStrictEqual(before.map((r) => r.name), files.map((f) => f.name))
      assert.deepStrictEqual(yield* applyMigrations(files), [])
      yield* runMigrations
      const after = yield* sql<{ readonly name: string; readonly at: string }>`
        SELECT name, applied_at::text AS at FROM schema_migrations ORDER BY name`
      assert.deepStrictEqual(after, before)
    }))
})

layer(layerTestDatabase({ migrate: false }), { excludeTestServices: true })("Migrations", (it) => {
  it.effect("two gateways migrating one empty database at once apply each file once", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const files = yield* loadMigrations()
      const [a, b] = yield* Effect.all([applyMigrations(files), applyMigrations(files)], { concurrency: 2 })
      assert.deepStrictEqual([...a, ...b].sort(), files.map((f) => f.name).sort())
      const rows = yield* sql<{ readonly name: string }>`SELECT name FROM schema_migrations ORDER BY name`
      assert.deepStrictEqual(rows.map((r) => r.name), files.map((f) => f.name))
      const tx = yield* sql<{ readonly ok: boolean }>`
        SELECT pg_current_xact_id() IS NOT NULL AS ok FROM (SELECT 1) x`
      assert.isTrue(tx[0]!.ok)
    }))
})

describe("Journal on embedded PGlite", () => {
  const tempDir = Effect.acquireRelease(
    Effect.promise(() => pgliteDataDir()),
    (dir) => Effect.promise(() => rm(dir, { recursive: true, force: true }))
  )
  const embedded = (dir: string) => Layer.provideMerge(Layer.effectDiscard(runMigrations), layerEmbedded(dir))

  it.live("appends, reads back, and keeps the data across a restart", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const stream = newStream()
      const other = newStream()

      yield* Effect.gen(function*() {
        const journal = yield* makeJournal({ batchSize: 32 })
        yield* Effect.forEach(
          [stream, other],
          (s) => Effect.forEach(Array.from({ length: 100 }, (_, i) => i), (i) => journal.append(event(s, i))),
          { concurrency: "unbounded", discard: true }
        )
        yield* journal.appendDurable([event(stream, 100, { text: "nul\u0000 and \ud800 lone" })])
        yield* journal.append(event(stream, 5, { duplicate: true }))
        yield* journal.flush
        const stored = yield* journal.readStream(stream)
        assert.deepStrictEqual(stored.map((e) => e.streamPosition), Array.from({ length: 101 }, (_, i) => i))
        assert.deepStrictEqual(stored[5]!.data, { n: 5 })
        assert.deepStrictEqual(stored[100]!.data, { text: "nul\ufffd and \ufffd lone" })
        assert.strictEqual(stored[7]!.occurredAt, T0 + 7)
        assert.strictEqual(yield* journal.streamHead(stream), 101)
        const trace = yield* journal.readTrace(`trace-${other}`)
        assert.strictEqual(trace.length, 100)
        // migrations again: a no-op on PGlite too
        assert.deepStrictEqual(yield* applyMigrations(yield* loadMigrations()), [])
        // pending events at close are written (closing happens when this scope ends)
        yield* journal.appendAll(Array.from({ length: 50 }, (_, i) => event(other, 100 + i)))
      }).pipe(Effect.scoped, Effect.provide(embedded(dir)))

      // a second start on the same data directory sees everything
      yield* Effect.gen(function*() {
        const journal = yield* makeJournal()
        assert.strictEqual((yield* journal.readStream(stream)).length, 101)
        assert.strictEqual(yield* journal.streamHead(other), 150)
        const sql = yield* SqlClient.SqlClient
        const tx = yield* sql<{ readonly ok: boolean }>`
          SELECT bool_and(transaction_id < pg_current_xact_id()) AS ok FROM step_journal`
        assert.isTrue(tx[0]!.ok, "xid8 transaction ids are recorded")
      }).pipe(Effect.scoped, Effect.provide(embedded(dir)))
    }).pipe(Effect.scoped), 60_000)
})

describe("JournalConfig without settings", () => {
  // Effect caches a Reference's default value once per process: the folder cannot come from there,
  // or every journal of a test worker would share (and replay) one spill.
  it.effect("each journal gets a spill folder of its own, however often the default is read", () =>
    Effect.gen(function*() {
      const a = withOwnSpillDir(yield* JournalConfig)
      const b = withOwnSpillDir(yield* JournalConfig)
      try {
        assert.notStrictEqual(a.spillDir, b.spillDir)
        assert.isTrue(fs.statSync(a.spillDir).isDirectory() && fs.statSync(b.spillDir).isDirectory())
        assert.deepStrictEqual(withOwnSpillDir({ ...a, spillDir: "/some/dir" }).spillDir, "/some/dir")
      } finally {
        for (const dir of [a.spillDir, b.spillDir]) fs.rmSync(dir, { recursive: true, force: true })
      }
    }))
})
