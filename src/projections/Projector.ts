/**
 * The projector: follows the step journal in commit order and keeps the projections current.
 *
 * Commit order, not insert order: a `global_position` is taken when a row is inserted, but a
 * transaction that inserted early may commit late. Reading "everything after the last position
 * seen" would skip its rows forever. So (DESIGN.md) each row carries its writing transaction's id,
 * and the projector reads only rows whose transaction is older than every transaction still
 * running — `transaction_id < pg_snapshot_xmin(pg_current_snapshot())` — in the order
 * (transaction_id, global_position). Every row below that horizon is committed (or rolled back and
 * invisible), so nothing can appear behind the checkpoint later.
 *
 * Each batch is one transaction: lock the checkpoint row, read the next events below the horizon,
 * fold them (Projections.fold), write the changed states and the additive differences, move the
 * checkpoint. The checkpoint and the projections commit together, so a crash re-delivers nothing;
 * and the folds ignore a re-delivered event anyway (per-stream `last_position`). Two gateway
 * replicas serialise on the checkpoint row (the background loop skips a tick when it is taken).
 *
 * Catching up, the next batch is read and folded on the side while the current one is written;
 * it is used only if the checkpoint, once locked, is where it was prepared from.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Cause, Clock, Config, Context, Duration, Effect, Fiber, Layer, Ref, Schedule } from "effect"
import type { ProjectionEvent } from "./Event.ts"
import { applyEvents, type PreparedBatch, prepareEvents, type StreamStates, writeBatch } from "./Projections.ts"

// ---------------------------------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------------------------------

/** Position in commit order: the last event applied. */
export interface Checkpoint {
  /** xid8 as decimal text */
  readonly transactionId: string
  readonly globalPosition: number
}

export const origin: Checkpoint = { transactionId: "0", globalPosition: 0 }

/** Where the live projections live (the migrations create them in the default schema). */
export const liveSchema = "public"

/** The checkpoint of the projector that maintains run_state, host_state, cost_ledger and metrics. */
export const checkpointName = "projections"

export const checkpointTable = "projector_checkpoints"

export const ensureCheckpoint = (sql: SqlClient.SqlClient, schema: string, name: string = checkpointName) =>
  sql`INSERT INTO ${sql(`${schema}.${checkpointTable}`)} (name, transaction_id, global_position)
      VALUES (${name}, '0'::xid8, 0) ON CONFLICT (name) DO NOTHING`.pipe(Effect.asVoid)

export const readCheckpoint = (
  sql: SqlClient.SqlClient,
  schema: string,
  name: string = checkpointName,
  lock: "none" | "update" | "update-skip-locked" | "share" = "none"
): Effect.Effect<Checkpoint | null, SqlError> => {
  const clause = lock === "none" ? "" : lock === "update" ? "FOR UPDATE" : lock === "share" ? "FOR SHARE" : "FOR UPDATE SKIP LOCKED"
  return sql<Checkpoint>`
    SELECT transaction_id::text AS "transactionId", global_position::float8 AS "globalPosition"
    FROM ${sql(`${schema}.${checkpointTable}`)} WHERE name = ${name} ${sql.literal(clause)}`.pipe(
    Effect.map((rows) => rows[0] ?? null)
  )
}

export const writeCheckpoint = (sql: SqlClient.SqlClient, schema: string, name: string, at: Checkpoint, events: number) =>
  sql`UPDATE ${sql(`${schema}.${checkpointTable}`)}
      SET transaction_id = ${at.transactionId}::xid8, global_position = ${at.globalPosition}::bigint,
          events = events + ${events}::bigint, updated_at = now()
      WHERE name = ${name}`.pipe(Effect.asVoid)

// ---------------------------------------------------------------------------------------------
// Reading the journal in commit order
// ---------------------------------------------------------------------------------------------

/**
 * "journal": the live table, below the horizon. "journal+archive": also the events `journal
 * archive` moved out of it (a rebuild must see the whole history).
 */
export type Source = "journal" | "journal+archive"

/**
 * What the folds read of an event. RouteDecided carries plan()'s whole input (every host's view)
 * for replay and what-if, but the folds read only its route, model and plan: leaving the hosts'
 * views in the database saves a catch-up moving and parsing ~1 kB per decision (measured: a
 * quarter of the projector's own CPU). `date_part` is a double, cheaper than numeric `extract`.
 */
const eventColumns = `global_position::float8 AS "globalPosition", transaction_id::text AS "transactionId",
  stream_id AS "streamId", stream_position AS "streamPosition", trace_id AS "traceId", project_id AS "projectId",
  lane, type,
  CASE WHEN type = 'RouteDecided'
    THEN jsonb_build_object('input', jsonb_build_object('route', data->'input'->'route', 'model', data->'input'->'model'), 'plan', data->'plan')
    ELSE data END AS data,
  round(date_part('epoch', occurred_at) * 1000)::float8 AS "occurredAt"`

