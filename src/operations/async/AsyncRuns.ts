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
 * RunSuspended. Status (`fold`, AsyncRunState.ts) is read from the journal: queued, running, succeeded, failed, cancelled.
 *
 * Durability: the `async_runs` table (AsyncRunStore.ts) holds the request body until the run ends
 * (prompts stay out of the journal) and the result; `finished_at IS NULL` lists what a restarted
 * gateway resumes, each from its journal stream. A run whose stream shows a paid call that was
 * settled — or reserved and never released, so it may have been billed — is not run again: it fails
 * with `PaidCallNotRepeated`, so no paid call is ever repeated. One gateway per database resumes runs
 * (several replicas would need a lease; see DESIGN.md "Scale").
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Clock, Data, Deferred, Effect, Exit, Fiber, Option, Queue, Schedule, Stream } from "effect"
import type { GatewayConfig } from "../../config/GatewayConfig.ts"
import type { CallerContext } from "../../domain/CallerContext.ts"
import { type GatewayError, RunStoreUnavailable } from "../../domain/Errors.ts"
import { Journal } from "../../journal/Journal.ts"
import type { EventOf } from "../../domain/Events.ts"
import { endRun, makeStreamWriter, type StreamWriter } from "../../journal/StreamWriter.ts"
import { Gateway } from "../../routing/Gateway.ts"
import type { LaneActor } from "../../routing/Lane.ts"
import type { ChatRequest, GenerateRequest, OllamaRequest } from "../../domain/OllamaApi.ts"
import { callerFacts, type LaneRequest, type LaneResult } from "../../run/Run.ts"
import { type AsyncOperation, type AsyncRunView, decodeResult, fold, isTerminal, reconcile, statusUrlOf, viewOf } from "./AsyncRunState.ts"
import { makeAsyncRunStore, type RunLease } from "./AsyncRunStore.ts"
import { ClusterRole } from "../../cluster/ClusterRole.ts"

export interface Submitted {
  readonly runId: string
  readonly traceId: string
  readonly lane: string
  readonly status: "queued"
  readonly statusUrl: string
}

export type CancelOutcome =
  | { readonly _tag: "NotFound" }
  | { readonly _tag: "AlreadyFinished"; readonly view: AsyncRunView }
  | { readonly _tag: "Cancelled"; readonly view: AsyncRunView }

/** What an async run runs: a decoded generate or chat. */
export type AsyncRequest = Extract<OllamaRequest, { readonly operation: AsyncOperation }>

/** A run's body as the run store kept it: what submit() stored, decoded then (so no decode again). */
const storedRequest = (operation: AsyncOperation, body: unknown): AsyncRequest =>
  operation === "chat" ? { operation, body: body as ChatRequest } : { operation, body: body as GenerateRequest }

