/**
 * Async runs (the runbook's `deep-rca`: "reject synchronous request, create async run").
 *
 * A generate/chat on an `async: true` lane, or any `POST /awooop/runs`, becomes a run: stored, then
 * journaled durably (`RunStarted` with `async: true`) before the caller gets 202 and a status URL.
 * A fixed number of workers (`asyncRuns.workers`, apart from the synchronous traffic) take runs in
 * order and run them through the lane actor (`LaneActor.handle(request, { runId, run, attemptsSoFar })`),
 * so a run follows the lane's route, slots, breakers, policy and paid fallback like any request —
 * non-streaming, its answer stored as the Ollama-shaped result.
 *
 * Stream of a run: RunStarted(async) → RunDequeued → RouteDecided → AttemptStarted … →
 * RunCompleted | RunFailed (a cancel is RunFailed with error "RunCancelled"); after a restart
 * RunRequeued {attemptsSoFar} → RunDequeued → … with attempts numbered on; on a graceful shutdown
 * RunSuspended. Status (`fold`) is read from the journal: queued, running, succeeded, failed, cancelled.
 *
 * Durability: the `async_runs` table (migrations/004) holds the request body until the run ends
 * (prompts stay out of the journal) and the result; `finished_at IS NULL` lists what a restarted
 * gateway resumes, each from its journal stream. A run whose stream shows a paid call that was
 * settled — or reserved and never released, so it may have been billed — is not run again: it fails
 * with `PaidCallNotRepeated`, so no paid call is ever repeated. One gateway per database resumes runs
 * (several replicas would need a lease; see DESIGN.md "Scale").
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import { Clock, Data, Deferred, Effect, Exit, Fiber, Option, Queue, Schedule, Stream } from "effect"
import type { GatewayConfig } from "../config/GatewayConfig.ts"
import type { CallerContext } from "../domain/CallerContext.ts"
import { type GatewayError, RunStoreUnavailable } from "../domain/Errors.ts"
import type { Journal, StoredEvent } from "../journal/Journal.ts"
import { makeStreamWriter, type StreamWriter } from "../journal/StreamWriter.ts"
import type { LaneActor, LaneRequest, LaneResult } from "./Lane.ts"

export type AsyncStatus = "queued" | "running" | "succeeded" | "failed" | "cancelled"
export type AsyncOperation = "generate" | "chat"

export interface AttemptRecord {
  readonly attempt: number
  readonly host: string
  readonly tier: string
  readonly startedAt: string
  /** running: no outcome yet; interrupted: the gateway stopped during it. */
  readonly outcome: "running" | "succeeded" | "failed" | "interrupted"
  readonly kind: string | null
  readonly message: string | null
}

export interface AsyncRunState {
  readonly status: AsyncStatus
  readonly attempts: number
  readonly attemptLog: ReadonlyArray<AttemptRecord>
  readonly queuedAt: number | null
  readonly startedAt: number | null
  readonly finishedAt: number | null
  /** Times a worker picked the run up (more than one after a restart). */
  readonly pickups: number
  readonly error: { readonly status: number | null; readonly code: string | null; readonly message: string | null } | null
  /** Reservations of paid calls: settled, and open (reserved, neither settled nor released). */
  readonly paidSettled: ReadonlyArray<string>
  readonly paidOpen: ReadonlyArray<string>
}

const fieldsOf = (v: unknown): Readonly<Record<string, unknown>> =>
  typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {}
const strOf = (v: unknown): string | null => (typeof v === "string" ? v : null)
const numOf = (v: unknown): number | null => (typeof v === "number" && Number.isFinite(v) ? v : null)

export const isTerminal = (status: AsyncStatus) => status === "succeeded" || status === "failed" || status === "cancelled"

