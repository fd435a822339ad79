/**
 * The journal at its edges (issue 17): a spill that cannot be written, a black-holed Postgres, a
 * process that stops with runs open, a spill line torn by a crash.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { Context, Duration, Effect, Exit, Layer, Logger, Schedule, Scope } from "effect"
import { randomUUID } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Journal, type JournalConfigShape, journalConfigLayer, type JournalEvent, type JournalStats } from "../src/journal/Journal.ts"
import { Spill, type SpillFs, type SpilledRow } from "../src/journal/Spill.ts"
import { startProxiedDatabase } from "./support/FaultKit.ts"
import { TestDatabaseLive } from "./support/TestDatabase.ts"

const event = (streamId: string, streamPosition: number, type = "StepRecorded", data: unknown = { n: streamPosition }): JournalEvent => ({
  streamId,
  streamPosition,
  type,
  traceId: `trace-${streamId}`,
  projectId: "proj-1",
  lane: "alert-fast",
  data,
  occurredAt: Date.now()
})

const newStream = (prefix = "s") => `${prefix}-${randomUUID()}`

const makeJournal = (config: Partial<JournalConfigShape> = {}) =>
  Layer.build(Journal.Default.pipe(Layer.provide(journalConfigLayer(config)))).pipe(
    Effect.map((context) => Context.get(context, Journal))
  )

const dbRows = (streamId: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ readonly position: number; readonly type: string; readonly data: Record<string, unknown> }>`
      SELECT stream_position AS position, type, data FROM step_journal WHERE stream_id = ${streamId} ORDER BY stream_position`)

/** Polls `stats` until `check` holds (bounded generously: the machine is shared). */
const until = (journal: Journal, what: string, check: (s: JournalStats) => boolean, bound: Duration.DurationInput = "20 seconds") =>
  Effect.flatMap(journal.stats, (s) => (check(s) ? Effect.succeed(s) : Effect.fail(`${what}: ${JSON.stringify(s)}`))).pipe(
    Effect.retry(Schedule.spaced("25 millis").pipe(Schedule.upTo(bound)))
  )

/** The spill folder made unwritable: its path is a plain file, so no segment can be created. */
const breakSpill = (dir: string) => {
  fs.rmSync(dir, { recursive: true, force: true })
  fs.writeFileSync(dir, "not a folder")
}
const mendSpill = (dir: string) => {
  fs.rmSync(dir, { force: true })
  fs.mkdirSync(dir, { recursive: true })
}

const captureLogs = () => {
  const lines: Array<string> = []
  const logger = Logger.make(({ logLevel, message }) => {
    lines.push(`${logLevel.label} ${Array.isArray(message) ? message.join(" ") : String(message)}`)
  })
  return { lines, layer: Logger.replace(Logger.defaultLogger, logger) }
}

describe("Spill", () => {
  const row = (i: number): SpilledRow => ({
    streamId: "s", streamPosition: i, traceId: null, projectId: null, lane: null, type: "T", data: JSON.stringify({ pad: "x".repeat(40), i }), occurredAt: new Date().toISOString()
  })

  it("continues short writes and, when the disk is full, leaves the segment as it was", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "awooop-spill-io-"))
    let room = 2_000 // bytes the "disk" takes in total
    const io: SpillFs = {
      // At most 13 bytes per call (a short write), nothing once the room is used up.
      writeSync: (fd, buffer, offset, length) => {
        if (room <= 0) throw Object.assign(new Error("ENOSPC: no space left on device"), { code: "ENOSPC" })
        const n = Math.min(length, 13, room)
        room -= n
        return fs.writeSync(fd, buffer, offset, n)
      },
      fsyncSync: (fd) => fs.fsyncSync(fd),
      ftruncateSync: (fd, length) => {
        room += fs.fstatSync(fd).size - length
        fs.ftruncateSync(fd, length)
      }
    }
    const spill = new Spill(dir, io)
    let appended = 0
    let refused = 0
    for (let i = 0; i < 40; i++) {
      try {
        spill.append([row(2 * i), row(2 * i + 1)])
        appended += 2
      } catch {
        refused++
      }
    }
    spill.seal()
    assert.isAbove(appended, 0)
    assert.isAbove(refused, 0, "a full disk refuses the batch")
    const [segment] = spill.segments()
    const read = spill.read(segment!)
    assert.deepStrictEqual(read.torn, [], "no torn line: a refused batch is cut off again")
    assert.strictEqual(read.rows.length, appended, "every accepted row is there, whole")
    fs.rmSync(dir, { recursive: true, force: true })
  })

  it("reports a torn last line instead of skipping it silently", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "awooop-spill-io-"))
    const spill = new Spill(dir)
    spill.append([row(0), row(1)])
    spill.seal()
    fs.appendFileSync(path.join(dir, spill.segments()[0]!), '{"streamId":"s","streamPos')
    const read = spill.read(spill.segments()[0]!)
    assert.strictEqual(read.rows.length, 2)
    assert.deepStrictEqual(read.torn.map((t) => ({ line: t.line, last: t.last })), [{ line: 3, last: true }])
    fs.rmSync(dir, { recursive: true, force: true })
  })
})