const eventNames = `"globalPosition", "transactionId", "streamId", "streamPosition", "traceId", "projectId", lane, type, data, "occurredAt"`

export const readEvents = (
  sql: SqlClient.SqlClient,
  after: Checkpoint,
  options: { readonly source: Source; readonly limit: number; readonly upTo?: Checkpoint | undefined }
): Effect.Effect<ReadonlyArray<ProjectionEvent>, SqlError> => {
  const past = sql`(transaction_id, global_position) > (${after.transactionId}::xid8, ${after.globalPosition}::bigint)`
  const upTo = options.upTo === undefined
    ? sql.literal("")
    : sql`AND (transaction_id, global_position) <= (${options.upTo.transactionId}::xid8, ${options.upTo.globalPosition}::bigint)`
  const live = (extra: string) => sql`SELECT ${sql.literal(eventColumns + extra)} FROM step_journal
    WHERE ${past} AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) ${upTo}
    ORDER BY transaction_id, global_position LIMIT ${options.limit}`
  if (options.source === "journal") return sql<ProjectionEvent>`${live("")}`
  const order = ", transaction_id AS tx, global_position AS gp"
  return sql<ProjectionEvent>`SELECT ${sql.literal(eventNames)} FROM (
      (SELECT ${sql.literal(eventColumns + order)} FROM step_journal_archive WHERE ${past} ${upTo}
        ORDER BY transaction_id, global_position LIMIT ${options.limit})
      UNION ALL (${live(order)})
    ) e ORDER BY tx, gp LIMIT ${options.limit}`
}

// ---------------------------------------------------------------------------------------------
// Following
// ---------------------------------------------------------------------------------------------

export interface FollowOptions {
  /** Schema of the projection tables and their checkpoint. */
  readonly schema: string
  readonly name?: string | undefined
  readonly source: Source
  readonly batchSize: number
  /** Stop at this checkpoint (inclusive): `verify` rebuilds exactly as far as the live projections are. */
  readonly upTo?: Checkpoint | undefined
  /** Give up at once when another projector holds the checkpoint, instead of waiting for it. */
  readonly skipLocked?: boolean | undefined
}

export type BatchOutcome =
  | { readonly _tag: "Busy" }
  | {
    readonly _tag: "Applied"
    readonly events: number
    readonly applied: number
    readonly checkpoint: Checkpoint
    /** The states of the streams the batch touched, after it (for the next batch). */
    readonly states: StreamStates | undefined
  }

const sameCheckpoint = (a: Checkpoint, b: Checkpoint) =>
  a.transactionId === b.transactionId && a.globalPosition === b.globalPosition

const emptyBatch: PreparedBatch = { runs: [], hosts: [], ledger: [], metrics: [], applied: 0, states: { runs: new Map(), hosts: new Map() } }

const lastOf = (events: ReadonlyArray<ProjectionEvent>): Checkpoint => {
  const last = events[events.length - 1]!
  return { transactionId: last.transactionId, globalPosition: last.globalPosition }
}

/**
 * A batch read and folded ahead of the transaction that writes it: valid only if the checkpoint,
 * once locked, is still `from` (then the tables hold what the fold started from).
 */
export interface Prepared {
  readonly from: Checkpoint
  readonly events: ReadonlyArray<ProjectionEvent>
  readonly batch: PreparedBatch
}

/**
 * One batch in one transaction (see the module comment). A prepared batch is written as it is if
 * the checkpoint is still where it was prepared from; otherwise (another projector moved it) the
 * batch is read and folded again under the lock.
 */
export const applyBatch = (
  sql: SqlClient.SqlClient,
  options: FollowOptions,
  prepared?: Prepared | undefined
): Effect.Effect<BatchOutcome, SqlError> =>
  sql.withTransaction(Effect.gen(function*() {
    const name = options.name ?? checkpointName
    // Projections are derived data: if the server crashes before this commit reaches disk, the
    // projections and their checkpoint are lost together and re-derived from the journal. So the
    // commit need not wait for the WAL flush (the journal's own writes stay synchronous).
    yield* sql`SET LOCAL synchronous_commit TO OFF`
    const from = yield* readCheckpoint(sql, options.schema, name, options.skipLocked ? "update-skip-locked" : "update")
    if (from === null) return { _tag: "Busy" } as const
    let events: ReadonlyArray<ProjectionEvent>
    let batch: PreparedBatch
    if (prepared !== undefined && sameCheckpoint(prepared.from, from)) {
      events = prepared.events
      batch = prepared.batch
      if (events.length > 0) yield* writeBatch(sql, options.schema, batch)
    } else {
      events = yield* readEvents(sql, from, { source: options.source, limit: options.batchSize, upTo: options.upTo })
      if (events.length === 0) return { _tag: "Applied", events: 0, applied: 0, checkpoint: from, states: undefined } as const
      batch = yield* applyEvents(sql, options.schema, events)
    }
    if (events.length === 0) return { _tag: "Applied", events: 0, applied: 0, checkpoint: from, states: undefined } as const
    const checkpoint = lastOf(events)
    yield* writeCheckpoint(sql, options.schema, name, checkpoint, events.length)
    return { _tag: "Applied", events: events.length, applied: batch.applied, checkpoint, states: batch.states } as const
  }))