/** The run's state from its journal stream; null when the stream is not an async run. Pure. */
export const fold = (events: ReadonlyArray<Pick<StoredEvent, "type" | "data" | "occurredAt">>): AsyncRunState | null => {
  let s = null as AsyncRunState | null
  const interruptRunning = (log: ReadonlyArray<AttemptRecord>) =>
    log.map((a) => (a.outcome === "running" ? { ...a, outcome: "interrupted" as const } : a))
  for (const e of events) {
    const d = fieldsOf(e.data)
    if (s === null) {
      if (e.type !== "RunStarted" || d.async !== true) return null
      s = {
        status: "queued", attempts: 0, attemptLog: [], queuedAt: e.occurredAt, startedAt: null, finishedAt: null,
        pickups: 0, error: null, paidSettled: [], paidOpen: []
      }
      continue
    }
    if (isTerminal(s.status)) break
    switch (e.type) {
      case "RunDequeued":
        s = { ...s, status: "running", startedAt: s.startedAt ?? e.occurredAt, pickups: s.pickups + 1 }
        break
      case "RunRequeued":
      case "RunSuspended":
        s = { ...s, status: "queued", attemptLog: interruptRunning(s.attemptLog) }
        break
      case "AttemptStarted": {
        const attempt: number = numOf(d.attempt) ?? s.attempts + 1
        s = {
          ...s,
          attempts: Math.max(s.attempts, attempt),
          attemptLog: [...interruptRunning(s.attemptLog), {
            attempt,
            host: strOf(d.host) ?? "?",
            tier: strOf(d.tier) ?? "ollama",
            startedAt: new Date(e.occurredAt).toISOString(),
            outcome: "running",
            kind: null,
            message: null
          }]
        }
        break
      }
      case "AttemptFailed":
      case "AttemptSucceeded": {
        const attempt = numOf(d.attempt)
        const idx = attempt !== null ? s.attemptLog.findIndex((a) => a.attempt === attempt) : s.attemptLog.length - 1
        if (idx >= 0) {
          const log: Array<AttemptRecord> = [...s.attemptLog]
          log[idx] = {
            ...log[idx]!,
            outcome: e.type === "AttemptSucceeded" ? "succeeded" : "failed",
            kind: strOf(d.kind),
            message: strOf(d.message)
          }
          s = { ...s, attemptLog: log }
        }
        break
      }
      case "BudgetReserved": {
        const id = strOf(d.reservationId)
        if (id !== null) s = { ...s, paidOpen: [...s.paidOpen, id] }
        break
      }
      case "BudgetSettled": {
        const id = strOf(d.reservationId)
        if (id !== null) s = { ...s, paidOpen: s.paidOpen.filter((r) => r !== id), paidSettled: [...s.paidSettled, id] }
        break
      }
      case "BudgetReleased": {
        const id = strOf(d.reservationId)
        if (id !== null) s = { ...s, paidOpen: s.paidOpen.filter((r) => r !== id) }
        break
      }
      case "RunCompleted":
        s = { ...s, status: "succeeded", finishedAt: e.occurredAt }
        break
      case "RunFailed": {
        const code = strOf(d.error)
        s = {
          ...s,
          status: code === "RunCancelled" ? "cancelled" : "failed",
          finishedAt: e.occurredAt,
          error: { status: numOf(d.status), code, message: strOf(d.message) },
          attemptLog: interruptRunning(s.attemptLog)
        }
        break
      }
    }
  }
  return s
}

export const statusUrlOf = (runId: string) => `/awooop/runs/${runId}`

export interface Submitted {
  readonly runId: string
  readonly traceId: string
  readonly lane: string
  readonly status: "queued"
  readonly statusUrl: string
}

export interface AsyncRunView {
  readonly runId: string
  readonly lane: string
  readonly operation: string
  readonly status: AsyncStatus
  readonly attempts: number
  readonly attemptLog: ReadonlyArray<AttemptRecord>
  readonly traceId: string | null
  readonly projectId: string | null
  readonly queuedAt: string | null
  readonly startedAt: string | null
  readonly finishedAt: string | null
  readonly error: AsyncRunState["error"]
  /** The Ollama-shaped answer once succeeded. */
  readonly result: unknown
  readonly statusUrl: string
}

export type CancelOutcome =
  | { readonly _tag: "NotFound" }
  | { readonly _tag: "AlreadyFinished"; readonly view: AsyncRunView }
  | { readonly _tag: "Cancelled"; readonly view: AsyncRunView }

