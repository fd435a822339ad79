/**
 * The budget ledger: no paid call without a reservation, and no reservation past the hard kill.
 *
 * - `reserve` runs ONE PostgreSQL transaction that locks the `budget_state` row (`FOR UPDATE`), reads
 *   the operator's hard kill and the period's settled + reserved total from `budget_ledger`, and only
 *   then inserts the reservation. Every reservation takes the same row lock, so concurrent paid calls
 *   (in this process or another one on the same database) can never together pass `hardKillUsd`.
 * - The journal is the record: the paid runner journals BudgetReserved (durably, before the call),
 *   then BudgetSettled or BudgetReleased BEFORE the ledger row changes, so a crash in between leaves
 *   the journal ahead of the table, never behind it. At startup every reservation left open by an
 *   earlier process is settled or released from what its run's stream says — released when the stream
 *   holds neither (the process died before the call settled) — and the operator's hard kill is
 *   brought in line with the last HardKillTripped / HardKillReset on the "budget" stream.
 * - Any database error is a `LedgerError`, and the caller refuses the paid call (fail closed).
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Cause, Clock, Data, Duration, Effect, Exit, Fiber, Option, Schedule, type Scope } from "effect"
import { GatewayConfigTag } from "../config/GatewayConfig.ts"
import { type BudgetEvent, decodeEvent } from "../domain/Events.ts"
import { Journal } from "../journal/Journal.ts"
import { makeStreamWriter, type StreamWriter } from "../journal/StreamWriter.ts"

export class LedgerError extends Data.TaggedError("LedgerError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

export type Period = "hour" | "day" | "month"

/** The UTC start of the period containing `now`. */
export const periodStart = (now: number, period: Period): Date => {
  const d = new Date(now)
  switch (period) {
    case "hour": return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate(), d.getUTCHours()))
    case "day": return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()))
    case "month": return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1))
  }
}

/** "$5.00", "$0.002655": cents always, and up to micro-dollars when they matter. */
export const formatUsd = (usd: number): string => {
  const fixed = (Math.round(usd * 1e6) / 1e6).toFixed(6)
  return `$${fixed.replace(/0{1,4}$/, "")}`
}

export interface Reservation {
  readonly reservationId: string
  readonly runId: string
  readonly traceId: string | null
  readonly projectId: string | null
  readonly lane: string
  readonly provider: string
  readonly model: string
  /** The worst-case cost of the call. */
  readonly amountUsd: number
  /** The caller's name (config `callers:`), and its own cap inside the global one. */
  readonly caller?: string | null
  readonly callerBudget?: { readonly hardKillUsd: number; readonly period: Period } | undefined
}

export type ReserveResult =
  | {
    readonly _tag: "Reserved"
    readonly periodStart: string
    readonly capUsd: number
    /** Settled plus reserved in the period before this reservation. */
    readonly committedUsd: number
  }
  | {
    readonly _tag: "Denied"
    /** Names the hard kill and the figures: for the journal and the operator only. */
    readonly reason: string
    /** The same without any figure: what the caller's 503 says (spend is not the caller's to read). */
    readonly publicReason: string
    readonly operatorKill: boolean
    readonly periodStart: string
    readonly capUsd: number
    readonly committedUsd: number
  }

export interface HardKillState {
  readonly tripped: boolean
  readonly reason: string | null
  readonly changedAt: string | null
}

export interface BudgetStatus {
  readonly hardKill: HardKillState
  readonly period: Period
  readonly periodStart: string
  readonly capUsd: number
  readonly settledUsd: number
  readonly reservedUsd: number
  readonly remainingUsd: number
  readonly openReservations: number
}

const ledgerError = (what: string) => (cause: unknown) => new LedgerError({ message: `budget ledger: cannot ${what}`, cause })

/**
 * How long a ledger statement may take before the caller is refused (fail closed). Without it a
 * black-holed database (a partition: no error, no answer) holds every paid request until it heals.
 */
export const LEDGER_TIMEOUT = Duration.seconds(5)