layer(TestDatabaseLive, { excludeTestServices: true })("Journal at its edges", (it) => {
  {
    it.scoped("a spill that cannot be written does not wedge it: Postgres is retried, and once back everything is written", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "awooop-spill-full-"))
        const journal = yield* makeJournal({ spillDir: dir, retryBase: "10 millis", retryCap: "100 millis" })
        const stream = newStream()
        breakSpill(dir)
        yield* sql`ALTER TABLE step_journal RENAME TO step_journal_away`
        yield* journal.appendAll(Array.from({ length: 10 }, (_, i) => event(stream, i)))
        const during = yield* until(journal, "unavailable", (s) => s.unavailable)
        assert.isTrue(during.degraded && during.spillFailing)
        assert.isTrue(journal.unavailable(), "new runs are refused meanwhile")
        // Postgres comes back while the spill is still broken.
        yield* sql`ALTER TABLE step_journal_away RENAME TO step_journal`
        yield* until(journal, "back to ok", (s) => !s.degraded && !s.unavailable && s.queued === 0)
        yield* journal.append(event(stream, 10))
        yield* journal.flush
        assert.deepStrictEqual((yield* dbRows(stream)).map((r) => r.position), Array.from({ length: 11 }, (_, i) => i))
        const stats = yield* journal.stats
        assert.deepStrictEqual(stats.lost, { dropped: 0, torn: 0, shutdown: 0 })
        mendSpill(dir)
      }), 60_000)

    it.scoped("with both stores refusing and the queue full, appends are dropped with an ERROR naming how many, not hung", () => {
      const logs = captureLogs()
      return Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "awooop-spill-full-"))
        const journal = yield* makeJournal({ spillDir: dir, capacity: 8, batchSize: 4, retryBase: "10 millis", retryCap: "100 millis" })
        const stream = newStream()
        breakSpill(dir)
        yield* sql`ALTER TABLE step_journal RENAME TO step_journal_away`
        yield* Effect.gen(function*() {
          yield* journal.appendAll([event(stream, 0), event(stream, 1)])
          yield* until(journal, "unavailable", (s) => s.unavailable)
          // 4 held by the writer, 8 fit the queue: the rest must not hang their callers.
          yield* Effect.forEach(Array.from({ length: 30 }, (_, i) => i + 2), (i) => journal.append(event(stream, i)), { discard: true }).pipe(
            Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => "appends hung while the journal was unavailable" })
          )
          const durable = yield* journal.appendDurable(event(stream, 32)).pipe(Effect.timeout("10 seconds"), Effect.either)
          assert.strictEqual(durable._tag, "Left", "a durable append fails rather than hang")
          const stats = yield* journal.stats
          assert.isAbove(stats.lost.dropped, 0)
          yield* journal.flush.pipe(Effect.timeout("10 seconds"), Effect.ignore)
        }).pipe(Effect.ensuring(Effect.orDie(sql`ALTER TABLE step_journal_away RENAME TO step_journal`)))
        mendSpill(dir)
        yield* until(journal, "back to ok", (s) => !s.degraded && s.queued === 0)
        const stats = yield* journal.stats
        const found = (yield* dbRows(stream)).length
        assert.strictEqual(found + stats.lost.dropped, 33, "every event is written or counted as dropped")
        assert.isTrue(
          logs.lines.some((l) => l.startsWith("ERROR") && /\d+ event\(s\) DROPPED/.test(l)),
          logs.lines.join("\n")
        )
      }).pipe(Effect.provide(logs.layer))
    }, 60_000)

    it.scoped("a run it saw start and never end is ended when it closes (ShuttingDown, its open attempt settled)", () =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const journal = yield* makeJournal().pipe(Scope.extend(scope))
        const run = newStream("run")
        const done = newStream("run")
        const asyncRun = newStream("run")
        yield* journal.appendAll([
          event(run, 0, "RunStarted", { instance: journal.instance }),
          event(run, 1, "AttemptStarted", { attempt: 1, host: "gcp-a" }),
          event(done, 0, "RunStarted", {}),
          event(done, 1, "RunCompleted", {}),
          event(asyncRun, 0, "RunStarted", { async: true })
        ])
        assert.strictEqual((yield* journal.stats).openRuns, 1)
        yield* Scope.close(scope, Exit.void)
        const rows = yield* dbRows(run)
        assert.deepStrictEqual(rows.map((r) => r.type), ["RunStarted", "AttemptStarted", "AttemptFailed", "RunFailed"])
        assert.strictEqual(rows[3]!.data.error, "ShuttingDown")
        assert.strictEqual(rows[3]!.data.shutdown, true)
        assert.deepStrictEqual((yield* dbRows(done)).map((r) => r.type), ["RunStarted", "RunCompleted"])
        assert.deepStrictEqual((yield* dbRows(asyncRun)).map((r) => r.type), ["RunStarted"], "async runs resume at the next start")
      }))

    it.scoped("a persisted append is satisfied by the fsync'd spill while Postgres is away (a durable one is not)", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const journal = yield* makeJournal({ retryBase: "10 millis", retryCap: "100 millis" })
        const stream = newStream()
        yield* sql`ALTER TABLE step_journal RENAME TO step_journal_away`
        yield* Effect.gen(function*() {
          yield* journal.append(event(stream, 0))
          yield* until(journal, "degraded", (s) => s.degraded)
          const persisted = yield* journal.appendPersisted(event(stream, 1)).pipe(Effect.timeout("10 seconds"), Effect.either)
          assert.strictEqual(persisted._tag, "Right")
          assert.strictEqual((yield* journal.stats).spilled, 2)
          const durable = yield* journal.appendDurable(event(stream, 2)).pipe(Effect.either)
          assert.strictEqual(durable._tag, "Left")
        }).pipe(Effect.ensuring(Effect.orDie(sql`ALTER TABLE step_journal_away RENAME TO step_journal`)))
        yield* until(journal, "back to ok", (s) => !s.degraded && s.queued === 0)
        assert.deepStrictEqual((yield* dbRows(stream)).map((r) => r.position), [0, 1, 2])
      }), 60_000)

    it.scoped("a torn spill line left by a crash is reported and counted at replay", () => {
      const logs = captureLogs()
      return Effect.gen(function*() {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "awooop-spill-torn-"))
        const stream = newStream()
        const spill = new Spill(dir)
        spill.append([0, 1].map((i) => ({
          streamId: stream, streamPosition: i, traceId: null, projectId: null, lane: null, type: "T", data: "{}", occurredAt: new Date().toISOString()
        })))
        spill.seal()
        fs.appendFileSync(path.join(dir, spill.segments()[0]!), '{"streamId":"torn')
        const journal = yield* makeJournal({ spillDir: dir })
        assert.strictEqual((yield* dbRows(stream)).length, 2)
        assert.strictEqual((yield* journal.stats).lost.torn, 1)
        assert.isTrue(logs.lines.some((l) => l.startsWith("ERROR") && l.includes("torn line") && l.includes("1 event(s) LOST")), logs.lines.join("\n"))
      }).pipe(Effect.provide(logs.layer))
    })
  }
})

