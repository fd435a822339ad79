/**
 * The journal writer: every routing step goes through here into `step_journal`.
 *
 * - `append` / `appendAll` put events on a bounded in-memory queue. A full queue suspends the caller
 *   (back-pressure); nothing is dropped — unless Postgres and the spill both refuse writes, when a
 *   full queue drops (counted in `lost`, logged at ERROR with the count) rather than hang requests.
 * - One writer fiber takes up to `batchSize` queued items at a time (waiting up to `linger` for a
 *   batch to fill) and commits them as ONE `INSERT … SELECT … FROM jsonb_to_recordset($1) ON
 *   CONFLICT (stream_id, stream_position) DO NOTHING` (group commit; re-delivering an event is a no-op),
 *   through the `step_journal_append` function (migrations/008: planned once per connection, and
 *   without the ON CONFLICT's per-row cost unless the batch does hold an event already stored).
 * - `appendDurable` / `flush` enqueue a marker behind the events and wait for the writer to pass it:
 *   since the queue is FIFO, everything enqueued before the marker is committed when it resolves.
 * - A failing (or too slow) database switches the writer to the local spill (Spill.ts): batches are
 *   fsync'd to segment files and replayed into Postgres, in order, by a replayer fiber once it takes
 *   writes again; a spill left by a killed process is replayed at start-up. Durable appends fail
 *   while degraded; persisted appends (`appendPersisted`) are satisfied by the spill.
 * - Closing the service's scope ends the synchronous runs still open (RunEnds.ts), then drains the
 *   queue (bounded by `shutdownTimeout`); if that is not possible, it logs how many events were NOT
 *   written and fails the pending durable waits.
 *
 * Events are serialised when they are appended (a snapshot: later mutation of `data` by the caller
 * has no effect). Input that could never be stored is a bug of the caller and is reported as a
 * defect at the call site rather than wedging the writer: a `streamPosition` that is not an int4
 * ≥ 0, an `occurredAt` that is not a valid date, `data` that `JSON.stringify` rejects (cycles,
 * BigInt). NUL characters and lone UTF-16 surrogates (which PostgreSQL's text/jsonb refuse) are
 * replaced by U+FFFD.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Chunk, Clock, Config, Context, Data, Deferred, Duration, Effect, Exit, Fiber, Layer, Option, Queue } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { EventOf } from "../domain/Events.ts"
import { type OpenRun, OpenRuns } from "./RunEnds.ts"
import { Spill } from "./Spill.ts"
import type { EventKey } from "./EventRow.ts"

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

export interface JournalEvent {
  readonly streamId: string // "run-<uuid>", "host-<name>", ...
  readonly streamPosition: number // assigned by the caller (0-based within the stream)
  readonly type: string // "RunStarted", "RouteDecided", ...
  readonly traceId: string | null
  readonly projectId: string | null
  readonly lane: string | null
  readonly data: unknown // JSON-serialisable
  readonly occurredAt: number // epoch millis (read from effect Clock by the caller)
}

export interface StoredEvent extends JournalEvent {
  readonly globalPosition: number
  /** epoch millis (database clock, `now()` of the writing transaction) */
  readonly recordedAt: number
}

export interface JournalStats {
  /** events handed to the journal and not yet committed */
  readonly queued: number
  /** events committed (including re-deliveries that were no-ops) */
  readonly written: number
  /** INSERT statements committed */
  readonly batches: number
  /** failed INSERT attempts (each sent its batch to the spill) */
  readonly retries: number
  /** true while Postgres cannot take writes and batches go to the local spill */
  readonly degraded: boolean
  /** events in the local spill, not yet in Postgres */
  readonly spilled: number
  /** true while neither Postgres nor the spill takes writes: new runs are refused (503) */
  readonly unavailable: boolean
  /** true while writing the spill fails (a full disk, say) */
  readonly spillFailing: boolean
  /** events lost, by why: dropped (both stores refused, queue full), torn (a spill line cut by a crash), shutdown (not drained in time) */
  readonly lost: { readonly dropped: number; readonly torn: number; readonly shutdown: number }
  /** synchronous runs started and not ended, as this journal saw them */
  readonly openRuns: number
}

export class JournalError extends Data.TaggedError("JournalError")<{
  readonly reason: string
  readonly cause?: unknown
}> {}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

