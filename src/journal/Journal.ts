/**
 * The journal writer: every routing step goes through here into `step_journal`.
 *
 * - `append` / `appendAll` put events on a bounded in-memory queue. A full queue suspends the caller
 *   (back-pressure); nothing is ever dropped.
 * - One writer fiber takes up to `batchSize` queued items at a time and commits them as ONE
 *   `INSERT … SELECT * FROM unnest($1::text[], …) ON CONFLICT (stream_id, stream_position) DO
 *   NOTHING` (group commit; re-delivering an event is a no-op).
 * - `appendDurable` / `flush` enqueue a marker behind the events and wait for the writer to pass it:
 *   since the queue is FIFO, everything enqueued before the marker is committed when it resolves.
 * - A failing database makes the writer retry the same batch with capped exponential back-off,
 *   forever, warning once per outage.
 * - Closing the service's scope drains the queue (bounded by `shutdownTimeout`); if that is not
 *   possible, it logs how many events were NOT written and fails the pending durable waits.
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
import { Chunk, Config, Context, Data, Deferred, Duration, Effect, Exit, Fiber, Layer, Queue, Schedule } from "effect"

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
  /** failed INSERT attempts that were retried */
  readonly retries: number
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
  /** how long closing the journal may take to drain the queue; default 10 s */
  readonly shutdownTimeout: Duration.DurationInput
  /** first retry delay after a failed write; default 50 ms */
  readonly retryBase: Duration.DurationInput
  /** longest retry delay; default 2 s */
  readonly retryCap: Duration.DurationInput
}

export const journalConfigDefaults: JournalConfigShape = {
  capacity: 10_000,
  batchSize: 512,
  shutdownTimeout: Duration.seconds(10),
  retryBase: Duration.millis(50),
  retryCap: Duration.seconds(2)
}

/** Journal settings; the defaults apply unless a layer provides others. */
export class JournalConfig extends Context.Reference<JournalConfig>()("awooop/JournalConfig", {
  defaultValue: (): JournalConfigShape => journalConfigDefaults
}) {}

/** Provide `JournalConfig` with some settings overridden. */
export const journalConfigLayer = (options: Partial<JournalConfigShape>): Layer.Layer<never> =>
  Layer.succeed(JournalConfig, { ...journalConfigDefaults, ...options })

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
    shutdownTimeout: Config.duration("AWOOOP_JOURNAL_SHUTDOWN_TIMEOUT").pipe(
      Config.withDefault(Duration.decode(journalConfigDefaults.shutdownTimeout))
    )
  }).pipe(Effect.map((c): JournalConfigShape => ({ ...journalConfigDefaults, ...c })))
)

// ---------------------------------------------------------------------------------------------
// Queue items and their preparation
// ---------------------------------------------------------------------------------------------

/** An event in the form it is inserted. */
interface Row {
  readonly _tag: "Row"
  readonly streamId: string
  readonly streamPosition: number
  readonly traceId: string | null
  readonly projectId: string | null
  readonly lane: string | null
  readonly type: string
  readonly data: string // JSON text
  readonly occurredAt: string // ISO-8601
}

/** Resolved once every item before it in the queue is committed. */
interface Marker {
  readonly _tag: "Marker"
  readonly done: Deferred.Deferred<void, JournalError>
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

// Lone surrogates in text parameters need no care: node-postgres encodes parameters as UTF-8
// with Buffer, which already replaces them by U+FFFD. NUL is refused by PostgreSQL.
const cleanText = (s: string): string => (s.includes("\u0000") ? s.replaceAll("\u0000", "\uFFFD") : s)

const cleanNullable = (s: string | null): string | null => (s === null ? null : cleanText(s))

const toJson = (data: unknown): string | Invalid => {
  let json: string | undefined
  try {
    json = JSON.stringify(data)
  } catch (cause) {
    return { _tag: "Invalid", error: `data is not JSON-serialisable: ${String(cause)}` }
  }
  if (json === undefined) return "null"
  return json.includes("\\u") ? json.replace(BAD_JSON_ESCAPE, "$1\\ufffd") : json
}

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
    occurredAt: new Date(at).toISOString()
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

const invalidEvent = (invalid: Invalid) => Effect.dieMessage(`Journal: cannot store event ${invalid.error}`)

// ---------------------------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------------------------

interface StoredRow {
  readonly globalPosition: number
  readonly streamId: string
  readonly streamPosition: number
  readonly traceId: string | null
  readonly projectId: string | null
  readonly lane: string | null
  readonly type: string
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
  /** The batch currently being written (kept so a timed-out shutdown can count it). */
  let inFlight: ReadonlyArray<Item> = []