export interface AsyncRuns {
  readonly submit: (input: {
    readonly lane: LaneActor
    readonly operation: AsyncOperation
    readonly body: Readonly<Record<string, unknown>>
    readonly caller: CallerContext
    readonly prompt: unknown
    readonly via: "inference" | "api"
  }) => Effect.Effect<Submitted, RunStoreUnavailable>
  /** null: not an async run (issue 3's run view answers for the others). */
  readonly view: (runId: string) => Effect.Effect<AsyncRunView | null, unknown>
  readonly cancel: (runId: string) => Effect.Effect<CancelOutcome, unknown>
  /** Runs queued or running in this process. */
  readonly pending: Effect.Effect<number>
}

interface Entry {
  readonly runId: string
  readonly lane: string
  readonly request: LaneRequest
  readonly writer: StreamWriter
  readonly attemptsSoFar: number
  phase: "queued" | "running" | "done"
  cancelRequested: boolean
  fiber: Fiber.RuntimeFiber<LaneResult, GatewayError> | null
  readonly done: Deferred.Deferred<void>
}

interface RunRow {
  readonly run_id: string
  readonly lane: string
  readonly operation: string
  readonly request: Record<string, unknown> | null
  readonly caller: CallerContext
  readonly result: unknown
}

const DURABLE_TIMEOUT_MS = 5_000
const FINISH_TIMEOUT_MS = 10_000
class FinishTimeout extends Data.TaggedError("FinishTimeout")<{ readonly ms: number }> {}

/** A `\u0000` or lone-surrogate escape (PostgreSQL's jsonb refuses both): stored as U+FFFD, as the journal does. */
const badJsonEscape = /(?<!\\)((?:\\\\)*)\\u(?:0000|d[89a-f][0-9a-f]{2})/gi
export const toJsonb = (value: unknown): string => {
  const json = JSON.stringify(value) ?? "null"
  return json.includes("\\u") ? json.replace(badJsonEscape, "$1\\ufffd") : json
}
const dbRetry = Schedule.exponential(100).pipe(Schedule.intersect(Schedule.recurs(4)))

const decodeResult = (bytes: Uint8Array): unknown => {
  const text = new TextDecoder().decode(bytes).trim()
  const last = text.split("\n").filter((l) => l.trim() !== "").at(-1) ?? ""
  try {
    return JSON.parse(last) as unknown
  } catch {
    return { raw: text }
  }
}