export interface JournalConfigShape {
  /** queue capacity in items (events + durable markers); default 10 000 */
  readonly capacity: number
  /** maximum items per INSERT; default 512 */
  readonly batchSize: number
  /**
   * Group commit: a batch that is not full waits this long (wall clock) for more events before it
   * is written; a durable append, a flush or the shutdown ends the wait at once. Default 10 ms: at
   * low rates each request would otherwise cost its own INSERT and commit, on the same two cores
   * as the requests (BENCHMARKS.md). Events are in memory that much longer (a crash loses them, as
   * it loses the queue). 0 writes at once.
   */
  readonly linger: Duration.DurationInput
  /** how long closing the journal may take to drain the queue; default 10 s */
  readonly shutdownTimeout: Duration.DurationInput
  /** first retry delay after a failed write; default 50 ms */
  readonly retryBase: Duration.DurationInput
  /** longest retry delay; default 2 s */
  readonly retryCap: Duration.DurationInput
  /** a write that takes longer counts as failed and its batch is spilled; default 5 s */
  readonly writeTimeout: Duration.DurationInput
  /** where batches go while Postgres cannot take them; default ./.data/spill */
  readonly spillDir: string
}

export const journalConfigDefaults: JournalConfigShape = {
  capacity: 10_000,
  batchSize: 512,
  linger: Duration.millis(10),
  shutdownTimeout: Duration.seconds(10),
  retryBase: Duration.millis(50),
  retryCap: Duration.seconds(2),
  writeTimeout: Duration.seconds(5),
  spillDir: "./.data/spill"
}

/** Journal settings; the defaults apply unless a layer provides others. */
// Without explicit settings (tests, tools) each journal spills to a fresh temporary folder, so two
// processes never replay each other's spill; the gateway itself reads AWOOOP_SPILL_DIR.
// Such a folder is removed again when its journal closes with nothing spilled in it.
const freshSpillDirs = new Set<string>()
const freshSpillDir = () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "awooop-spill-"))
  freshSpillDirs.add(dir)
  return dir
}

export class JournalConfig extends Context.Reference<JournalConfig>()("awooop/JournalConfig", {
  defaultValue: (): JournalConfigShape => ({ ...journalConfigDefaults, spillDir: freshSpillDir() })
}) {}

/** Provide `JournalConfig` with some settings overridden. */
export const journalConfigLayer = (options: Partial<JournalConfigShape>): Layer.Layer<never> =>
  Layer.sync(JournalConfig, () => ({ ...journalConfigDefaults, spillDir: options.spillDir ?? freshSpillDir(), ...options }))

/**
 * `JournalConfig` from the environment: `AWOOOP_JOURNAL_CAPACITY`, `AWOOOP_JOURNAL_BATCH_SIZE`,
 * `AWOOOP_JOURNAL_SHUTDOWN_TIMEOUT` (a duration, e.g. "10 seconds"); each falls back to its default.
 */
export const JournalConfigFromEnv = Layer.effect(
  JournalConfig,
  Config.all({
    capacity: Config.integer("AWOOOP_JOURNAL_CAPACITY").pipe(
      Config.validate({ message: "must be ≥ 1", validation: (n) => n >= 1 }),
      Config.withDefault(journalConfigDefaults.capacity)
    ),
    batchSize: Config.integer("AWOOOP_JOURNAL_BATCH_SIZE").pipe(
      Config.validate({ message: "must be ≥ 1", validation: (n) => n >= 1 }),
      Config.withDefault(journalConfigDefaults.batchSize)
    ),
    linger: Config.duration("AWOOOP_JOURNAL_LINGER").pipe(
      Config.withDefault(Duration.decode(journalConfigDefaults.linger))
    ),
    shutdownTimeout: Config.duration("AWOOOP_JOURNAL_SHUTDOWN_TIMEOUT").pipe(
      Config.withDefault(Duration.decode(journalConfigDefaults.shutdownTimeout))
    ),
    spillDir: Config.string("AWOOOP_SPILL_DIR").pipe(Config.withDefault(journalConfigDefaults.spillDir))
  }).pipe(Effect.map((c): JournalConfigShape => ({ ...journalConfigDefaults, ...c })))
)

// ---------------------------------------------------------------------------------------------
// Queue items and their preparation
// ---------------------------------------------------------------------------------------------

/** An event in the form it is inserted. */
interface Row extends EventKey {
  readonly _tag: "Row"
  readonly data: string // JSON text
  readonly occurredAt: string // ISO-8601
}