  const insert = (rows: ReadonlyArray<Row>) => {
    const n = rows.length
    const streamIds = new Array<string>(n)
    const positions = new Array<number>(n)
    const traceIds = new Array<string | null>(n)
    const projectIds = new Array<string | null>(n)
    const lanes = new Array<string | null>(n)
    const types = new Array<string>(n)
    const data = new Array<string>(n)
    const occurredAt = new Array<string>(n)
    for (let i = 0; i < n; i++) {
      const row = rows[i]!
      streamIds[i] = row.streamId
      positions[i] = row.streamPosition
      traceIds[i] = row.traceId
      projectIds[i] = row.projectId
      lanes[i] = row.lane
      types[i] = row.type
      data[i] = row.data
      occurredAt[i] = row.occurredAt
    }
    // node-postgres serialises JS arrays as PostgreSQL array literals (NULL for null, every other
    // element quoted and escaped), so each column travels as ONE parameter.
    return sql`INSERT INTO step_journal
        (stream_id, stream_position, trace_id, project_id, lane, type, data, occurred_at)
      SELECT * FROM unnest(
        ${streamIds}::text[], ${positions}::int[], ${traceIds}::text[], ${projectIds}::text[],
        ${lanes}::text[], ${types}::text[], ${data}::jsonb[], ${occurredAt}::timestamptz[])
      ON CONFLICT (stream_id, stream_position) DO NOTHING`
  }

  const retrySchedule = Schedule.exponential(config.retryBase).pipe(
    Schedule.union(Schedule.spaced(config.retryCap)),
    Schedule.jittered
  )

  /** Commit `rows`, retrying until the database accepts them. Fails only by interruption. */
  const writeWithRetry = (rows: ReadonlyArray<Row>): Effect.Effect<void> =>
    insert(rows).pipe(
      Effect.catchAllDefect((defect) => new JournalError({ reason: "unexpected defect while writing", cause: defect })),
      Effect.tapError((error) => {
        retries++
        if (failing) return Effect.void
        failing = true
        return Effect.logWarning(
          `Journal: writing a batch of ${rows.length} events failed; retrying with back-off until the database accepts it (warning once per outage)`,
          error
        )
      }),
      Effect.retry(retrySchedule),
      Effect.catchAll(() => Effect.never), // unreachable: the schedule never ends
      Effect.tap(() => {
        if (!failing) return Effect.void
        failing = false
        return Effect.logInfo("Journal: the database accepts writes again")
      }),
      Effect.withSpan("Journal.writeBatch", { attributes: { "journal.events": rows.length } })
    )

  /** Write one batch of items; resolve its markers. Returns whether it contained `Stop`. */
  const processBatch = (items: ReadonlyArray<Item>): Effect.Effect<boolean> =>
    Effect.suspend(() => {
      inFlight = items
      const rows: Array<Row> = []
      for (const item of items) if (item._tag === "Row") rows.push(item)
      const write = rows.length === 0 ? Effect.void : writeWithRetry(rows)
      return Effect.map(write, () => {
        let stop = false
        written += rows.length
        if (rows.length > 0) batches++
        inFlight = []
        for (const item of items) {
          if (item._tag === "Marker") Deferred.unsafeDone(item.done, Exit.void)
          else if (item._tag === "Stop") stop = true
        }
        return stop
      })
    })