export interface CatchUpResult {
  /** Events read and folded (including re-deliveries and events no projection uses). */
  readonly events: number
  readonly checkpoint: Checkpoint | null
  /** Another projector held the checkpoint (only with `skipLocked`). */
  readonly busy: boolean
}

/**
 * Batches until nothing is left below the horizon (or `upTo` is reached). While one batch is
 * written in its transaction, the next is read and folded on the side (its states: the batch in
 * flight's for the streams it touched, the tables' for the others, which it does not write), so
 * the database writes while the projector reads and computes. A quiet journal costs one
 * read-only query.
 */
export const catchUp = (sql: SqlClient.SqlClient, options: FollowOptions): Effect.Effect<CatchUpResult, SqlError> =>
  Effect.gen(function*() {
    const name = options.name ?? checkpointName
    const stored = yield* readCheckpoint(sql, options.schema, name)
    if (stored === null) yield* ensureCheckpoint(sql, options.schema, name)
    const prepare = (from: Checkpoint, known: StreamStates | undefined) =>
      Effect.flatMap(
        readEvents(sql, from, { source: options.source, limit: options.batchSize, upTo: options.upTo }),
        (events): Effect.Effect<Prepared, SqlError> =>
          events.length === 0
            ? Effect.succeed({ from, events, batch: emptyBatch })
            : Effect.map(prepareEvents(sql, options.schema, events, known), (batch) => ({ from, events, batch }))
      )
    let current = yield* prepare(stored ?? origin, undefined)
    let total = 0
    let checkpoint: Checkpoint | null = stored ?? origin
    while (current.events.length > 0) {
      const last = lastOf(current.events)
      const next = current.events.length === options.batchSize
        ? yield* Effect.fork(prepare(last, current.batch.states))
        : null
      const stopNext = next === null ? Effect.void : Fiber.interrupt(next)
      const outcome: BatchOutcome = yield* applyBatch(sql, options, current).pipe(Effect.onError(() => stopNext))
      if (outcome._tag === "Busy") {
        yield* stopNext
        return { events: total, checkpoint, busy: true }
      }
      total += outcome.events
      checkpoint = outcome.checkpoint
      if (outcome.events === 0) {
        yield* stopNext
        break
      }
      if (!sameCheckpoint(outcome.checkpoint, last)) {
        // Another projector had moved the checkpoint: what was prepared on the side is stale.
        yield* stopNext
        current = yield* prepare(outcome.checkpoint, outcome.states)
        continue
      }
      if (next === null) break
      current = yield* Fiber.join(next)
    }
    return { events: total, checkpoint, busy: false }
  })

/**
 * Catches up until no event is behind (tests, benchmarks, the CLI): the horizon is server-wide, so
 * a write transaction of any session on the server delays (never skips) the last events; this
 * waits for them, up to `timeoutMs`. Returns the events folded and how many are still behind.
 */
export const catchUpFully = (
  sql: SqlClient.SqlClient,
  options: FollowOptions,
  timeoutMs = 10_000
): Effect.Effect<{ readonly events: number; readonly behind: number }, SqlError> =>
  Effect.gen(function*() {
    const deadline = (yield* Clock.currentTimeMillis) + timeoutMs
    let events = 0
    for (;;) {
      events += (yield* catchUp(sql, options)).events
      const behind = (yield* lag(sql, options.schema, options.name ?? checkpointName)).eventsBehind
      if (behind === 0 || (yield* Clock.currentTimeMillis) > deadline) return { events, behind }
      yield* Effect.sleep(Duration.millis(20))
    }
  })

export interface ProjectorLag {
  /** Journal events past the checkpoint (committed or not yet below the horizon), counted up to `lagCountCap`. */
  readonly eventsBehind: number
  readonly checkpoint: Checkpoint | null
}

export const lagCountCap = 10_000_000