/**
 * Runs `self` in its own fiber and gives up after LEDGER_TIMEOUT without waiting for it (its
 * statement cannot be cancelled on an unreachable database either). A defect (a transaction whose
 * ROLLBACK or COMMIT failed on a cut connection) is a LedgerError too: the ledger is unreachable.
 * `abandon: "interrupt"` stops an abandoned `self` (a reservation rolls back); "finish" lets it
 * finish once the database answers (a settle or release that lands late is still right). When the
 * outcome is unknown (abandoned, or a defect mid-transaction) and `undo` says so, `undo` runs in the
 * background, retried until the database takes it: a reservation that committed after all is released.
 * Those fibers run in `scope`, the Budget service's: closing the gateway stops them (as the end of
 * the process does) instead of leaving them retrying on a closed pool; a reservation left open is an
 * orphan the next start releases (recoverOrphans).
 */
const bounded = <A>(
  scope: Scope.Scope,
  what: string,
  self: Effect.Effect<A, LedgerError>,
  options: {
    readonly abandon: "interrupt" | "finish"
    readonly undo?: (exit: Exit.Exit<A, LedgerError>) => Effect.Effect<void, LedgerError> | null
  }
): Effect.Effect<A, LedgerError> =>
  Effect.gen(function*() {
    const fiber = yield* Effect.forkIn(self, scope)
    const undoLater = (exit: Exit.Exit<A, LedgerError>) => {
      const undo = options.undo?.(exit) ?? null
      return undo === null ? Effect.void : undo.pipe(
        Effect.retry(Schedule.spaced(Duration.seconds(1)).pipe(Schedule.intersect(Schedule.recurs(300)))),
        Effect.catchAllCause((cause) => Effect.logError(`Budget: undoing an unfinished ${what} failed`, cause)),
        Effect.forkIn(scope),
        Effect.asVoid
      )
    }
    const abandon = Effect.gen(function*() {
      if (options.abandon === "interrupt") yield* Fiber.interruptFork(fiber)
      yield* Fiber.await(fiber).pipe(Effect.flatMap(undoLater), Effect.forkIn(scope))
    })
    const exit = yield* Fiber.await(fiber).pipe(Effect.timeoutOption(LEDGER_TIMEOUT), Effect.onInterrupt(() => abandon))
    if (Option.isNone(exit)) {
      yield* abandon
      return yield* new LedgerError({ message: `budget ledger: cannot ${what}: no answer within ${Duration.format(LEDGER_TIMEOUT)}` })
    }
    if (Exit.isFailure(exit.value) && Cause.isDie(exit.value.cause)) {
      yield* undoLater(exit.value)
      return yield* new LedgerError({ message: `budget ledger: cannot ${what}: the connection failed mid-transaction`, cause: Cause.squash(exit.value.cause) })
    }
    return yield* exit.value
  })

interface Committed {
  readonly settled: number
  readonly reserved: number
  readonly open: number
}

/** Settled and reserved in the period starting at `start`, and how many reservations are open. */
const committedIn = (sql: SqlClient.SqlClient, start: string) =>
  sql<Committed>`
    SELECT
      COALESCE(SUM(settled_usd) FILTER (WHERE status = 'settled'), 0)::float8 AS settled,
      COALESCE(SUM(reserved_usd) FILTER (WHERE status = 'reserved'), 0)::float8 AS reserved,
      COUNT(*) FILTER (WHERE status = 'reserved')::int AS open
    FROM budget_ledger WHERE period_start = ${start}::timestamptz`.pipe(
    Effect.map((rows): Committed => rows[0] ?? { settled: 0, reserved: 0, open: 0 })
  )

/** What one caller has settled or reserved since `since` (its own period, which may differ from the global one). */
const callerCommittedSince = (sql: SqlClient.SqlClient, caller: string, since: string) =>
  sql<{ readonly committed: number }>`
    SELECT COALESCE(SUM(CASE WHEN status = 'settled' THEN settled_usd ELSE reserved_usd END), 0)::float8 AS committed
    FROM budget_ledger WHERE caller = ${caller} AND created_at >= ${since}::timestamptz AND status IN ('settled', 'reserved')`.pipe(
    Effect.map((rows) => rows[0]?.committed ?? 0)
  )

const readState = (sql: SqlClient.SqlClient) =>
  sql<{ readonly tripped: boolean; readonly reason: string | null; readonly changedAt: string | null }>`
    SELECT tripped, reason, to_char(changed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS "changedAt"
    FROM budget_state WHERE id = 1`

const applyHardKill = (sql: SqlClient.SqlClient, tripped: boolean, reason: string | null) =>
  sql.withTransaction(
    sql`SELECT 1 FROM budget_state WHERE id = 1 FOR UPDATE`.pipe(
      Effect.zipRight(sql`UPDATE budget_state SET tripped = ${tripped}, reason = ${reason}, changed_at = now() WHERE id = 1`)
    )
  )

