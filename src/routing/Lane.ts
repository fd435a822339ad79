/**
 * The lane actor: admission (a bounded number of requests in the lane), then plan(), then the
 * attempts down the lane's route with each host's slots, breaker and timeout. Every step is a
 * journal event on the run's stream.
 */
import { Cause, Clock, Deferred, Effect, Exit, Option, Ref, Scope } from "effect"
import { type GatewayConfig, type LaneConfig, priceOf } from "../config/GatewayConfig.ts"
import { AsyncOnlyLane, type GatewayError, JournalUnavailable, LaneSaturated } from "../domain/Errors.ts"
import type { Usage } from "../domain/OllamaApi.ts"
import { operationPath, sameModel } from "../domain/OllamaApi.ts"
import type { Journal } from "../journal/Journal.ts"
import { endRun, makeStreamWriter, type StreamWriter } from "../journal/StreamWriter.ts"
import { type OllamaUpstream, type OpenStream, UpstreamFailure, usageOf } from "../upstream/OllamaUpstream.ts"
import { BreakerOpen, type Outcome } from "./Breaker.ts"
import { toStream } from "./ChunkSource.ts"
import type { HostActor } from "./Host.ts"
import * as LaneMode from "./LaneMode.ts"
import type { PaidRoute } from "./PaidRoute.ts"
import { type HostView, plan, type Plan, type PlanInput, type PlannedAttempt } from "./Plan.ts"
import { relay } from "./Relay.ts"
import { type LagMark, type LagReader, stalledByGateway } from "../observability/EventLoopLag.ts"
import * as Attempts from "../run/Attempts.ts"
import { costOf } from "../run/Cost.ts"
import { callerFacts, type LaneRequest, type LaneResult, type RunAs, type RunInfo } from "../run/Run.ts"
import { classify, endOf, failureOf } from "../run/Terminal.ts"
import { timeOrderedUuid } from "../domain/TimeOrderedId.ts"

export interface LaneActor {
  readonly name: string
  readonly config: LaneConfig
  /** Runs the request; what it holds (admission, slot, upstream body, budget) is the request scope's. */
  readonly handle: (request: LaneRequest, as?: RunAs) => Effect.Effect<LaneResult, GatewayError, Scope.Scope>
  readonly inFlight: Effect.Effect<number>
  /** plan() against the live host view, without running anything (shadow mode, the health view). */
  readonly decide: Effect.Effect<{ readonly input: PlanInput; readonly plan: Plan }>
  /** active or shadow now: the config's mode, or the operator's (LaneMode.ts). */
  readonly mode: LaneMode.LaneMode
}

interface Deps {
  readonly journal: Journal
  readonly upstream: OllamaUpstream
  readonly hosts: ReadonlyMap<string, HostActor>
  readonly config: GatewayConfig
  /** Paid providers behind the budget (a lane's `paidFallback`, or a `paid` lane). */
  readonly paid?: PaidRoute
  /** The gateway's own event-loop lag (observability/EventLoopLag.ts): a timeout it caused is not the host's. */
  readonly lag?: LagReader
  /** Wraps each run's writer so metrics and spans follow the run's facts (observability/RunObserver.ts). */
  readonly observe?: (lane: string, config: LaneConfig) => (run: StreamWriter, request: LaneRequest) => StreamWriter
  /** The lane's runtime mode (durable and shared: routing/Gateway.ts); default: the config's, changes kept in memory. */
  readonly mode?: LaneMode.LaneMode
}

/** A started run, as the attempt loop sees it. */
interface RunContext {
  readonly run: StreamWriter
  readonly runId: string
  readonly request: LaneRequest
  readonly startedAt: number
  /** The body sent to every host (the caller's, with the lane's model and the stream flag). */
  readonly body: Uint8Array
}

interface Timing {
  readonly attemptStartedAt: number
  readonly now: number
  readonly lagAtStart: LagMark
  readonly lag: { readonly lagMs: number; readonly longestStallMs: number }
}

type AttemptAnswer =
  | { readonly _tag: "Unary"; readonly bytes: Uint8Array; readonly usage: Usage }
  | { readonly _tag: "Stream"; readonly open: OpenStream }

/** A slot taken for an attempt: the request's scope releases it at the latest. */
interface Taken {
  readonly _tag: "Taken"
  readonly pool: "reserved" | "shared"
  readonly scope: Scope.Scope
  readonly release: Effect.Effect<void>
}