export const lag = (
  sql: SqlClient.SqlClient,
  schema: string = liveSchema,
  name: string = checkpointName
): Effect.Effect<ProjectorLag, SqlError> =>
  Effect.gen(function*() {
    const checkpoint = yield* readCheckpoint(sql, schema, name)
    const at = checkpoint ?? origin
    const rows = yield* sql<{ readonly behind: number }>`
      SELECT count(*)::float8 AS behind FROM (
        SELECT 1 FROM step_journal
        WHERE (transaction_id, global_position) > (${at.transactionId}::xid8, ${at.globalPosition}::bigint)
        LIMIT ${lagCountCap}) s`
    return { eventsBehind: rows[0]?.behind ?? 0, checkpoint }
  })

// ---------------------------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------------------------

export interface ProjectorConfigShape {
  /** Pause between catch-ups when the journal is quiet; default 250 ms. */
  readonly interval: Duration.DurationInput
  /** Events per transaction; default 10 000. */
  readonly batchSize: number
  /** Run the background loop (a gateway replica may leave projecting to others); default true. */
  readonly enabled: boolean
}

export const projectorConfigDefaults: ProjectorConfigShape = {
  interval: Duration.millis(250),
  batchSize: 10_000,
  enabled: true
}

export class ProjectorConfig extends Context.Reference<ProjectorConfig>()("awooop/ProjectorConfig", {
  defaultValue: (): ProjectorConfigShape => projectorConfigDefaults
}) {}

export const projectorConfigLayer = (options: Partial<ProjectorConfigShape>): Layer.Layer<never> =>
  Layer.succeed(ProjectorConfig, { ...projectorConfigDefaults, ...options })

/** `AWOOOP_PROJECTOR_INTERVAL` (duration), `AWOOOP_PROJECTOR_BATCH_SIZE`, `AWOOOP_PROJECTOR_ENABLED` (true/false). */
export const ProjectorConfigFromEnv = Layer.effect(
  ProjectorConfig,
  Config.all({
    interval: Config.duration("AWOOOP_PROJECTOR_INTERVAL").pipe(
      Config.withDefault(Duration.decode(projectorConfigDefaults.interval))
    ),
    batchSize: Config.integer("AWOOOP_PROJECTOR_BATCH_SIZE").pipe(
      Config.validate({ message: "must be ≥ 1", validation: (n) => n >= 1 }),
      Config.withDefault(projectorConfigDefaults.batchSize)
    ),
    enabled: Config.boolean("AWOOOP_PROJECTOR_ENABLED").pipe(Config.withDefault(projectorConfigDefaults.enabled))
  })
)

export interface ProjectorStatus {
  /** Events folded by this process since it started. */
  readonly events: number
  readonly checkpoint: Checkpoint | null
  /** epoch ms of the last catch-up that reached the horizon */
  readonly caughtUpAt: number | null
  /** The last failure, while the database is failing; null once a catch-up succeeds again. */
  readonly failing: string | null
}

export class Projector extends Effect.Service<Projector>()("awooop/Projector", {
  scoped: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const config = yield* ProjectorConfig
    const permit = yield* Effect.makeSemaphore(1)
    const status = yield* Ref.make<ProjectorStatus>({ events: 0, checkpoint: null, caughtUpAt: null, failing: null })
    const options: FollowOptions = { schema: liveSchema, source: "journal", batchSize: config.batchSize }

    const run = (skipLocked: boolean) =>
      permit.withPermits(1)(Effect.gen(function*() {
        const result = yield* catchUp(sql, { ...options, skipLocked })
        const now = yield* Clock.currentTimeMillis
        const before = yield* Ref.getAndUpdate(status, (s) => ({
          events: s.events + result.events,
          checkpoint: result.checkpoint ?? s.checkpoint,
          caughtUpAt: result.busy ? s.caughtUpAt : now,
          failing: null
        }))
        if (before.failing !== null) yield* Effect.logInfo("Projector: the journal database answers again; projecting")
        return result
      }))

    // A failing database (or a bug) must not end the loop: log once per outage, retry every tick.
    const tick = run(true).pipe(
      Effect.catchAllCause((cause) =>
        Ref.getAndUpdate(status, (s) => ({ ...s, failing: Cause.pretty(cause).split("\n")[0] ?? "failure" })).pipe(
          Effect.flatMap((before) =>
            before.failing === null ? Effect.logWarning("Projector: catch-up failed; retrying every interval", cause) : Effect.void
          )
        )
      )
    )
    if (config.enabled) {
      yield* tick.pipe(Effect.repeat(Schedule.spaced(config.interval)), Effect.forkScoped)
    }

    return {
      /** Project everything below the horizon now (waits for another projector holding the checkpoint). */
      catchUp: run(false).pipe(Effect.map((r) => r.events)) as Effect.Effect<number, SqlError>,
      /** Events behind, for /metrics. */
      lag: lag(sql) as Effect.Effect<ProjectorLag, SqlError>,
      status: Ref.get(status) as Effect.Effect<ProjectorStatus>
    } as const
  }),
  dependencies: []
}) {}