type Denied = Extract<ReserveResult, { readonly _tag: "Denied" }>

/** A micro-cent of slack for float sums; the table keeps exact numerics. */
const exceeds = (committedUsd: number, amountUsd: number, capUsd: number) => committedUsd + amountUsd > capUsd + 1e-9

/** The operator's switch is on (or its row is missing: fail closed). */
const operatorKillDenial = (reason: string | null | undefined, start: string, capUsd: number, committedUsd: number): Denied => {
  const words = `the operator tripped the budget hard kill${reason ? ` (${reason})` : ""}`
  return { _tag: "Denied", reason: words, publicReason: words, operatorKill: true, periodStart: start, capUsd, committedUsd }
}

/** The global cap of the period would be passed. */
const capDenial = (r: Reservation, period: Period, start: string, capUsd: number, committedUsd: number): Denied => ({
  _tag: "Denied",
  reason: `hardKillUsd ${formatUsd(capUsd)} per ${period} would be exceeded: ${formatUsd(committedUsd)} settled or reserved since ${start}, this call may cost up to ${formatUsd(r.amountUsd)}`,
  publicReason: `the budget's hardKillUsd per ${period} would be exceeded`,
  operatorKill: false,
  periodStart: start,
  capUsd,
  committedUsd
})

/** The caller's own cap inside the global one would be passed. */
const callerDenial = (
  r: Reservation & { readonly caller: string },
  own: NonNullable<Reservation["callerBudget"]>,
  ownStart: string,
  callerCommitted: number
): Denied => ({
  _tag: "Denied",
  reason: `caller ${r.caller}'s hardKillUsd ${formatUsd(own.hardKillUsd)} per ${own.period} would be exceeded: ${formatUsd(callerCommitted)} settled or reserved since ${ownStart}, this call may cost up to ${formatUsd(r.amountUsd)}`,
  publicReason: `caller ${r.caller}'s budget per ${own.period} would be exceeded`,
  operatorKill: false,
  periodStart: ownStart,
  capUsd: own.hardKillUsd,
  committedUsd: callerCommitted
})

/** The caller's own cap, checked inside the reservation's transaction: a denial, or null when it has room. */
const checkCallerCap = (sql: SqlClient.SqlClient, r: Reservation, now: number) =>
  Effect.gen(function*() {
    const own = r.callerBudget
    const caller = r.caller
    if (own === undefined || caller == null) return null
    const ownStart = periodStart(now, own.period).toISOString()
    const callerCommitted = yield* callerCommittedSince(sql, caller, ownStart)
    return exceeds(callerCommitted, r.amountUsd, own.hardKillUsd) ? callerDenial({ ...r, caller }, own, ownStart, callerCommitted) : null
  })

/** Startup: the operator's hard kill follows the last HardKillTripped / HardKillReset on the "budget" stream. */
const reconcileHardKill = (sql: SqlClient.SqlClient, journal: Journal) =>
  Effect.gen(function*() {
    const events = yield* journal.readStream("budget")
    const last = events.map((e) => decodeEvent(e.type, e.data)).reverse().find((e) => e._tag === "HardKillTripped" || e._tag === "HardKillReset")
    if (last?._tag !== "HardKillTripped" && last?._tag !== "HardKillReset") return
    const tripped = last._tag === "HardKillTripped"
    const [state] = yield* readState(sql)
    if (state?.tripped !== tripped) {
      yield* applyHardKill(sql, tripped, last.reason)
      yield* Effect.logWarning(`Budget: hard kill restored from the journal (${tripped ? "tripped" : "reset"})`)
    }
  })

interface OpenReservation {
  readonly reservationId: string
  readonly runId: string
  readonly traceId: string | null
  readonly projectId: string | null
  readonly lane: string | null
  readonly provider: string
  readonly reservedUsd: number
}

interface Closing {
  readonly settle: (reservationId: string, chargedUsd: number, costUsd: number | null) => Effect.Effect<void, LedgerError>
  readonly release: (reservationId: string, reason: string) => Effect.Effect<void, LedgerError>
}

/**
 * Closes one reservation an earlier process left open as its run's stream says: settled when the
 * stream settled it, released otherwise (journaling the release first when the stream has none).
 * True when it was released.
 */