type SlotOrSignal = Taken | { readonly _tag: "Busy"; readonly signal: Deferred.Deferred<void> }

const noMark: LagMark = { at: 0, stalled: 0 }
const noLag = { lagMs: 0, longestStallMs: 0 }

export const make = (name: string, config: LaneConfig, deps: Deps) =>
  Effect.gen(function*() {
    const admitted = yield* Ref.make(0)
    const observe = deps.observe?.(name, config) ?? ((run: StreamWriter) => run)
    const route = config.route.map((s) => ({ host: s.host, timeoutMs: s.timeout, when: s.when }))
    const retryAfterSeconds = Math.max(1, Math.ceil(config.queue.maxWait / 1000))
    // Ollama costs nothing unless the config prices the lane's model; then unreported usage is unknown (null).
    const ollamaPrice = priceOf(deps.config.prices, config.model)
    const ollamaCost = (usage: Usage | null): number | null =>
      ollamaPrice === undefined ? 0 : costOf(usage, ollamaPrice)

    const admit = Ref.modify(admitted, (n): [boolean, number] => n < config.queue.capacity ? [true, n + 1] : [false, n])
    const leave = Ref.update(admitted, (n) => n - 1)

    /** The live view of the route's hosts, as plan() reads it. */
    const snapshot = () => Effect.gen(function*() {
      const hosts: Record<string, HostView> = {}
      for (const step of route) {
        const host = deps.hosts.get(step.host)
        if (host === undefined || hosts[step.host] !== undefined) continue
        const view = yield* host.view(name)
        // plan() reads only the lane model's entry: journaling just that keeps RouteDecided small and replayable.
        hosts[step.host] = view.installed === null ? view : { ...view, installed: view.installed.filter((m) => sameModel(m.name, config.model)) }
      }
      return hosts
    })

    const fail = (run: StreamWriter, error: GatewayError, startedAt: number) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        yield* run.append({ _tag: "RunFailed", status: error.status, error: error._tag, message: error.message, durationMs: now - startedAt })
        return yield* Effect.fail(error)
      })

    const markLag = () => deps.lag?.mark() ?? noMark
    /** The gateway's own event-loop lag since an attempt's mark (EventLoopLag.ts). */
    const lagSince = (from: LagMark) => deps.lag?.since(from) ?? noLag

    const complete = (
      run: StreamWriter,
      host: string,
      usage: Usage | null,
      startedAt: number,
      attemptStartedAt: number,
      firstChunkAt: number | null,
      lag: { readonly lagMs: number; readonly longestStallMs: number }
    ) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        yield* run.append({ _tag: "AttemptSucceeded", host, durationMs: now - attemptStartedAt, firstChunkMs: firstChunkAt === null ? null : firstChunkAt - attemptStartedAt, eventLoopLagMs: lag.lagMs, eventLoopStallMs: lag.longestStallMs })
        yield* run.append({
          _tag: "RunCompleted",
          endpoint: host,
          providerTier: "ollama",
          inputTokens: usage?.inputTokens ?? null,
          outputTokens: usage?.outputTokens ?? null,
          doneReason: usage?.doneReason ?? null,
          costUsd: ollamaCost(usage),
          durationMs: now - startedAt
        })
      })

    /**
     * One attempt on one host: breaker, timeout (the slot is held by the request's scope). `started`
     * (the AttemptStarted event) runs only once the breaker admitted the call, so a breaker that
     * opened since plan() leaves a HostSkipped, not an attempt without an outcome.
     */
    const attempt = (
      host: HostActor,
      step: PlannedAttempt,
      body: Uint8Array,
      request: LaneRequest,
      started: Effect.Effect<void>,
      lagAtStart: LagMark
    ): Effect.Effect<AttemptAnswer, UpstreamFailure | BreakerOpen> => {
      const path = operationPath[request.operation]
      // A timeout the gateway's own stall caused says nothing about the host (EventLoopLag.ts).
      const judge = (exit: Exit.Exit<unknown, UpstreamFailure>): Outcome => {
        const outcome = classify(exit)
        return outcome === "timeout" && stalledByGateway(lagSince(lagAtStart).longestStallMs, step.timeoutMs) ? "ignore" : outcome
      }
      const call: Effect.Effect<AttemptAnswer, UpstreamFailure> = request.stream
        ? Effect.map(deps.upstream.openStream(host.target, path, body, step.timeoutMs), (open) => ({ _tag: "Stream" as const, open }))
        : Effect.map(deps.upstream.unary(host.target, "POST", path, body, step.timeoutMs), (r) => ({ _tag: "Unary" as const, bytes: r.bytes, usage: usageOf(r.json) }))
      return host.breaker.guard(Effect.zipRight(started, call), judge)
    }

    /** plan() against the live host view, at the time `now` gives (a run plans at its start). */
    const decideAt = (now: Effect.Effect<number>) =>
      Effect.gen(function*() {
        const input: PlanInput = {
          lane: name,
          model: config.model,
          route,
          hosts: yield* snapshot(),
          policy: { heavyModelMinParamsB: deps.config.policy.heavyModelMinParamsB },
          now: yield* now
        }
        return { input, plan: plan(input) }
      })
    const decide = decideAt(Clock.currentTimeMillis)

    const attemptsInput = (request: LaneRequest, as: RunAs | undefined): Attempts.AttemptsInput => {
      const direct = config.paid.length > 0
      return {
        lane: name,
        model: config.model,
        routeHosts: route.map((s) => s.host),
        heavyModelMinParamsB: deps.config.policy.heavyModelMinParamsB,
        maxWaitMs: config.queue.maxWait,
        retryAfterSeconds,
        paid: { providers: deps.paid === undefined ? [] : direct ? config.paid : config.paidFallback, direct },
        caller: request.caller,
        attemptsSoFar: as?.attemptsSoFar ?? 0
      }
    }

    /** What the decider said next, done; every outcome goes back to it until the run has its answer. */
    const drive = (at: RunContext, state: Attempts.State, signals: ReadonlyArray<Deferred.Deferred<void>>): Effect.Effect<LaneResult, GatewayError, Scope.Scope> => {
      const step = Attempts.next(state)
      const again = (outcome: Attempts.Outcome, armed = signals) => Effect.suspend(() => drive(at, Attempts.evolve(state, outcome), armed))
      switch (step._tag) {
        case "Try": return tryHost(at, step, state, signals)
        case "SkipConditional":
          return Effect.zipRight(at.run.append({ _tag: "HostSkipped", host: step.host, reason: "only-when-unavailable", message: step.message }), again({ _tag: "Skipped", host: step.host }))
        case "WaitForSlot": return Effect.flatMap(waitForSlot(at, signals), (outcome) => again(outcome, []))
        case "Fail": return fail(at.run, step.error, at.startedAt)
        case "PaidRefused":
          return Effect.zipRight(at.run.append({ _tag: "PaidFallbackSkipped", ...step.skipped }), fail(at.run, step.error, at.startedAt))
        case "Pay": return pay(at, step)
        case "Done": return Effect.dieMessage(`lane ${name}: the attempt loop went on after ${step.host} answered`)
      }
    }

    const pay = (at: RunContext, step: Extract<Attempts.Next, { _tag: "Pay" }>) =>
      deps.paid!.run({
        lane: name,
        run: at.run,
        runId: at.runId,
        caller: at.request.caller,
        request: at.request,
        providers: step.providers,
        reason: step.reason,
        direct: step.direct,
        startedAt: at.startedAt,
        attemptsSoFar: step.attempts,
        ollamaError: step.error
      })

    /** Every remaining host is busy: wait for a slot on one of them, within the lane's maxWait. */
    const waitForSlot = (at: RunContext, signals: ReadonlyArray<Deferred.Deferred<void>>): Effect.Effect<Attempts.Outcome> =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const deadline = at.startedAt + config.queue.maxWait
        if (now >= deadline) return Effect.succeed({ _tag: "WaitExpired", waited: false } as const)
        return Effect.raceAll(signals.map((d) => Deferred.await(d))).pipe(
          Effect.timeout(deadline - now),
          Effect.option,
          Effect.map((freed): Attempts.Outcome => Option.isSome(freed) ? { _tag: "SlotFreed" } : { _tag: "WaitExpired", waited: true })
        )
      })

    /**
     * A slot on the step's host, then the attempt. The request's scope holds the slot and (for a stream)
     * the upstream body and the relay; a unary answer or a failure releases the slot at once (release is
     * idempotent). One scope per request, not a child per attempt: forking and closing one was a measurable
     * share of the request's Effect operations. A busy host hands back the signal of its next release.
     */
    const tryHost = (at: RunContext, step: Extract<Attempts.Next, { _tag: "Try" }>, state: Attempts.State, signals: ReadonlyArray<Deferred.Deferred<void>>) =>
      Effect.gen(function*() {
        const host = deps.hosts.get(step.step.host)!
        const taken = yield* Effect.uninterruptible(takeSlot(host))
        if (taken._tag === "Busy") return yield* drive(at, Attempts.evolve(state, { _tag: "Busy", host: step.step.host }), [...signals, taken.signal])
        const attemptStartedAt = yield* Clock.currentTimeMillis
        const started = at.run.append({ _tag: "AttemptStarted", attempt: step.attempt, host: step.step.host, timeoutMs: step.step.timeoutMs, slotPool: taken.pool })
        const lagAtStart = markLag()
        const result = yield* Effect.either(attempt(host, step.step, at.body, at.request, started, lagAtStart).pipe(
          Effect.tap((answer) => answer._tag === "Stream" ? Scope.addFinalizer(taken.scope, answer.open.close) : Effect.void)
        ))
        const timing: Timing = { attemptStartedAt, now: yield* Clock.currentTimeMillis, lagAtStart, lag: lagSince(lagAtStart) }
        if (result._tag === "Right") return yield* answered(at, step, result.right, taken, timing)
        yield* taken.release
        return yield* drive(at, Attempts.evolve(state, yield* missed(at, host, step, result.left, timing)), signals)
      })

    /** The host's slot, released by the request's scope at the latest; or the signal of its next release. */
    const takeSlot = (host: HostActor) =>
      Effect.flatMap(host.slots.acquireOrSignal(name), (permit): Effect.Effect<SlotOrSignal, never, Scope.Scope> =>
        "pool" in permit
          ? Effect.flatMap(Effect.scope, (scope) =>
            Effect.as(Scope.addFinalizer(scope, permit.release), { _tag: "Taken", pool: permit.pool, scope, release: permit.release } satisfies Taken))
          : Effect.succeed({ _tag: "Busy", signal: permit } as const))

    /** A failed attempt journaled, and what it tells the decider. */
    const missed = (at: RunContext, host: HostActor, step: Extract<Attempts.Next, { _tag: "Try" }>, error: UpstreamFailure | BreakerOpen, timing: Timing) =>
      Effect.gen(function*() {
        const h = step.step.host
        if (error instanceof BreakerOpen) {
          yield* at.run.append({ _tag: "HostSkipped", host: h, reason: "circuit-open", until: error.until, probeInFlight: error.probeInFlight })
          return { _tag: "BreakerOpen", host: h } satisfies Attempts.Outcome
        }
        // A stall of ours is no host failure: not a timeout toward the breaker (see attempt), and no reason to pay a provider.
        const stall = error.kind === "timeout" && stalledByGateway(timing.lag.longestStallMs, step.step.timeoutMs)
        yield* at.run.append({
          _tag: "AttemptFailed",
          attempt: step.attempt,
          host: h,
          kind: error.kind,
          status: error.status,
          message: stall ? `${error.message}, but the gateway's event loop was blocked ${timing.lag.longestStallMs}ms of it: not counted against ${h}` : error.message,
          durationMs: timing.now - timing.attemptStartedAt,
          afterFirstChunk: false,
          eventLoopLagMs: timing.lag.lagMs,
          eventLoopStallMs: timing.lag.longestStallMs,
          ...(stall ? { gatewayStall: true } : {})
        })
        if (error.kind === "refused") yield* host.reportRefused(error.message)
        return { _tag: "Failed", host: h, kind: error.kind, status: error.status, message: error.message, gatewayStallMs: stall ? timing.lag.longestStallMs : null } satisfies Attempts.Outcome
      })

    /** The host answered: a unary answer completes the run; a stream is relayed in the request's scope. */
    const answered = (at: RunContext, step: Extract<Attempts.Next, { _tag: "Try" }>, answer: AttemptAnswer, slot: Taken, timing: Timing) =>
      Effect.gen(function*() {
        const host = step.step.host
        const info: RunInfo = { runId: at.runId, traceId: at.request.caller.traceId, lane: name, model: config.model, endpoint: host }
        if (answer._tag === "Unary") {
          yield* slot.release
          yield* complete(at.run, host, answer.usage, at.startedAt, timing.attemptStartedAt, null, timing.lag)
          return { _tag: "Unary", info, bytes: answer.bytes } satisfies LaneResult
        }
        const source = yield* relay({
          lane: name,
          run: at.run,
          host,
          attempt: step.attempt,
          startedAt: at.startedAt,
          attemptStartedAt: timing.attemptStartedAt,
          complete: (usage) => complete(at.run, host, usage, at.startedAt, timing.attemptStartedAt, timing.now, lagSince(timing.lagAtStart))
        }, answer.open, slot.scope)
        return { _tag: "Stream", info, source, stream: toStream(source), idleTimeoutMs: step.step.timeoutMs } satisfies LaneResult
      })

    /** RunStarted (unless an async run journaled its own), in the writer observe() wraps. */
    const start = (request: LaneRequest, as: RunAs | undefined, runId: string) =>
      Effect.gen(function*() {
        const caller = request.caller
        const run = observe(
          as?.run ?? makeStreamWriter(deps.journal, { streamId: `run-${runId}`, traceId: caller.traceId, projectId: caller.projectId, lane: name }, 0, { durableEnd: deps.config.server.durableRunEnd }),
          request
        )
        if (as !== undefined) return run
        yield* run.append({
          _tag: "RunStarted",
          runId,
          // The process that runs it: a run of a process that is gone is an orphan (journal/Orphans.ts).
          instance: deps.journal.instance,
          operation: request.operation,
          protocol: request.protocol ?? "ollama",
          stream: request.stream,
          requestedModel: request.body.model,
          assignedModel: config.model === "" ? null : config.model,
          ...callerFacts(caller),
          ...(deps.config.server.journalPrompts ? { prompt: request.prompt } : {})
        })
        return run
      })

    /** Admission, plan, then the attempts; the admission slot is the request scope's until it closes. */
    const admitAndRoute = (request: LaneRequest, as: RunAs | undefined, runId: string, run: StreamWriter, startedAt: number) =>
      Effect.gen(function*() {
        if (config.async && as === undefined) return yield* fail(run, new AsyncOnlyLane({ lane: name }), startedAt)
        // The request scope's finalizer, added directly: Effect.acquireRelease would also diff and
        // restore the fiber's refs around it, a measurable cost per request for a counter.
        const admitted = yield* Effect.uninterruptible(Effect.tap(admit, (ok) => ok ? Effect.flatMap(Effect.scope, (scope) => Scope.addFinalizer(scope, leave)) : Effect.void))
        if (!admitted) {
          return yield* fail(run, new LaneSaturated({ lane: name, reason: `admission queue full (${config.queue.capacity} requests in the lane)`, retryAfterSeconds }), startedAt)
        }
        const { input, plan: decision } = yield* decideAt(Effect.succeed(startedAt))
        yield* run.append({ _tag: "RouteDecided", input, plan: decision })
        const body = decision.attempts.length === 0 ? new Uint8Array(0) : Buffer.from(JSON.stringify({ ...request.body, model: config.model, stream: request.stream }))
        const at: RunContext = { run, runId, request, startedAt, body }
        return yield* drive(at, Attempts.initial(attemptsInput(request, as), decision), [])
      })

    /**
     * The run invariant: whatever ends a started run (an error, a defect, an interruption), its
     * stream ends — once. A stream result ends it when the stream does, or when the request's scope
     * closes first (Relay.ts, PaidRoute).
     */
    const handle = (request: LaneRequest, as?: RunAs): Effect.Effect<LaneResult, GatewayError, Scope.Scope> =>
      Effect.gen(function*() {
        const startedAt = yield* Clock.currentTimeMillis
        const runId = as?.runId ?? timeOrderedUuid()
        // Nothing could record the run (neither Postgres nor the spill takes writes): refuse it at once.
        if (as === undefined && deps.journal.unavailable()) return yield* Effect.fail(new JournalUnavailable({ lane: name }))
        const run = yield* start(request, as, runId)
        return yield* admitAndRoute(request, as, runId, run, startedAt).pipe(
          Effect.onExit((exit) => {
            if (Exit.isSuccess(exit)) return Effect.void
            // An async run's worker decides what an interruption means (a cancel, a suspension).
            if (as !== undefined && Option.isNone(failureOf(exit.cause)) && Cause.isInterruptedOnly(exit.cause)) return Effect.void
            return endRun(run, endOf(exit), startedAt)
          })
        )
      })

    const mode = deps.mode ?? (yield* LaneMode.make(name, config.mode, { journal: deps.journal }))
    return { name, config, handle, inFlight: Ref.get(admitted), decide, mode } satisfies LaneActor
  })
