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
import { type AsyncOperation, type AsyncRunView, decodeResult, fold, isTerminal, reconcile, statusUrlOf, type StoredRun, viewOf } from "./AsyncRunState.ts"
import { type AsyncRunStore, makeAsyncRunStore, type RunLease } from "./AsyncRunStore.ts"
import { ClusterRole } from "../../cluster/ClusterRole.ts"
import { timeOrderedUuid } from "../../domain/TimeOrderedId.ts"

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

export interface AsyncRunsDeps {
  readonly config: GatewayConfig
  readonly journal: Journal
  readonly sql: SqlClient.SqlClient
  readonly lanes: ReadonlyMap<string, LaneActor>
  /** In a cluster: runs are leased to this process (AsyncRunStore.ts). */
  readonly lease?: RunLease
}

/** What this process knows of its runs: the functions below share it. */
interface Runs {
  readonly deps: AsyncRunsDeps
  readonly journal: Journal
  readonly store: AsyncRunStore
  readonly entries: Map<string, Entry>
  readonly queue: Queue.Queue<string>
  /** Submissions between their INSERT and their answer: the reconcile leaves them alone. */
  readonly submitting: Set<string>
  /** Runs that finished and wait for the run store to take their result. */
  readonly recording: Set<string>
  /** Runs this process ended or refused: the reconcile may only finish their rows, never run them. */
  readonly settledHere: Set<string>
}

const writerFor = (runs: Runs, runId: string, caller: CallerContext, lane: string, head: number) =>
  makeStreamWriter(runs.journal, { streamId: `run-${runId}`, traceId: caller.traceId, projectId: caller.projectId, lane }, head)

const newEntry = (runId: string, lane: string, request: LaneRequest, writer: StreamWriter, attemptsSoFar: number) =>
  Effect.map(Deferred.make<void>(), (done): Entry => ({
    runId, lane, request, writer, attemptsSoFar, phase: "queued", cancelRequested: false, fiber: null, done
  }))

/** Queues a run for the workers. */
const enqueue = (runs: Runs, runId: string, lane: string, request: LaneRequest, writer: StreamWriter, attemptsSoFar: number) =>
  Effect.gen(function*() {
    runs.entries.set(runId, yield* newEntry(runId, lane, request, writer, attemptsSoFar))
    yield* Queue.offer(runs.queue, runId)
  })

/**
 * Stores a finished run's answer. Its RunCompleted waits for this (the run stays open until the
 * answer is recorded), so a run that finishes while Postgres is away keeps trying — until the
 * store is back, or the gateway stops (then the next start runs it again; a paid one is not
 * repeated, see `recover`). True once stored.
 */
const recordResult = (runs: Runs, runId: string, result: unknown) => {
  const update = runs.store.storeResult(runId, result)
  return Effect.gen(function*() {
    runs.recording.add(runId)
    const first = yield* update.pipe(Effect.retry(dbRetry), Effect.either)
    if (first._tag === "Right") return true
    yield* Effect.logWarning(`async run ${runId}: finished, but the run store does not take its answer; retrying until it does`, first.left)
    const later = yield* Effect.interruptible(update.pipe(Effect.retry(Schedule.spaced(1_000)))).pipe(Effect.exit)
    return Exit.isSuccess(later)
  }).pipe(Effect.ensuring(Effect.sync(() => runs.recording.delete(runId))))
}

/** Marks the row finished: after the journal has the terminal event. */
const finishRow = (runs: Runs, runId: string) =>
  Effect.gen(function*() {
    yield* runs.journal.flush
    yield* runs.store.finish(runId).pipe(Effect.retry(dbRetry))
    runs.settledHere.delete(runId)
  }).pipe(
    // Bounded: it runs uninterruptibly, and a database outage must not hold a shutdown forever.
    Effect.timeoutFail({ duration: FINISH_TIMEOUT_MS, onTimeout: () => new FinishTimeout({ ms: FINISH_TIMEOUT_MS }) }),
    Effect.catchAll((error) => Effect.logError(`async run ${runId}: could not record its end in async_runs; the next start reconciles it from the journal`, error))
  )

const failRun = (runs: Runs, entry: Pick<Entry, "writer" | "runId">, status: number, code: string, message: string, startedAt: number) =>
  Effect.gen(function*() {
    // A no-op if the run ended already (the lane ends its run on a defect, say).
    runs.settledHere.add(entry.runId)
    yield* endRun(entry.writer, { status, error: code, message }, startedAt)
    yield* finishRow(runs, entry.runId)
  })