const closeOrphan = (journal: Journal, ledger: Closing, row: OpenReservation) =>
  Effect.gen(function*() {
    const streamId = `run-${row.runId}`
    const events = (yield* journal.readStream(streamId)).map((e) => decodeEvent(e.type, e.data))
    const settled = events.find((e) => e._tag === "BudgetSettled" && e.reservationId === row.reservationId)
    if (settled?._tag === "BudgetSettled") {
      yield* ledger.settle(row.reservationId, settled.chargedUsd, settled.costUsd)
      return false
    }
    const releasedEvent = events.find((e) => e._tag === "BudgetReleased" && e.reservationId === row.reservationId)
    const reason = releasedEvent?._tag === "BudgetReleased"
      ? releasedEvent.reason
      : "orphaned: the gateway process stopped before the paid call settled; released at restart"
    if (releasedEvent === undefined) {
      const run = makeStreamWriter(journal, { streamId, traceId: row.traceId, projectId: row.projectId, lane: row.lane }, yield* journal.streamHead(streamId))
      yield* run.appendDurable({
        _tag: "BudgetReleased",
        reservationId: row.reservationId,
        provider: row.provider,
        reservedUsd: row.reservedUsd,
        reason,
        orphaned: true
      })
    }
    yield* ledger.release(row.reservationId, reason)
    return true
  })

/** Startup: every reservation left open by another (earlier) process is settled or released from its run's stream. */
const recoverOrphans = (sql: SqlClient.SqlClient, journal: Journal, owner: string, ledger: Closing, budgetStream: StreamWriter<BudgetEvent>) =>
  Effect.gen(function*() {
    const open = yield* sql<OpenReservation>`
      SELECT reservation_id AS "reservationId", run_id AS "runId", trace_id AS "traceId", project_id AS "projectId", lane, provider,
             reserved_usd::float8 AS "reservedUsd"
      FROM budget_ledger WHERE status = 'reserved' AND owner <> ${owner} ORDER BY created_at`
    let released = 0
    for (const row of open) {
      if (yield* closeOrphan(journal, ledger, row)) released++
    }
    if (released > 0) {
      yield* budgetStream.append({ _tag: "OrphanedReservationsReleased", count: released, reservationIds: open.map((r) => r.reservationId) })
      yield* Effect.logWarning(`Budget: released ${released} reservation(s) left open by a previous gateway process`)
    }
  })