describe("Journal and a black-holed Postgres", () => {
  it.scoped("a black-holed Postgres: spilling within the write timeout, and spilling goes on while a replay hangs", () =>
    Effect.gen(function*() {
      const db = yield* Effect.acquireRelease(Effect.promise(() => startProxiedDatabase()), (db) => Effect.promise(() => db.close()))
      const journal = yield* makeJournal({ writeTimeout: "2 seconds", retryBase: "50 millis", retryCap: "300 millis" }).pipe(
        Effect.provide(Layer.succeedContext(db.handle.context))
      )
      const stream = newStream()
      yield* journal.append(event(stream, 0))
      yield* journal.flush
      db.proxy.blackhole()
      const t0 = Date.now()
      yield* journal.append(event(stream, 1))
      yield* until(journal, "spilling", (s) => s.degraded && s.spilled === 1)
      const noticed = Date.now() - t0
      // The write timeout (2 s) plus scheduling; not the 5 s more of a cancel through the black hole.
      assert.isBelow(noticed, 5_500, `noticed after ${noticed} ms`)
      // A replay attempt starts within ~350 ms and hangs in the black hole for 2 s; new events still
      // go to the spill at once meanwhile.
      yield* Effect.sleep("700 millis")
      const t1 = Date.now()
      yield* journal.appendAll([2, 3, 4].map((i) => event(stream, i)))
      yield* until(journal, "spilled", (s) => s.spilled === 4 && s.queued === 0)
      assert.isBelow(Date.now() - t1, 1_500, "spilling does not wait for a replay attempt")
      db.proxy.heal()
      yield* until(journal, "back to ok", (s) => !s.degraded && s.queued === 0, "60 seconds")
      const rows = yield* Effect.promise(() => db.query<{ p: number }>(`SELECT stream_position AS p FROM step_journal WHERE stream_id = $1 ORDER BY 1`, [stream]))
      assert.deepStrictEqual(rows.map((r) => r.p), [0, 1, 2, 3, 4])
    }), 90_000)
})