/** Resolved once every item before it in the queue is committed. */
interface Marker {
  readonly _tag: "Marker"
  readonly done: Deferred.Deferred<void, JournalError>
  /** commit: resolved once committed to Postgres (fails while degraded); disk: committed or fsync'd to the spill. */
  readonly level: "commit" | "disk"
}

/** Put on the queue by the finalizer: the writer stops after it. */
interface Stop {
  readonly _tag: "Stop"
}

type Item = Row | Marker | Stop

/** Why an event can never be stored. */
interface Invalid {
  readonly _tag: "Invalid"
  readonly error: string
}

const STOP: Stop = { _tag: "Stop" }

const MAX_INT4 = 2_147_483_647
const MIN_DATE_MS = -62_135_596_800_000 // 0001-01-01T00:00:00Z
const MAX_DATE_MS = 253_402_300_799_999 // 9999-12-31T23:59:59.999Z

/** A `\u0000` or lone-surrogate escape emitted by JSON.stringify (not an escaped backslash). */
const BAD_JSON_ESCAPE = /(?<!\\)((?:\\\\)*)\\u(?:0000|d[89a-f][0-9a-f]{2})/gi

// NUL is refused by PostgreSQL's text: replaced here. Lone surrogates in text fields are escaped by
// JSON.stringify when the batch document is built, and replaced there (jsonString).
const cleanText = (s: string): string => (s.includes("\u0000") ? s.replaceAll("\u0000", "\uFFFD") : s)

const cleanNullable = (s: string | null): string | null => (s === null ? null : cleanText(s))

/** JSON text jsonb accepts: a `\u0000` or lone-surrogate escape becomes `\ufffd`. */
const storableJson = (json: string): string =>
  json.includes("\\u") ? json.replace(BAD_JSON_ESCAPE, "$1\\ufffd") : json

const toJson = (data: unknown): string | Invalid => {
  let json: string | undefined
  try {
    json = JSON.stringify(data)
  } catch (cause) {
    return { _tag: "Invalid", error: `data is not JSON-serialisable: ${String(cause)}` }
  }
  if (json === undefined) return "null"
  return storableJson(json)
}

// Events come in bursts within one millisecond (a run's first three steps, say): reuse the text.
let lastMs = Number.NaN
let lastIso = ""
const isoOf = (ms: number): string => {
  if (ms !== lastMs) {
    lastIso = new Date(ms).toISOString()
    lastMs = ms
  }
  return lastIso
}

/**
 * A text field as a JSON string for the batch document. NUL was replaced when the row was prepared;
 * a lone surrogate, which JSON.stringify escapes and jsonb refuses, becomes U+FFFD as in `data`.
 */
const jsonString = (s: string): string => storableJson(JSON.stringify(s))

const jsonNullable = (s: string | null): string => (s === null ? "null" : jsonString(s))

/** The row for `event`, or why it can never be stored. */
const prepare = (event: JournalEvent): Row | Invalid => {
  const position = event.streamPosition
  if (!Number.isInteger(position) || position < 0 || position > MAX_INT4) {
    return { _tag: "Invalid", error: `${event.type} of ${event.streamId}: streamPosition must be an integer in [0, ${MAX_INT4}], got ${position}` }
  }
  const at = event.occurredAt
  if (!Number.isFinite(at) || at < MIN_DATE_MS || at > MAX_DATE_MS) {
    return { _tag: "Invalid", error: `${event.type} of ${event.streamId}: occurredAt must be epoch milliseconds of a date in years 1..9999, got ${at}` }
  }
  const data = toJson(event.data)
  if (typeof data !== "string") return { _tag: "Invalid", error: `${event.type} of ${event.streamId}: ${data.error}` }
  return {
    _tag: "Row",
    streamId: cleanText(event.streamId),
    streamPosition: position,
    traceId: cleanNullable(event.traceId),
    projectId: cleanNullable(event.projectId),
    lane: cleanNullable(event.lane),
    type: cleanText(event.type),
    data,
    occurredAt: isoOf(at)
  }
}

const prepareAll = (events: ReadonlyArray<JournalEvent>): Array<Row> | Invalid => {
  const rows: Array<Row> = []
  for (const event of events) {
    const row = prepare(event)
    if (row._tag !== "Row") return row
    rows.push(row)
  }
  return rows
}