/** The whole answer of a lane (a stream is collected: an async run's answer is stored whole). */
const bytesOf = (result: LaneResult) =>
  result._tag === "Unary"
    ? Effect.succeed(result.bytes)
    : Stream.runFold(result.stream, new Uint8Array(0), (acc, chunk) => {
      const next = new Uint8Array(acc.length + chunk.length)
      next.set(acc)
      next.set(chunk, acc.length)
      return next
    })

/** A lane that answered: the answer is stored first, then the held RunCompleted journaled. */
const complete = (runs: Runs, entry: Entry, result: LaneResult, completion: HeldCompletion) =>
  Effect.gen(function*() {
    if (!(yield* recordResult(runs, entry.runId, decodeResult(yield* bytesOf(result))))) {
      yield* entry.writer.append({ _tag: "RunSuspended", reason: "the gateway stopped before the run store took the answer; the run resumes at its next start" })
      return
    }
    runs.settledHere.add(entry.runId)
    yield* entry.writer.append(completion.data ?? unrecordedCompletion(result.info.endpoint))
    yield* finishRow(runs, entry.runId)
  })

/** What happened to the lane fiber decides the run's end; runs uninterruptibly. */
const settle = (runs: Runs, entry: Entry, exit: Exit.Exit<LaneResult, GatewayError>, shuttingDown: boolean, startedAt: number, completion: HeldCompletion) =>
  Effect.gen(function*() {
    if (Exit.isSuccess(exit)) return yield* complete(runs, entry, exit.value, completion)
    if (Exit.isInterrupted(exit)) {
      if (entry.cancelRequested) {
        return yield* failRun(runs, entry, 499, "RunCancelled", `run cancelled by DELETE ${statusUrlOf(entry.runId)}`, startedAt)
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
      runs.settledHere.add(entry.runId)
      yield* finishRow(runs, entry.runId)
      return
    }
    yield* Effect.logError(`async run ${entry.runId} died`, Exit.isFailure(exit) ? exit.cause : undefined)
    yield* failRun(runs, entry, 500, "InternalError", "the run failed inside the gateway; the logs have the details", startedAt)
  })

const execute = (runs: Runs, entry: Entry) =>
  Effect.uninterruptibleMask((restore) =>
    Effect.gen(function*() {
      if (entry.phase !== "queued") return
      entry.phase = "running"
      const startedAt = yield* Clock.currentTimeMillis
      const lane = runs.deps.lanes.get(entry.lane)
      if (lane === undefined) {
        yield* failRun(runs, entry, 400, "UnknownLane", `lane ${entry.lane} is no longer in the config`, startedAt)
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
      yield* settle(runs, entry, exit, shuttingDown, startedAt, completion)
    }).pipe(
      Effect.scoped,
      Effect.ensuring(Effect.suspend(() => {
        entry.phase = "done"
        runs.entries.delete(entry.runId)
        return Deferred.succeed(entry.done, undefined)
      }))
    )
  )

const worker = (runs: Runs) =>
  Effect.forever(
    Effect.flatMap(Queue.take(runs.queue), (runId) => {
      const entry = runs.entries.get(runId)
      return entry === undefined ? Effect.void : execute(runs, entry)
    })
  )

type SubmitInput = Parameters<AsyncRunsApi["submit"]>[0]

/** The run's first event: what was asked, of which lane, by whom. */
const runStarted = (runs: Runs, runId: string, input: SubmitInput): EventOf<"RunStarted"> => {
  const { operation, body } = input.request
  const config = input.lane.config
  return {
    _tag: "RunStarted",
    runId,
    async: true,
    via: input.via,
    operation,
    stream: false,
    requestedStream: body.stream ?? null,
    requestedModel: body.model,
    assignedModel: config.model === "" ? null : config.model,
    ...callerFacts(input.caller),
    ...(runs.deps.config.server.journalPrompts ? { prompt: input.prompt } : {})
  }
}

/**
 * A submission answered with an error never runs: a row whose INSERT committed after all has no
 * RunStarted (the reconcile deletes it), and a RunStarted that may still commit is followed by
 * RunFailed `refused` in the same ordered queue (the reconcile finishes the row).
 */
const submit = (runs: Runs, input: SubmitInput) =>
  Effect.gen(function*() {
    const runId = timeOrderedUuid()
    const lane = input.lane.name
    const caller = input.caller
    const unavailable = (reason: string) => new RunStoreUnavailable({ lane, reason })
    // RunStarted must commit before the 202: while the journal cannot commit, do not even try.
    if (runs.journal.degraded()) return yield* Effect.fail(unavailable("the journal cannot commit to PostgreSQL now"))
    runs.submitting.add(runId)
    yield* Effect.addFinalizer(() => Effect.sync(() => runs.submitting.delete(runId)))
    const { operation, body } = input.request
    yield* runs.store.insert({ runId, lane, operation, body, caller }).pipe(
      Effect.mapError((e) => unavailable(e.message))
    )
    const writer = writerFor(runs, runId, caller, lane, 0)
    // Durable before the 202: an accepted run survives a crash.
    yield* writer.appendDurable(runStarted(runs, runId, input)).pipe(
      Effect.timeoutFail({ duration: DURABLE_TIMEOUT_MS, onTimeout: () => unavailable("the journal did not commit in time") }),
      Effect.mapError((e) => (e instanceof RunStoreUnavailable ? e : unavailable("the journal did not commit"))),
      Effect.tapError((e) =>
        Effect.zipRight(
          Effect.zipRight(Effect.sync(() => runs.settledHere.add(runId)), writer.append({ _tag: "RunFailed", status: 503, error: "RunStoreUnavailable", message: e.message, refused: true, durationMs: 0 })),
          runs.store.remove(runId).pipe(Effect.ignore)
        )
      )
    )
    const request: LaneRequest = { ...input.request, stream: false, caller, prompt: input.prompt }
    yield* enqueue(runs, runId, lane, request, writer, 0)
    return { runId, traceId: caller.traceId, lane, status: "queued", statusUrl: statusUrlOf(runId) } satisfies Submitted
  }).pipe(Effect.scoped)

const view = (runs: Runs, runId: string) =>
  Effect.gen(function*() {
    const row = yield* runs.store.read(runId)
    if (row === null) return null
    yield* runs.journal.flush
    const state = fold(yield* runs.journal.readStream(`run-${runId}`))
    return state === null ? null : viewOf(runId, row, state)
  })

/** A run not in this process's hands (its recovery failed, say): cancelled through the journal. */
const cancelElsewhere = (runs: Runs, runId: string) =>
  Effect.gen(function*() {
    const current = yield* view(runs, runId)
    if (current === null) return { _tag: "NotFound" } satisfies CancelOutcome
    if (isTerminal(current.status)) return { _tag: "AlreadyFinished", view: current } satisfies CancelOutcome
    const row = yield* runs.store.read(runId)
    const head = yield* runs.journal.streamHead(`run-${runId}`)
    const writer = writerFor(runs, runId, row!.caller, row!.lane, head)
    yield* failRun(runs, { runId, writer }, 499, "RunCancelled", `run cancelled by DELETE ${statusUrlOf(runId)}`, yield* Clock.currentTimeMillis)
    return null
  })

const cancel = (runs: Runs, runId: string) =>
  Effect.gen(function*() {
    const entry = runs.entries.get(runId)
    if (entry !== undefined && entry.phase === "queued") {
      entry.phase = "done"
      runs.entries.delete(runId)
      yield* failRun(runs, entry, 499, "RunCancelled", `run cancelled by DELETE ${statusUrlOf(runId)} while queued`, yield* Clock.currentTimeMillis)
      yield* Deferred.succeed(entry.done, undefined)
    } else if (entry !== undefined && entry.phase === "running") {
      entry.cancelRequested = true
      if (entry.fiber !== null) yield* Fiber.interruptFork(entry.fiber)
      yield* Deferred.await(entry.done)
    } else if (entry === undefined) {
      const answered = yield* cancelElsewhere(runs, runId)
      if (answered !== null) return answered
    }
    const after = yield* view(runs, runId)
    if (after === null) return { _tag: "NotFound" } satisfies CancelOutcome
    return after.status === "cancelled"
      ? { _tag: "Cancelled", view: after } satisfies CancelOutcome
      : { _tag: "AlreadyFinished", view: after } satisfies CancelOutcome
  })

/** Does what `reconcile` decided for one row left open; true when the run was queued again. */
const reconcileRow = (runs: Runs, row: StoredRun) =>
  Effect.gen(function*() {
    const events = yield* runs.journal.readStream(`run-${row.run_id}`)
    const head = events.reduce((max, e) => Math.max(max, e.streamPosition + 1), 0)
    const writer = writerFor(runs, row.run_id, row.caller, row.lane, head)
    const decided = reconcile(row, fold(events), runs.settledHere.has(row.run_id), yield* Clock.currentTimeMillis)
    switch (decided._tag) {
      case "Forget":
        yield* runs.store.forget(row.run_id)
        return false
      case "Close":
        yield* finishRow(runs, row.run_id)
        return false
      case "Wait":
        return false
      case "Complete":
        yield* writer.append(decided.completed)
        yield* finishRow(runs, row.run_id)
        return false
      case "Fail":
        yield* failRun(runs, { runId: row.run_id, writer }, decided.status, decided.code, decided.message, decided.startedAt)
        return false
    }
    yield* writer.append(decided.requeued)
    const request: LaneRequest = { ...storedRequest(row.operation as AsyncOperation, decided.request), stream: false, caller: row.caller, prompt: null }
    yield* enqueue(runs, row.run_id, row.lane, request, writer, decided.attemptsSoFar)
    return true
  })

/** Picks up the runs an earlier process left open, each from its journal stream. */
const recover = (runs: Runs) =>
  Effect.gen(function*() {
    const open = yield* runs.store.open
    let resumed = 0
    let reconciled = 0
    for (const row of open) {
      if (runs.entries.has(row.run_id) || runs.submitting.has(row.run_id)) continue
      reconciled++
      if (yield* reconcileRow(runs, row)) resumed++
    }
    if (reconciled > 0) yield* Effect.logInfo(`async runs: ${reconciled} left open (by an earlier process or a failed write) reconciled with the journal, ${resumed} resumed`)
  })

/** Why the run store cannot take runs now (null: it can). */
const storeProblem = (runs: Runs): string | null =>
  runs.journal.degraded()
    ? "the journal cannot commit to PostgreSQL (runs cannot be accepted durably)"
    : runs.store.lastError() !== null
    ? `the run store (async_runs) fails: ${runs.store.lastError()}`
    : runs.recording.size > 0
    ? `${runs.recording.size} finished run(s) wait for the run store to take their answer`
    : null

/** The fibers of the layer's life: lease renewal, the workers, and the reconcile of rows a failed write left open. */
const startBackground = (runs: Runs) =>
  Effect.gen(function*() {
    const { journal, store } = runs
    const lease = runs.deps.lease
    if (lease !== undefined) {
      yield* store.renew.pipe(
        Effect.catchAll((e) => Effect.logWarning("async runs: renewing this replica's leases failed", e)),
        Effect.repeat(Schedule.spaced(Math.max(500, lease.ms / 3))),
        Effect.forkScoped
      )
    }
    // Before the HTTP server listens (the Gateway is built first); retried in the background if the
    // database is not there yet.
    yield* recover(runs).pipe(
      Effect.tapError((e) => Effect.logError("async runs: recovery failed; retrying in the background", e)),
      Effect.catchAll(() =>
        Effect.forkScoped(recover(runs).pipe(Effect.retry(Schedule.spaced(10_000)), Effect.ignore))
      )
    )
    for (let i = 0; i < runs.deps.config.asyncRuns.workers; i++) yield* Effect.forkScoped(worker(runs))
    // Rows a failed write left open (a finished run whose end did not reach async_runs, a refused
    // submission whose INSERT committed late) are closed from the journal, while the gateway runs.
    // Only on a settled journal: while events are queued or spilled, Postgres shows streams short of their end.
    const settledJournal = Effect.zipRight(journal.flush, Effect.map(journal.stats, (s) => !s.degraded && s.queued === 0 && s.spilled === 0))
    yield* Effect.flatMap(settledJournal, (settled) => (settled ? recover(runs) : Effect.void)).pipe(
      Effect.catchAll((e) => Effect.logWarning("async runs: reconcile failed; trying again", e)),
      Effect.delay(RECONCILE_MS),
      Effect.forever,
      Effect.forkScoped
    )
  })

export const make = (deps: AsyncRunsDeps) =>
  Effect.gen(function*() {
    const runs: Runs = {
      deps,
      journal: deps.journal,
      store: makeAsyncRunStore(deps.sql, deps.lease),
      entries: new Map(),
      queue: yield* Queue.unbounded<string>(),
      submitting: new Set(),
      recording: new Set(),
      settledHere: new Set()
    }
    yield* startBackground(runs)
    return {
      submit: (input) => submit(runs, input),
      view: (runId) => view(runs, runId),
      cancel: (runId) => cancel(runs, runId),
      pending: Effect.sync(() => runs.entries.size),
      storeProblem: Effect.sync(() => storeProblem(runs))
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