export interface AsyncRunsApi {
  readonly submit: (input: {
    readonly lane: LaneActor
    readonly request: AsyncRequest
    readonly caller: CallerContext
    readonly prompt: unknown
    readonly via: "inference" | "api"
  }) => Effect.Effect<Submitted, RunStoreUnavailable>
  /** null: not an async run (issue 3's run view answers for the others). */
  readonly view: (runId: string) => Effect.Effect<AsyncRunView | null, unknown>
  readonly cancel: (runId: string) => Effect.Effect<CancelOutcome, unknown>
  /** Runs queued or running in this process. */
  readonly pending: Effect.Effect<number>
  /** Why the run store cannot take runs now (null: it can): the health view's async lanes. */
  readonly storeProblem: Effect.Effect<string | null>
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

const DURABLE_TIMEOUT_MS = 5_000
const FINISH_TIMEOUT_MS = 10_000
/** How often rows a failed write left open are reconciled with their journal streams. */
const RECONCILE_MS = 5_000
class FinishTimeout extends Data.TaggedError("FinishTimeout")<{ readonly ms: number }> {}

const dbRetry = Schedule.exponential(100).pipe(Schedule.intersect(Schedule.recurs(4)))

/** The RunCompleted a lane appended for an async run, held until the run store has its answer. */
interface HeldCompletion {
  data: EventOf<"RunCompleted"> | undefined
}

/** The writer the lane gets: its RunCompleted is held (the worker appends it once the answer is stored). */
const holdCompletion = (writer: StreamWriter, held: HeldCompletion): StreamWriter => ({
  ...writer,
  append: (event) =>
    event._tag === "RunCompleted"
      ? Effect.sync(() => {
        held.data = event
      })
      : writer.append(event),
  progress: () => (held.data !== undefined ? { ...writer.progress(), ended: true } : writer.progress())
})

/** A lane that answered without journaling its RunCompleted (none does): the run still ends. */
const unrecordedCompletion = (endpoint: string): EventOf<"RunCompleted"> => ({
  _tag: "RunCompleted", endpoint, providerTier: null, inputTokens: null, outputTokens: null, doneReason: null, durationMs: null
})

export const make = (deps: {
  readonly config: GatewayConfig
  readonly journal: Journal
  readonly sql: SqlClient.SqlClient
  readonly lanes: ReadonlyMap<string, LaneActor>
  /** In a cluster: runs are leased to this process (AsyncRunStore.ts). */
  readonly lease?: RunLease
}) =>
  Effect.gen(function*() {
    const { journal } = deps
    const store = makeAsyncRunStore(deps.sql, deps.lease)
    if (deps.lease !== undefined) {
      yield* store.renew.pipe(
        Effect.catchAll((e) => Effect.logWarning("async runs: renewing this replica's leases failed", e)),
        Effect.repeat(Schedule.spaced(Math.max(500, deps.lease.ms / 3))),
        Effect.forkScoped
      )
    }
    const entries = new Map<string, Entry>()
    const queue = yield* Queue.unbounded<string>()
    /** Submissions between their INSERT and their answer: the reconcile leaves them alone. */
    const submitting = new Set<string>()
    /** Runs that finished and wait for the run store to take their result. */
    const recording = new Set<string>()
    /** Runs this process ended or refused: the reconcile may only finish their rows, never run them. */
    const settledHere = new Set<string>()

    const writerFor = (runId: string, caller: CallerContext, lane: string, head: number) =>
      makeStreamWriter(journal, { streamId: `run-${runId}`, traceId: caller.traceId, projectId: caller.projectId, lane }, head)

    const newEntry = (runId: string, lane: string, request: LaneRequest, writer: StreamWriter, attemptsSoFar: number) =>
      Effect.map(Deferred.make<void>(), (done): Entry => ({
        runId, lane, request, writer, attemptsSoFar, phase: "queued", cancelRequested: false, fiber: null, done
      }))

    /**
     * Stores a finished run's answer. Its RunCompleted waits for this (the run stays open until the
     * answer is recorded), so a run that finishes while Postgres is away keeps trying — until the
     * store is back, or the gateway stops (then the next start runs it again; a paid one is not
     * repeated, see `recover`). True once stored.
     */
    const recordResult = (runId: string, result: unknown) => {
      const update = store.storeResult(runId, result)
      return Effect.gen(function*() {
        recording.add(runId)
        const first = yield* update.pipe(Effect.retry(dbRetry), Effect.either)
        if (first._tag === "Right") return true
        yield* Effect.logWarning(`async run ${runId}: finished, but the run store does not take its answer; retrying until it does`, first.left)
        const later = yield* Effect.interruptible(update.pipe(Effect.retry(Schedule.spaced(1_000)))).pipe(Effect.exit)
        return Exit.isSuccess(later)
      }).pipe(Effect.ensuring(Effect.sync(() => recording.delete(runId))))
    }

    /** Marks the row finished: after the journal has the terminal event. */
    const finishRow = (runId: string) =>
      Effect.gen(function*() {
        yield* journal.flush
        yield* store.finish(runId).pipe(Effect.retry(dbRetry))
        settledHere.delete(runId)
      }).pipe(
        // Bounded: it runs uninterruptibly, and a database outage must not hold a shutdown forever.
        Effect.timeoutFail({ duration: FINISH_TIMEOUT_MS, onTimeout: () => new FinishTimeout({ ms: FINISH_TIMEOUT_MS }) }),
        Effect.catchAll((error) => Effect.logError(`async run ${runId}: could not record its end in async_runs; the next start reconciles it from the journal`, error))
      )

    const failRun = (entry: Pick<Entry, "writer" | "runId">, status: number, code: string, message: string, startedAt: number) =>
      Effect.gen(function*() {
        // A no-op if the run ended already (the lane ends its run on a defect, say).
        settledHere.add(entry.runId)
        yield* endRun(entry.writer, { status, error: code, message }, startedAt)
        yield* finishRow(entry.runId)
      })

    /** What happened to the lane fiber decides the run's end; runs uninterruptibly. */
    const settle = (entry: Entry, exit: Exit.Exit<LaneResult, GatewayError>, shuttingDown: boolean, startedAt: number, completion: HeldCompletion) =>
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
          if (!(yield* recordResult(entry.runId, decodeResult(bytes)))) {
            yield* entry.writer.append({ _tag: "RunSuspended", reason: "the gateway stopped before the run store took the answer; the run resumes at its next start" })
            return
          }
          settledHere.add(entry.runId)
          yield* entry.writer.append(completion.data ?? unrecordedCompletion(exit.value.info.endpoint))
          yield* finishRow(entry.runId)
          return
        }
        if (Exit.isInterrupted(exit)) {
          if (entry.cancelRequested) {
            return yield* failRun(entry, 499, "RunCancelled", `run cancelled by DELETE ${statusUrlOf(entry.runId)}`, startedAt)
          }
          if (shuttingDown) {
            // Not an end: the run resumes at the next start (its row stays open).
            yield* entry.writer.append({ _tag: "RunSuspended", reason: "the gateway is shutting down; the run resumes at its next start" })
            return
          }
        }
        const failure = Option.getOrUndefined(Exit.causeOption(exit).pipe(Option.flatMap((c) => c._tag === "Fail" ? Option.some(c.error) : Option.none())))
        if (failure !== undefined) {
          // The lane journaled RunFailed already.
          settledHere.add(entry.runId)
          yield* finishRow(entry.runId)
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
          yield* entry.writer.append({ _tag: "RunDequeued", attemptsSoFar: entry.attemptsSoFar })
          const completion: HeldCompletion = { data: undefined }
          // The lane takes what the run holds (admission, slot, budget) in the run's scope: closed once the run is settled (Effect.scoped below).
          const fiber = yield* Effect.fork(Effect.interruptible(
            lane.handle(entry.request, { runId: entry.runId, run: holdCompletion(entry.writer, completion), attemptsSoFar: entry.attemptsSoFar })
          ))
          entry.fiber = fiber
          // A cancel that came between the pick-up and the fork.
          if (entry.cancelRequested) yield* Fiber.interruptFork(fiber)
          const awaited = yield* Effect.exit(restore(Fiber.await(fiber)))
          const shuttingDown = Exit.isFailure(awaited)
          const exit = Exit.isSuccess(awaited) ? awaited.value : yield* Fiber.interrupt(fiber)
          entry.fiber = null
          yield* settle(entry, exit, shuttingDown, startedAt, completion)
        }).pipe(
          Effect.scoped,
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

    /**
     * A submission answered with an error never runs: a row whose INSERT committed after all has no
     * RunStarted (the reconcile deletes it), and a RunStarted that may still commit is followed by
     * RunFailed `refused` in the same ordered queue (the reconcile finishes the row).
     */
    const submit: AsyncRunsApi["submit"] = (input) =>
      Effect.gen(function*() {
        const runId = crypto.randomUUID()
        const lane = input.lane.name
        const caller = input.caller
        const unavailable = (reason: string) => new RunStoreUnavailable({ lane, reason })
        // RunStarted must commit before the 202: while the journal cannot commit, do not even try.
        if (journal.degraded()) return yield* Effect.fail(unavailable("the journal cannot commit to PostgreSQL now"))
        submitting.add(runId)
        yield* Effect.addFinalizer(() => Effect.sync(() => submitting.delete(runId)))
        const { operation, body } = input.request
        yield* store.insert({ runId, lane, operation, body, caller }).pipe(
          Effect.mapError((e) => unavailable(e.message))
        )
        const writer = writerFor(runId, caller, lane, 0)
        const config = input.lane.config
        // Durable before the 202: an accepted run survives a crash.
        yield* writer.appendDurable({
          _tag: "RunStarted",
          runId,
          async: true,
          via: input.via,
          operation,
          stream: false,
          requestedStream: body.stream ?? null,
          requestedModel: body.model,
          assignedModel: config.model === "" ? null : config.model,
          ...callerFacts(caller),
          ...(deps.config.server.journalPrompts ? { prompt: input.prompt } : {})
        }).pipe(
          Effect.timeoutFail({ duration: DURABLE_TIMEOUT_MS, onTimeout: () => unavailable("the journal did not commit in time") }),
          Effect.mapError((e) => (e instanceof RunStoreUnavailable ? e : unavailable("the journal did not commit"))),
          Effect.tapError((e) =>
            Effect.zipRight(
              Effect.zipRight(Effect.sync(() => settledHere.add(runId)), writer.append({ _tag: "RunFailed", status: 503, error: "RunStoreUnavailable", message: e.message, refused: true, durationMs: 0 })),
              store.remove(runId).pipe(Effect.ignore)
            )
          )
        )
        const request: LaneRequest = { ...input.request, stream: false, caller, prompt: input.prompt }
        const entry = yield* newEntry(runId, lane, request, writer, 0)
        entries.set(runId, entry)
        yield* Queue.offer(queue, runId)
        return { runId, traceId: caller.traceId, lane, status: "queued", statusUrl: statusUrlOf(runId) } satisfies Submitted
      }).pipe(Effect.scoped)

    const view = (runId: string) =>
      Effect.gen(function*() {
        const row = yield* store.read(runId)
        if (row === null) return null
        yield* journal.flush
        const state = fold(yield* journal.readStream(`run-${runId}`))
        return state === null ? null : viewOf(runId, row, state)
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
          const row = yield* store.read(runId)
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
      const open = yield* store.open
      let resumed = 0
      let reconciled = 0
      for (const row of open) {
        if (entries.has(row.run_id) || submitting.has(row.run_id)) continue
        reconciled++
        const events = yield* journal.readStream(`run-${row.run_id}`)
        const state = fold(events)
        const head = events.reduce((max, e) => Math.max(max, e.streamPosition + 1), 0)
        const writer = writerFor(row.run_id, row.caller, row.lane, head)
        const decided = reconcile(row, state, settledHere.has(row.run_id), yield* Clock.currentTimeMillis)
        switch (decided._tag) {
          case "Forget":
            yield* store.forget(row.run_id)
            continue
          case "Close":
            yield* finishRow(row.run_id)
            continue
          case "Wait":
            continue
          case "Complete":
            yield* writer.append(decided.completed)
            yield* finishRow(row.run_id)
            continue
          case "Fail":
            yield* failRun({ runId: row.run_id, writer }, decided.status, decided.code, decided.message, decided.startedAt)
            continue
        }
        yield* writer.append(decided.requeued)
        const request: LaneRequest = { ...storedRequest(row.operation as AsyncOperation, decided.request), stream: false, caller: row.caller, prompt: null }
        entries.set(row.run_id, yield* newEntry(row.run_id, row.lane, request, writer, decided.attemptsSoFar))
        yield* Queue.offer(queue, row.run_id)
        resumed++
      }
      if (reconciled > 0) yield* Effect.logInfo(`async runs: ${reconciled} left open (by an earlier process or a failed write) reconciled with the journal, ${resumed} resumed`)
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
    // Rows a failed write left open (a finished run whose end did not reach async_runs, a refused
    // submission whose INSERT committed late) are closed from the journal, while the gateway runs.
    // Only on a settled journal: while events are queued or spilled, Postgres shows streams short of their end.
    const settledJournal = Effect.zipRight(journal.flush, Effect.map(journal.stats, (s) => !s.degraded && s.queued === 0 && s.spilled === 0))
    yield* Effect.flatMap(settledJournal, (settled) => (settled ? recover : Effect.void)).pipe(
      Effect.catchAll((e) => Effect.logWarning("async runs: reconcile failed; trying again", e)),
      Effect.delay(RECONCILE_MS),
      Effect.forever,
      Effect.forkScoped
    )

    return {
      submit,
      view,
      cancel,
      pending: Effect.sync(() => entries.size),
      storeProblem: Effect.sync(() =>
        journal.degraded()
          ? "the journal cannot commit to PostgreSQL (runs cannot be accepted durably)"
          : store.lastError() !== null
          ? `the run store (async_runs) fails: ${store.lastError()}`
          : recording.size > 0
          ? `${recording.size} finished run(s) wait for the run store to take their answer`
          : null
      )
    } satisfies AsyncRunsApi
  })

/** The async runs of the gateway's lanes: recovered before the HTTP server listens, workers for the layer's life. */
export class AsyncRuns extends Effect.Service<AsyncRuns>()("awooop/AsyncRuns", {
  scoped: Effect.gen(function*() {
    const { config, lanes } = yield* Gateway
    const journal = yield* Journal
    const role = yield* ClusterRole
    // A replica's runs are taken over once it has missed renewing for two lock expirations.
    const lease = role.runner === null ? undefined : { owner: journal.instance, ms: 2 * role.lockExpirationMs }
    return yield* make({ config, journal, sql: yield* SqlClient.SqlClient, lanes, ...(lease === undefined ? {} : { lease }) })
  })
}) {}