/** PostgreSQL's unique_violation: a batch with an event already stored (step_journal_stream_unique). */
const isUniqueViolation = (error: SqlError): boolean =>
  typeof error.cause === "object" && error.cause !== null && (error.cause as { readonly code?: unknown }).code === "23505"

const invalidEvent = (invalid: Invalid) => Effect.dieMessage(`Journal: cannot store event ${invalid.error}`)

// ---------------------------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------------------------

interface StoredRow extends EventKey {
  readonly globalPosition: number
  readonly data: unknown
  readonly occurredAt: number
  readonly recordedAt: number
}

const toStored = (row: StoredRow): StoredEvent => ({
  globalPosition: row.globalPosition,
  streamId: row.streamId,
  streamPosition: row.streamPosition,
  traceId: row.traceId,
  projectId: row.projectId,
  lane: row.lane,
  type: row.type,
  data: row.data,
  occurredAt: row.occurredAt,
  recordedAt: row.recordedAt
})

const readFailed = (what: string) => (cause: SqlError) => new JournalError({ reason: `cannot read ${what}`, cause })

// ---------------------------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------------------------

const make = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const config = yield* JournalConfig
  const batchSize = Math.max(1, Math.floor(config.batchSize))
  const queue = yield* Queue.bounded<Item>(Math.max(1, Math.floor(config.capacity)))

  // Counters: plain variables, only touched from synchronous sections.
  let offered = 0
  let written = 0
  let batches = 0
  let retries = 0
  let failing = false
  let closed = false
  const instance = crypto.randomUUID()
  const openRuns = new OpenRuns()
  /** The batch currently being written (kept so a timed-out shutdown can count it). */
  let inFlight: ReadonlyArray<Item> = []

  /**
   * One batch as ONE jsonb parameter: an array of row objects whose `d` is the event's data spliced
   * in as the JSON text it already is. That needs no escaping of the (large) data on our side, where
   * text[] / jsonb[] array literals would quote and escape every element (measured: ~4 µs per row
   * less in the gateway, the same Postgres CPU).
   */
  const insert = (rows: ReadonlyArray<Row>, redelivery: boolean) => {
    const parts = new Array<string>(rows.length)
    for (let i = 0; i < rows.length; i++) {
      const row = rows[i]!
      parts[i] = `{"s":${jsonString(row.streamId)},"p":${row.streamPosition},"t":${jsonNullable(row.traceId)},"j":${
        jsonNullable(row.projectId)
      },"l":${jsonNullable(row.lane)},"y":${jsonString(row.type)},"o":"${row.occurredAt}","d":${row.data}}`
    }
    // migrations/008: INSERT … SELECT FROM jsonb_to_recordset, planned once per connection; without
    // ON CONFLICT unless the batch holds an event already stored (then that one is a no-op).
    const batch = `[${parts.join(",")}]`
    const idempotent = sql`SELECT step_journal_append(${batch}::jsonb, true)`
    if (redelivery) return idempotent
    return sql`SELECT step_journal_append(${batch}::jsonb, false)`.pipe(
      Effect.catchIf(isUniqueViolation, () => idempotent)
    )
  }

  // --- Postgres or the spill ------------------------------------------------------------------
  //
  // While Postgres takes writes, batches go straight in. The first failed write — or one that takes
  // longer than `writeTimeout` — switches to spill mode: that batch and every later one is fsync'd
  // to local segment files, so the request path never waits on a dead or black-holed database and
  // nothing is dropped. The timed-out write is left to finish (or be cancelled) in the background:
  // @effect/sql-pg cancels through the same pool, with its own 5 s timeout, and the writer must not
  // wait for that. A replayer fiber of its own (the writer keeps spilling meanwhile) puts the
  // segments into Postgres, oldest first; once none is left, the writer writes directly again.
  // Per-stream order holds because nothing is written directly while segments are pending.
  //
  // When the spill refuses too (a full disk), the writer holds the batch and keeps trying both
  // stores — Postgres as soon as the spill is empty, the spill again after a pause — while the
  // journal is `unavailable`: new runs are refused (503) instead of piling up behind it, and an
  // append that finds the queue full drops its events with an ERROR naming how many (and counts
  // them) rather than hang its request.
  //
  // Durable appends (money) need Postgres: they fail while spilling, so they fail closed.
  // Persisted appends (a run's end, `server.durableRunEnd`) are satisfied by the fsync'd spill.

  const spill = new Spill(config.spillDir)
  let spilledRows = 0
  let spillFailing = false
  const unavailableLatch = yield* Effect.makeLatch(false)
  const isUnavailable = () => failing && spillFailing
  const lost = { dropped: 0, torn: 0, shutdown: 0 }
  let droppedUnlogged = 0

  const setSpillFailing = (on: boolean) =>
    Effect.sync(() => {
      spillFailing = on
      if (isUnavailable()) unavailableLatch.unsafeOpen()
      else unavailableLatch.unsafeClose()
    })
  const setFailing = (on: boolean) =>
    Effect.sync(() => {
      failing = on
      if (isUnavailable()) unavailableLatch.unsafeOpen()
      else unavailableLatch.unsafeClose()
    })

  const logDropped = Effect.suspend(() => {
    if (droppedUnlogged === 0) return Effect.void
    const n = droppedUnlogged
    droppedUnlogged = 0
    return Effect.logError(
      `Journal: ${n} event(s) DROPPED (${lost.dropped} since start): neither Postgres nor the spill in ${config.spillDir} ` +
        `takes writes and the queue is full; awooop_journal_events_lost_total counts them`
    )
  })

  // The replayer is off the request path: its writes may take longer (a loaded database replaying a
  // big spill), and a retry racing the cancel of its predecessor only adds load.
  const replayTimeout = Duration.times(Duration.decode(config.writeTimeout), 3)

  const insertTimed = (rows: ReadonlyArray<Row>, timeout: Duration.DurationInput = config.writeTimeout, redelivery = false) =>
    insert(rows, redelivery).pipe(
      // Off the writer's path: an interrupted query cancels through the pool, which a black hole holds.
      Effect.disconnect,
      Effect.timeoutFail({ duration: timeout, onTimeout: () => new JournalError({ reason: `write timed out after ${Duration.format(timeout)}` }) }),
      Effect.catchAllDefect((defect) => Effect.fail(new JournalError({ reason: "unexpected defect while writing", cause: defect }))),
      Effect.either
    )

  const spillRows = (rows: ReadonlyArray<Row>) =>
    Effect.try({
      try: () => {
        spill.append(rows)
        spilledRows += rows.length
      },
      catch: (cause) => new JournalError({ reason: `cannot write the spill in ${config.spillDir}`, cause })
    }).pipe(Effect.either)

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
      yield* reportTorn(segment, read.torn)
      spill.remove(segment)
      if (inherited) offered += rows.length
      else spilledRows = Math.max(0, spilledRows - rows.length)
      written += rows.length
      if (rows.length > 0) batches++
    }
    return true
  })

  /** While degraded: replay, and once nothing is left, let the writer write directly again. */
  const replayer = Effect.gen(function*() {
    while (true) {
      yield* Effect.sleep(failing ? config.retryBase : config.retryCap)
      yield* logDropped
      if (!failing) continue
      if (!(yield* replaySpill(false))) {
        yield* Effect.sleep(config.retryCap)
        continue
      }
      // In one step with the check: the writer, which spills synchronously, cannot add a segment
      // between the two (one it added during the replay is replayed in the next round).
      const back = yield* Effect.sync(() => {
        if (spill.pending) return false
        spilledRows = 0
        failing = false
        spillFailing = false // the replayed segments are gone, and their room with them
        unavailableLatch.unsafeClose()
        return true
      })
      if (back) yield* Effect.logInfo("Journal: Postgres accepts writes again; every spilled event is now in step_journal")
    }
  }).pipe(
    // It must outlive anything a round can throw (an unreadable spill folder, say).
    Effect.catchAllCause((cause) => Effect.zipRight(Effect.logError("Journal: the spill replayer failed; restarting it", cause), Effect.sleep(config.retryCap))),
    Effect.forever
  )

  const degradedError = new JournalError({ reason: "the journal is degraded (Postgres unavailable; events spill to local disk)" })

  /**
   * Puts rows in Postgres, or else in the spill: "committed" or "spilled". When neither takes them,
   * keeps them and tries both again (with back-off) until one does.
   */
  const persist = (rows: ReadonlyArray<Row>): Effect.Effect<"committed" | "spilled"> =>
    Effect.gen(function*() {
      let pause = Duration.toMillis(config.retryBase)
      while (true) {
        if (!failing) {
          const result = yield* insertTimed(rows)
          if (result._tag === "Right") {
            written += rows.length
            batches++
            return "committed"
          }
          retries++
          yield* setFailing(true)
          yield* Effect.logWarning(`Journal: writing ${rows.length} events failed; spilling to ${config.spillDir} until Postgres is back`, result.left)
        }
        const spilled = yield* spillRows(rows)
        if (spilled._tag === "Right") {
          if (spillFailing) {
            yield* setSpillFailing(false)
            yield* Effect.logWarning(`Journal: the spill in ${config.spillDir} takes writes again`)
          }
          return "spilled"
        }
        if (!spillFailing) {
          yield* setSpillFailing(true)
          yield* Effect.logError(
            `Journal: UNAVAILABLE — Postgres and the spill in ${config.spillDir} both refuse writes; holding ${rows.length} events ` +
              `and retrying both; new runs are refused (503) until one takes writes`,
            spilled.left
          )
        }
        retries++
        yield* Effect.sleep(pause)
        pause = Math.min(pause * 2, Duration.toMillis(config.retryCap))
      }
    })

  /** Write one batch of items; resolve its markers. Returns whether it contained `Stop`. */
  const processBatch = (items: ReadonlyArray<Item>): Effect.Effect<boolean> =>
    Effect.gen(function*() {
      inFlight = items
      const rows: Array<Row> = []
      for (const item of items) if (item._tag === "Row") rows.push(item)
      const outcome = rows.length > 0 ? yield* persist(rows) : failing ? "spilled" : "committed"
      inFlight = []
      let stop = false
      for (const item of items) {
        if (item._tag === "Marker") {
          const ok = outcome === "committed" || item.level === "disk"
          Deferred.unsafeDone(item.done, ok ? Exit.void : Exit.fail(degradedError))
        } else if (item._tag === "Stop") stop = true
      }
      return stop
    })

  // Spilled events from an earlier run go in before anything new, so stream heads read at start-up
  // (host streams continue their positions) see them.
  if (spill.pending) {
    yield* Effect.logInfo(`Journal: replaying events spilled by an earlier run from ${config.spillDir}`)
    while (!(yield* replaySpill(true))) yield* Effect.sleep(config.retryCap)
  }

  yield* Effect.forkScoped(replayer)

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

  const writerLoop: Effect.Effect<void> = Effect.gen(function*() {
    while (true) {
      let items: ReadonlyArray<Item> = Chunk.toReadonlyArray(yield* Queue.takeBetween(queue, 1, batchSize))
      // Group commit: wait a moment for more, unless somebody waits for this batch or the writer stops.
      if (lingerMs > 0 && items.length < batchSize && items.every((item) => item._tag === "Row")) {
        if (awaited) awaited = false
        else {
          inFlight = items // held while lingering: a timed-out shutdown counts them as not written
          yield* linger
        }
        const more = yield* Queue.takeUpTo(queue, batchSize - items.length)
        if (more.length > 0) items = [...items, ...more]
      }
      const stop = yield* processBatch(items)
      if (stop) return
    }
  })

  const writer = yield* Effect.forkScoped(writerLoop)

  /** Everything still in the queue (including offers suspended by back-pressure). */
  const takeRemaining = Effect.gen(function*() {
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
  const endOpenRuns = Effect.gen(function*() {
    const open = openRuns.drain()
    if (open.length === 0) return
    const now = yield* Clock.currentTimeMillis
    const rows: Array<Row> = []
    for (const run of open) {
      for (const events of closingEvents(run, now, { status: 503, error: "ShuttingDown", message: "the gateway shut down before the run ended", shutdown: true })) {
        const row = prepare(events)
        if (row._tag === "Row") rows.push(row)
      }
    }
    offered += rows.length
    yield* Queue.offerAll(queue, rows)
    yield* Effect.logWarning(`Journal: ${open.length} run(s) still open at shutdown ended with RunFailed (ShuttingDown)`)
  })

  const shutdown = Effect.gen(function*() {
    closed = true
    const drain = Effect.gen(function*() {
      yield* endOpenRuns
      yield* Queue.offer(queue, STOP)
      yield* waitedFor
      yield* Fiber.join(writer)
      // Offers that passed the `closed` check just before it was set may sit behind STOP.
      const rest = yield* takeRemaining
      for (let i = 0; i < rest.length; i += batchSize) {
        yield* processBatch(rest.slice(i, i + batchSize))
      }
    })
    const drained = yield* drain.pipe(Effect.interruptible, Effect.timeout(config.shutdownTimeout), Effect.exit)
    yield* logDropped
    if (Exit.isSuccess(drained)) {
      yield* Effect.logDebug(`Journal: closed; ${written} events written in total`)
      if (freshSpillDirs.delete(config.spillDir) && !spill.pending) {
        yield* Effect.sync(() => fs.rmSync(config.spillDir, { recursive: true, force: true })).pipe(Effect.ignore)
      }
    } else {
      yield* Fiber.interrupt(writer).pipe(Effect.timeout(Duration.seconds(2)), Effect.ignore)
      const left = [...inFlight, ...(yield* takeRemaining)]
      inFlight = []
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
      lost.shutdown += unwritten
      yield* Effect.logError(
        `Journal: shutdown could not drain the queue within ${Duration.format(config.shutdownTimeout)}: ` +
          `${unwritten} events were NOT written to step_journal`
      )
    }
    yield* Queue.shutdown(queue)
  })
  yield* Effect.addFinalizer(() => shutdown)

  // --- the API ------------------------------------------------------------------------------

  const closedWarning = (n: number) =>
    Effect.suspend(() => {
      lost.shutdown += n
      return Effect.logError(`Journal: ${n} event(s) appended after the journal closed; NOT written (${lost.shutdown} lost at shutdown)`)
    })

  let lastDropLogAt = 0
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

  const unavailableError = new JournalError({ reason: "the journal is unavailable (neither Postgres nor the spill takes writes)" })
  const capacity = Math.max(1, Math.floor(config.capacity))

  /**
   * Enqueues items (`events` of them rows); a full queue waits for room (back-pressure) unless, or
   * until, the journal is unavailable: then what did not fit is dropped and counted rather than hang
   * its request, and its markers fail.
   */
  const enqueue = (items: ReadonlyArray<Item>, events: number): Effect.Effect<void> => {
    // Room for all of them (the usual case): no waiting, no race.
    if (Option.getOrElse(queue.unsafeSize(), () => capacity) + items.length <= capacity) {
      return Effect.map(Queue.offerAll(queue, items), () => {
        offered += events
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
          if (item._tag === "Row") offered++
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
      if (closed) return closedWarning(1)
      const row = prepare(event)
      if (row._tag !== "Row") return invalidEvent(row)
      openRuns.note(event)
      // Room in the queue (the usual case): enqueued in this step. Full: wait for room (back-pressure).
      if (Queue.unsafeOffer(queue, row)) {
        offered++
        return Effect.void
      }
      return enqueue([row], 1)
    })

  const appendAll = (events: Iterable<JournalEvent>): Effect.Effect<void> =>
    Effect.suspend(() => {
      const list = Array.from(events)
      if (list.length === 0) return Effect.void
      if (closed) return closedWarning(list.length)
      const rows = prepareAll(list)
      if (!Array.isArray(rows)) return invalidEvent(rows)
      for (const event of list) openRuns.note(event)
      return enqueue(rows, rows.length)
    })

  const closedError = () => new JournalError({ reason: "the journal is closed" })

  const appendMarked = (events: JournalEvent | Iterable<JournalEvent>, level: Marker["level"]): Effect.Effect<void, JournalError> =>
    Effect.suspend(() => {
      const list: Array<JournalEvent> = isEvent(events) ? [events] : Array.from(events)
      if (closed) return Effect.fail(closedError())
      const rows = prepareAll(list)
      if (!Array.isArray(rows)) return invalidEvent(rows)
      for (const event of list) openRuns.note(event)
      return Effect.flatMap(Deferred.make<void, JournalError>(), (done) =>
        enqueue([...rows, { _tag: "Marker", done, level } satisfies Marker], rows.length).pipe(
          Effect.zipRight(waitedFor),
          Effect.zipRight(Deferred.await(done))
        ))
    })

  const appendDurable = (events: JournalEvent | Iterable<JournalEvent>) => appendMarked(events, "commit")
  const appendPersisted = (events: JournalEvent | Iterable<JournalEvent>) => appendMarked(events, "disk")

  const flush: Effect.Effect<void> = Effect.suspend(() => {
    if (closed) return Effect.void
    return Effect.flatMap(Deferred.make<void, JournalError>(), (done) =>
      enqueue([{ _tag: "Marker", done, level: "commit" } satisfies Marker], 0).pipe(
        Effect.zipRight(waitedFor),
        Effect.zipRight(Deferred.await(done)),
        // Fails only when a shutdown timed out, which is logged with the count of lost events.
        Effect.ignore
      ))
  })

  const streamHead = Effect.fn("Journal.streamHead")(function*(streamId: string) {
    const rows = yield* sql<{ readonly head: number }>`
      SELECT COALESCE(MAX(stream_position) + 1, 0)::int AS "head"
      FROM step_journal WHERE stream_id = ${streamId}`.pipe(Effect.mapError(readFailed(`the head of ${streamId}`)))
    return rows[0]?.head ?? 0
  })

  const selectStored = sql`
    SELECT global_position::float8 AS "globalPosition", stream_id AS "streamId",
      stream_position AS "streamPosition", trace_id AS "traceId", project_id AS "projectId", lane, type, data,
      floor(extract(epoch FROM occurred_at) * 1000)::float8 AS "occurredAt",
      floor(extract(epoch FROM recorded_at) * 1000)::float8 AS "recordedAt"
    FROM step_journal`

  const readStream = Effect.fn("Journal.readStream")(function*(streamId: string) {
    const rows = yield* sql<StoredRow>`${selectStored} WHERE stream_id = ${streamId} ORDER BY global_position`.pipe(
      Effect.mapError(readFailed(`stream ${streamId}`))
    )
    return rows.map(toStored)
  })

  const readTrace = Effect.fn("Journal.readTrace")(function*(traceId: string) {
    const rows = yield* sql<StoredRow>`${selectStored} WHERE trace_id = ${traceId} ORDER BY global_position`.pipe(
      Effect.mapError(readFailed(`trace ${traceId}`))
    )
    return rows.map(toStored)
  })

  const stats: Effect.Effect<JournalStats> = Effect.sync(() => ({
    queued: Math.max(0, offered - written - spilledRows),
    degraded: failing,
    unavailable: isUnavailable(),
    spillFailing,
    spilled: spilledRows,
    written,
    batches,
    retries,
    lost: { ...lost },
    openRuns: openRuns.size
  }))

  return {
    /** This journal's (this process's) instance id: recorded on RunStarted, see Orphans.ts. */
    instance,
    append,
    appendAll,
    appendDurable,
    appendPersisted,
    flush,
    /** True while neither Postgres nor the spill takes writes: new runs are refused (503). */
    unavailable: isUnavailable,
    /** True while Postgres does not take writes (events spill). */
    degraded: () => failing,
    streamHead: (streamId: string): Effect.Effect<number, JournalError> => streamHead(streamId),
    readStream: (streamId: string): Effect.Effect<ReadonlyArray<StoredEvent>, JournalError> => readStream(streamId),
    readTrace: (traceId: string): Effect.Effect<ReadonlyArray<StoredEvent>, JournalError> => readTrace(traceId),
    stats
  } as const
})

/** What ends a run from outside it: RunFailed's fields but its duration. */
export type ClosingFields = Pick<EventOf<"RunFailed">, "status" | "error" | "message" | "orphaned" | "instance" | "shutdown">

/** The events that end `run` (its unsettled attempts, then RunFailed with `fields`), as the catalogue has them. */
export const closingEvents = (run: OpenRun, now: number, fields: ClosingFields): Array<JournalEvent> => {
  const base = { streamId: run.streamId, traceId: run.traceId, projectId: run.projectId, lane: run.lane, occurredAt: now }
  let position = run.next
  const events: Array<JournalEvent> = []
  const why = { ...(fields.orphaned !== undefined ? { orphaned: fields.orphaned } : {}), ...(fields.shutdown !== undefined ? { shutdown: fields.shutdown } : {}) }
  for (const attempt of [...run.attempts].sort((a, b) => a - b)) {
    const { _tag, ...data }: EventOf<"AttemptFailed"> = { _tag: "AttemptFailed", attempt, kind: "interrupted", message: fields.message, ...why }
    events.push({ ...base, streamPosition: position++, type: _tag, data })
  }
  const { _tag, ...data }: EventOf<"RunFailed"> = { _tag: "RunFailed", ...fields, durationMs: Math.max(0, now - run.startedAt) }
  events.push({ ...base, streamPosition: position, type: _tag, data })
  return events
}

const isEvent = (value: JournalEvent | Iterable<JournalEvent>): value is JournalEvent =>
  typeof (value as JournalEvent).streamId === "string" && !(Symbol.iterator in (value as object))

export class Journal extends Effect.Service<Journal>()("awooop/Journal", {
  scoped: make,
  dependencies: []
}) {}