const make = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const journal = yield* Journal
  const config = yield* GatewayConfigTag
  const budget = config.budget
  const period: Period = budget?.period ?? "day"
  const capUsd = budget?.hardKillUsd ?? 0
  /** This process: reservations it did not make and that are still open at its start are orphans. */
  const owner = crypto.randomUUID()
  const budgetStream = makeStreamWriter<BudgetEvent>(
    journal,
    { streamId: "budget", traceId: null, projectId: null, lane: null },
    yield* journal.streamHead("budget").pipe(Effect.orDie)
  )
  // One operator change at a time, so the journal's order is the table's order.
  const adminLock = yield* Effect.makeSemaphore(1)
  // Reservations of this process queue here, in memory, rather than each holding a pooled connection
  // while it waits for the row lock (the journal writer needs those connections). The row lock still
  // orders them against other processes on the same database.
  const reserveLock = yield* Effect.makeSemaphore(1)

  const reserve = (r: Reservation): Effect.Effect<ReserveResult, LedgerError> =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const start = periodStart(now, period).toISOString()
      return yield* reserveLock.withPermits(1)(sql.withTransaction(Effect.gen(function*() {
        // The lock: every reservation (and every operator change) queues on this one row.
        const [state] = yield* sql<{ readonly tripped: boolean; readonly reason: string | null }>`
          SELECT tripped, reason FROM budget_state WHERE id = 1 FOR UPDATE`
        const committed = yield* committedIn(sql, start)
        const committedUsd = committed.settled + committed.reserved
        if (state === undefined || state.tripped) return operatorKillDenial(state?.reason, start, capUsd, committedUsd)
        if (exceeds(committedUsd, r.amountUsd, capUsd)) return capDenial(r, period, start, capUsd, committedUsd)
        const callerDenied = yield* checkCallerCap(sql, r, now)
        if (callerDenied !== null) return callerDenied
        yield* sql`
          INSERT INTO budget_ledger (reservation_id, period_start, run_id, trace_id, project_id, lane, provider, model, reserved_usd, status, owner, caller)
          VALUES (${r.reservationId}, ${start}::timestamptz, ${r.runId}, ${r.traceId}, ${r.projectId}, ${r.lane}, ${r.provider}, ${r.model},
                  ${r.amountUsd}, 'reserved', ${owner}, ${r.caller ?? null})`
        return { _tag: "Reserved", periodStart: start, capUsd, committedUsd } satisfies ReserveResult
      })))
    }).pipe(Effect.mapError(ledgerError("reserve")), Effect.withSpan("Budget.reserve"))

  /** Charges `chargedUsd` against the cap (the real cost, or the reservation when usage is unknown). */
  const settle = (reservationId: string, chargedUsd: number, costUsd: number | null): Effect.Effect<void, LedgerError> =>
    sql`UPDATE budget_ledger SET status = 'settled', settled_usd = ${chargedUsd}, cost_usd = ${costUsd}, closed_at = now()
        WHERE reservation_id = ${reservationId}`.pipe(Effect.asVoid, Effect.mapError(ledgerError("settle")))

  const release = (reservationId: string, reason: string): Effect.Effect<void, LedgerError> =>
    sql`UPDATE budget_ledger SET status = 'released', release_reason = ${reason}, closed_at = now()
        WHERE reservation_id = ${reservationId} AND status = 'reserved'`.pipe(Effect.asVoid, Effect.mapError(ledgerError("release")))

  const status: Effect.Effect<BudgetStatus, LedgerError> = Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const start = periodStart(now, period).toISOString()
    const [state] = yield* readState(sql)
    const c = yield* committedIn(sql, start)
    return {
      hardKill: { tripped: state?.tripped ?? true, reason: state?.reason ?? null, changedAt: state?.changedAt ?? null },
      period,
      periodStart: start,
      capUsd,
      settledUsd: c.settled,
      reservedUsd: c.reserved,
      remainingUsd: Math.max(0, capUsd - c.settled - c.reserved),
      openReservations: c.open
    } satisfies BudgetStatus
  }).pipe(Effect.mapError(ledgerError("read the budget")))

  /** The operator's switch: journaled (durably) on the "budget" stream first, then in force. */
  const setHardKill = (tripped: boolean, reason: string | null, by: string): Effect.Effect<HardKillState, LedgerError> =>
    adminLock.withPermits(1)(Effect.gen(function*() {
      const [before] = yield* readState(sql)
      yield* budgetStream.appendDurable({
        _tag: tripped ? "HardKillTripped" : "HardKillReset",
        tripped,
        reason,
        by,
        wasTripped: before?.tripped ?? null
      })
      yield* applyHardKill(sql, tripped, reason)
      const [after] = yield* readState(sql)
      return { tripped: after?.tripped ?? tripped, reason: after?.reason ?? reason, changedAt: after?.changedAt ?? null }
    })).pipe(Effect.mapError(ledgerError("change the hard kill")))

  // Startup: the journal wins over the table.
  yield* Effect.all([reconcileHardKill(sql, journal), recoverOrphans(sql, journal, owner, { settle, release }, budgetStream)], { discard: true }).pipe(
    // Left open, a reservation still counts against the cap: failing here never lets money through.
    Effect.catchAllCause((cause) => Effect.logError("Budget: startup reconciliation failed; open reservations keep counting against the cap", cause))
  )

  const scope = yield* Effect.scope
  return {
    reserve: (r: Reservation) =>
      bounded(scope, "reserve", reserve(r), {
        abandon: "interrupt",
        // Refused, yet the reservation may have committed (late, or before the connection broke):
        // nothing was spent, so give the headroom back (a no-op when it never committed).
        undo: (exit) =>
          (Exit.isSuccess(exit) && exit.value._tag === "Reserved") || (Exit.isFailure(exit) && Cause.isDie(exit.cause))
            ? release(r.reservationId, "the ledger answered too late or broke mid-transaction; the paid call was refused")
            : null
      }),
    settle: (reservationId: string, chargedUsd: number, costUsd: number | null) => bounded(scope, "settle", settle(reservationId, chargedUsd, costUsd), { abandon: "finish" }),
    release: (reservationId: string, reason: string) => bounded(scope, "release", release(reservationId, reason), { abandon: "finish" }),
    status: bounded(scope, "read the budget", status, { abandon: "interrupt" }),
    setHardKill,
    owner,
    capUsd,
    period
  } as const
})

export class Budget extends Effect.Service<Budget>()("awooop/Budget", {
  scoped: make,
  dependencies: []
}) {}