  const writerLoop: Effect.Effect<void> = Effect.gen(function*() {
    while (true) {
      const items = yield* Queue.takeBetween(queue, 1, batchSize)
      const stop = yield* processBatch(Chunk.toReadonlyArray(items))
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

  const shutdown = Effect.gen(function*() {
    closed = true
    const drain = Effect.gen(function*() {
      yield* Queue.offer(queue, STOP)
      yield* Fiber.join(writer)
      // Offers that passed the `closed` check just before it was set may sit behind STOP.
      const rest = yield* takeRemaining
      for (let i = 0; i < rest.length; i += batchSize) {
        yield* processBatch(rest.slice(i, i + batchSize))
      }
    })
    const drained = yield* drain.pipe(Effect.interruptible, Effect.timeout(config.shutdownTimeout), Effect.exit)
    if (Exit.isSuccess(drained)) {
      yield* Effect.logDebug(`Journal: closed; ${written} events written in total`)
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
    Effect.logWarning(`Journal: ${n} event(s) appended after the journal closed; NOT written`)

  const append = (event: JournalEvent): Effect.Effect<void> =>
    Effect.suspend(() => {
      if (closed) return closedWarning(1)
      const row = prepare(event)
      if (row._tag !== "Row") return invalidEvent(row)
      return Effect.map(Queue.offer(queue, row), () => {
        offered++
      })
    })

  const appendAll = (events: Iterable<JournalEvent>): Effect.Effect<void> =>
    Effect.suspend(() => {
      const list = Array.from(events)
      if (list.length === 0) return Effect.void
      if (closed) return closedWarning(list.length)
      const rows = prepareAll(list)
      if (!Array.isArray(rows)) return invalidEvent(rows)
      return Effect.map(Queue.offerAll(queue, rows), () => {
        offered += rows.length
      })
    })

  const closedError = () => new JournalError({ reason: "the journal is closed" })

  const appendDurable = (events: JournalEvent | Iterable<JournalEvent>): Effect.Effect<void, JournalError> =>
    Effect.suspend(() => {
      const list: Array<JournalEvent> = isEvent(events) ? [events] : Array.from(events)
      if (closed) return Effect.fail(closedError())
      const rows = prepareAll(list)
      if (!Array.isArray(rows)) return invalidEvent(rows)
      return Effect.flatMap(Deferred.make<void, JournalError>(), (done) =>
        Queue.offerAll(queue, [...rows, { _tag: "Marker", done } satisfies Marker]).pipe(
          Effect.tap(() => {
            offered += rows.length
          }),
          Effect.zipRight(Deferred.await(done))
        ))
    })

  const flush: Effect.Effect<void> = Effect.suspend(() => {
    if (closed) return Effect.void
    return Effect.flatMap(Deferred.make<void, JournalError>(), (done) =>
      Queue.offer(queue, { _tag: "Marker", done } satisfies Marker).pipe(
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
    queued: Math.max(0, offered - written),
    written,
    batches,
    retries
  }))

  return {
    append,
    appendAll,
    appendDurable,
    flush,
    streamHead: (streamId: string): Effect.Effect<number, JournalError> => streamHead(streamId),
    readStream: (streamId: string): Effect.Effect<ReadonlyArray<StoredEvent>, JournalError> => readStream(streamId),
    readTrace: (traceId: string): Effect.Effect<ReadonlyArray<StoredEvent>, JournalError> => readTrace(traceId),
    stats
  } as const
})

const isEvent = (value: JournalEvent | Iterable<JournalEvent>): value is JournalEvent =>
  typeof (value as JournalEvent).streamId === "string" && !(Symbol.iterator in (value as object))

export class Journal extends Effect.Service<Journal>()("awooop/Journal", {
  scoped: make,
  dependencies: []
}) {}