export const make = (deps: {
  readonly config: GatewayConfig
  readonly journal: Journal
  readonly sql: SqlClient.SqlClient
  readonly lanes: ReadonlyMap<string, LaneActor>
}) =>
  Effect.gen(function*() {
    const { sql, journal } = deps
    const entries = new Map<string, Entry>()
    const queue = yield* Queue.unbounded<string>()

    const writerFor = (runId: string, caller: CallerContext, lane: string, head: number) =>
      makeStreamWriter(journal, { streamId: `run-${runId}`, traceId: caller.traceId, projectId: caller.projectId, lane }, head)

    const newEntry = (runId: string, lane: string, request: LaneRequest, writer: StreamWriter, attemptsSoFar: number) =>
      Effect.map(Deferred.make<void>(), (done): Entry => ({
        runId, lane, request, writer, attemptsSoFar, phase: "queued", cancelRequested: false, fiber: null, done
      }))

    /** Marks the row finished (and stores the result): after the journal has the terminal event. */
    const finishRow = (runId: string, result: unknown | null) =>
      Effect.gen(function*() {
        if (result !== null) {
          yield* sql`UPDATE async_runs SET result = ${toJsonb(result)}::jsonb WHERE run_id = ${runId}`.pipe(Effect.retry(dbRetry))
        }
        yield* journal.flush
        yield* sql`UPDATE async_runs SET request = NULL, finished_at = now() WHERE run_id = ${runId}`.pipe(Effect.retry(dbRetry))
      }).pipe(
        // Bounded: it runs uninterruptibly, and a database outage must not hold a shutdown forever.
        Effect.timeoutFail({ duration: FINISH_TIMEOUT_MS, onTimeout: () => new FinishTimeout({ ms: FINISH_TIMEOUT_MS }) }),
        Effect.catchAll((error) => Effect.logError(`async run ${runId}: could not record its end in async_runs; the next start reconciles it from the journal`, error))
      )

    const durationSince = (at: number) => Effect.map(Clock.currentTimeMillis, (now) => now - at)

    const failRun = (entry: Pick<Entry, "writer" | "runId">, status: number, code: string, message: string, startedAt: number) =>
      Effect.gen(function*() {
        yield* entry.writer.append("RunFailed", { status, error: code, message, durationMs: yield* durationSince(startedAt) })
        yield* finishRow(entry.runId, null)
      })

    /** What happened to the lane fiber decides the run's end; runs uninterruptibly. */
    const settle = (entry: Entry, exit: Exit.Exit<LaneResult, GatewayError>, shuttingDown: boolean, startedAt: number) =>
      Effect.gen(function*() {
        if (Exit.isSuccess(exit)) {
          const result = exit.value
          const bytes = result._tag === "Unary"
            ? result.bytes
            : yield* Stream.runFold(result.stream, new Uint8Array(0), (acc, chunk) => {
              const next = new Uint8Array(acc.length + chunk.length)
              next.set(acc)
              next.set(chunk, acc.length)
              return next
            })
          yield* finishRow(entry.runId, decodeResult(bytes))
          return
        }
        if (Exit.isInterrupted(exit)) {
          if (entry.cancelRequested) {
            return yield* failRun(entry, 499, "RunCancelled", `run cancelled by DELETE ${statusUrlOf(entry.runId)}`, startedAt)
          }
          if (shuttingDown) {
            // Not an end: the run resumes at the next start (its row stays open).
            yield* entry.writer.append("RunSuspended", { reason: "the gateway is shutting down; the run resumes at its next start" })
            return
          }
        }
        const failure = Option.getOrUndefined(Exit.causeOption(exit).pipe(Option.flatMap((c) => c._tag === "Fail" ? Option.some(c.error) : Option.none())))
        if (failure !== undefined) {
          // The lane journaled RunFailed already.
          yield* finishRow(entry.runId, null)
          return
        }
        yield* Effect.logError(`async run ${entry.runId} died`, Exit.isFailure(exit) ? exit.cause : undefined)
        yield* failRun(entry, 500, "InternalError", "the run failed inside the gateway; the logs have the details", startedAt)
      })

    const execute = (entry: Entry) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          if (entry.phase !== "queued") return
          entry.phase = "running"
          const startedAt = yield* Clock.currentTimeMillis
          const lane = deps.lanes.get(entry.lane)
          if (lane === undefined) {
            yield* failRun(entry, 400, "UnknownLane", `lane ${entry.lane} is no longer in the config`, startedAt)
            return
          }
          yield* entry.writer.append("RunDequeued", { attemptsSoFar: entry.attemptsSoFar })
          const fiber = yield* Effect.fork(Effect.interruptible(
            lane.handle(entry.request, { runId: entry.runId, run: entry.writer, attemptsSoFar: entry.attemptsSoFar })
          ))
          entry.fiber = fiber
          // A cancel that came between the pick-up and the fork.
          if (entry.cancelRequested) yield* Fiber.interruptFork(fiber)
          const awaited = yield* Effect.exit(restore(Fiber.await(fiber)))
          const shuttingDown = Exit.isFailure(awaited)
          const exit = Exit.isSuccess(awaited) ? awaited.value : yield* Fiber.interrupt(fiber)
          entry.fiber = null
          yield* settle(entry, exit, shuttingDown, startedAt)
        }).pipe(
          Effect.ensuring(Effect.suspend(() => {
            entry.phase = "done"
            entries.delete(entry.runId)
            return Deferred.succeed(entry.done, undefined)
          }))
        )
      )

    const worker = Effect.forever(
      Effect.flatMap(Queue.take(queue), (runId) => {
        const entry = entries.get(runId)
        return entry === undefined ? Effect.void : execute(entry)
      })
    )

    const submit: AsyncRuns["submit"] = (input) =>
      Effect.gen(function*() {
        const runId = crypto.randomUUID()
        const lane = input.lane.name
        const caller = input.caller
        const unavailable = (reason: string) => new RunStoreUnavailable({ lane, reason })
        yield* sql`INSERT INTO async_runs (run_id, lane, operation, request, caller)
          VALUES (${runId}, ${lane}, ${input.operation}, ${toJsonb(input.body)}::jsonb, ${toJsonb(caller)}::jsonb)`.pipe(
          Effect.mapError((e) => unavailable(e.message))
        )
        const writer = writerFor(runId, caller, lane, 0)
        const config = input.lane.config
        // Durable before the 202: an accepted run survives a crash.
        yield* writer.appendDurable("RunStarted", {
          runId,
          async: true,
          via: input.via,
          operation: input.operation,
          stream: false,
          requestedStream: input.body.stream ?? null,
          requestedModel: typeof input.body.model === "string" ? input.body.model : null,
          assignedModel: config.model === "" ? null : config.model,
          intent: caller.intent,
          caller: caller.caller ?? null,
          legacy: caller.legacy,
          traceMinted: caller.traceMinted,
          parentSpanId: caller.parentSpanId,
          ...(deps.config.server.journalPrompts ? { prompt: input.prompt } : {})
        }).pipe(
          Effect.timeoutFail({ duration: DURABLE_TIMEOUT_MS, onTimeout: () => unavailable("the journal did not commit in time") }),
          Effect.mapError((e) => (e instanceof RunStoreUnavailable ? e : unavailable("the journal did not commit"))),
          Effect.tapError(() => sql`DELETE FROM async_runs WHERE run_id = ${runId}`.pipe(Effect.ignore))
        )
        const request: LaneRequest = { operation: input.operation, body: input.body, stream: false, caller, prompt: input.prompt }
        const entry = yield* newEntry(runId, lane, request, writer, 0)
        entries.set(runId, entry)
        yield* Queue.offer(queue, runId)
        return { runId, traceId: caller.traceId, lane, status: "queued", statusUrl: statusUrlOf(runId) } satisfies Submitted
      })

    const rowOf = (runId: string) =>
      Effect.map(
        sql<RunRow & { readonly created_at: Date; readonly finished_at: Date | null }>`
          SELECT run_id, lane, operation, NULL::jsonb AS request, caller, result, created_at, finished_at
          FROM async_runs WHERE run_id = ${runId}`,
        (rows) => rows[0] ?? null
      )

    const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString())

    const view = (runId: string) =>
      Effect.gen(function*() {
        const row = yield* rowOf(runId)
        if (row === null) return null
        yield* journal.flush
        const state = fold(yield* journal.readStream(`run-${runId}`))
        if (state === null) return null
        // The lane journals RunCompleted just before the worker stores the answer: until it is
        // stored, the run is still running for the caller (a "succeeded" comes with its result).
        const storing = state.status === "succeeded" && row.result === null && row.finished_at === null
        return {
          runId,
          lane: row.lane,
          operation: row.operation,
          status: storing ? "running" : state.status,
          attempts: state.attempts,
          attemptLog: state.attemptLog,
          traceId: row.caller.traceId ?? null,
          projectId: row.caller.projectId ?? null,
          queuedAt: iso(state.queuedAt),
          startedAt: iso(state.startedAt),
          finishedAt: storing ? null : iso(state.finishedAt),
          error: state.error,
          result: state.status === "succeeded" ? row.result ?? null : null,
          statusUrl: statusUrlOf(runId)
        } satisfies AsyncRunView
      })

    const cancel = (runId: string) =>
      Effect.gen(function*() {
        const entry = entries.get(runId)
        if (entry !== undefined && entry.phase === "queued") {
          entry.phase = "done"
          entries.delete(runId)
          yield* failRun(entry, 499, "RunCancelled", `run cancelled by DELETE ${statusUrlOf(runId)} while queued`, yield* Clock.currentTimeMillis)
          yield* Deferred.succeed(entry.done, undefined)
        } else if (entry !== undefined && entry.phase === "running") {
          entry.cancelRequested = true
          if (entry.fiber !== null) yield* Fiber.interruptFork(entry.fiber)
          yield* Deferred.await(entry.done)
        } else if (entry === undefined) {
          // Not in this process's hands (its recovery failed, say): cancel through the journal.
          const current = yield* view(runId)
          if (current === null) return { _tag: "NotFound" } satisfies CancelOutcome
          if (isTerminal(current.status)) return { _tag: "AlreadyFinished", view: current } satisfies CancelOutcome
          const row = yield* rowOf(runId)
          const head = yield* journal.streamHead(`run-${runId}`)
          const writer = writerFor(runId, row!.caller, row!.lane, head)
          yield* failRun({ runId, writer }, 499, "RunCancelled", `run cancelled by DELETE ${statusUrlOf(runId)}`, yield* Clock.currentTimeMillis)
        }
        const after = yield* view(runId)
        if (after === null) return { _tag: "NotFound" } satisfies CancelOutcome
        return after.status === "cancelled"
          ? { _tag: "Cancelled", view: after } satisfies CancelOutcome
          : { _tag: "AlreadyFinished", view: after } satisfies CancelOutcome
      })

    /** Picks up the runs an earlier process left open, each from its journal stream. */
    const recover = Effect.gen(function*() {
      const open = yield* sql<RunRow>`
        SELECT run_id, lane, operation, request, caller, result FROM async_runs
        WHERE finished_at IS NULL ORDER BY created_at`
      let resumed = 0
      for (const row of open) {
        if (entries.has(row.run_id)) continue
        const events = yield* journal.readStream(`run-${row.run_id}`)
        const state = fold(events)
        const head = events.reduce((max, e) => Math.max(max, e.streamPosition + 1), 0)
        const writer = writerFor(row.run_id, row.caller, row.lane, head)
        if (state === null) {
          // Its RunStarted never committed: the caller never got a 202 for it.
          yield* sql`DELETE FROM async_runs WHERE run_id = ${row.run_id}`
          continue
        }
        if (isTerminal(state.status)) {
          yield* finishRow(row.run_id, null)
          continue
        }
        const now = yield* Clock.currentTimeMillis
        if (row.result !== null && row.result !== undefined) {
          // The answer was stored but its RunCompleted did not reach the journal before the stop.
          const r = fieldsOf(row.result)
          yield* writer.append("RunCompleted", {
            recovered: true,
            endpoint: state.attemptLog.at(-1)?.host ?? null,
            providerTier: state.attemptLog.at(-1)?.tier ?? null,
            inputTokens: numOf(r.prompt_eval_count),
            outputTokens: numOf(r.eval_count),
            doneReason: strOf(r.done_reason),
            durationMs: state.queuedAt === null ? null : now - state.queuedAt
          })
          yield* finishRow(row.run_id, null)
          continue
        }
        if (state.paidSettled.length > 0 || state.paidOpen.length > 0) {
          const which = [...state.paidSettled.map((r) => `${r} (settled)`), ...state.paidOpen.map((r) => `${r} (reserved, may have been billed)`)]
          yield* failRun(
            { runId: row.run_id, writer },
            502,
            "PaidCallNotRepeated",
            `the gateway stopped after a paid call of this run (${which.join(", ")}); its answer was lost, and the call is not repeated so that it is not paid twice`,
            state.queuedAt ?? now
          )
          continue
        }
        if (row.request === null) {
          yield* failRun({ runId: row.run_id, writer }, 500, "RequestLost", "the run's request is no longer stored", state.queuedAt ?? now)
          continue
        }
        yield* writer.append("RunRequeued", {
          attemptsSoFar: state.attempts,
          was: state.status,
          reason: `the gateway restarted while the run was ${state.status}`
        })
        const request: LaneRequest = { operation: row.operation as AsyncOperation, body: row.request, stream: false, caller: row.caller, prompt: null }
        entries.set(row.run_id, yield* newEntry(row.run_id, row.lane, request, writer, state.attempts))
        yield* Queue.offer(queue, row.run_id)
        resumed++
      }
      if (open.length > 0) yield* Effect.logInfo(`async runs: ${open.length} left open by an earlier process, ${resumed} resumed`)
    })

    // Before the HTTP server listens (the Gateway is built first); retried in the background if the
    // database is not there yet.
    yield* recover.pipe(
      Effect.tapError((e) => Effect.logError("async runs: recovery failed; retrying in the background", e)),
      Effect.catchAll(() =>
        Effect.forkScoped(recover.pipe(Effect.retry(Schedule.spaced(10_000)), Effect.ignore))
      )
    )
    for (let i = 0; i < deps.config.asyncRuns.workers; i++) yield* Effect.forkScoped(worker)

    return {
      submit,
      view,
      cancel,
      pending: Effect.sync(() => entries.size)
    } satisfies AsyncRuns
  })
