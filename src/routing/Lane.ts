/**
 * The lane actor: admission (a bounded number of requests in the lane), then plan(), then the
 * attempts down the lane's route with each host's slots, breaker and timeout. Every step is a
 * journal event on the run's stream.
 */
import { Cause, Clock, Deferred, Effect, Exit, FiberRef, Option, Ref } from "effect"
import { type GatewayConfig, type LaneConfig, priceOf } from "../config/GatewayConfig.ts"
import {
  AllAttemptsTimedOut,
  AllHostsUnavailable,
  AsyncOnlyLane,
  CallerForbidden,
  type GatewayError,
  JournalUnavailable,
  LaneSaturated,
  ModelDenied,
  ModelNotFound,
  UpstreamRejected
} from "../domain/Errors.ts"
import type { Usage } from "../domain/OllamaApi.ts"
import { operationPath, sameModel } from "../domain/OllamaApi.ts"
import type { Journal } from "../journal/Journal.ts"
import { endRun, makeStreamWriter, type StreamWriter } from "../journal/StreamWriter.ts"
import { encodeLine, joinLines } from "../upstream/Ndjson.ts"
import { isUnavailableFailure, type OllamaUpstream, type OpenStream, UpstreamFailure, usageOf } from "../upstream/OllamaUpstream.ts"
import { BreakerOpen, type Outcome } from "./Breaker.ts"
import { abortReason } from "./AbortReason.ts"
import { type ChunkSource, toStream } from "./ChunkSource.ts"
import type { HostActor } from "./Host.ts"
import type { PaidRoute } from "./PaidRoute.ts"
import { type HostView, plan, type Plan, type PlanInput, type PlannedAttempt } from "./Plan.ts"
import type { Permit } from "./Slots.ts"
import { type LagMark, stalledByGateway } from "../observability/EventLoopLag.ts"
import { costOf } from "../run/Cost.ts"
import { directReason, fallbackReason, type Miss } from "../run/Miss.ts"
import { describeSkip } from "../run/SkipReason.ts"
import { callerFacts, type LaneRequest, type LaneResult, once, type RunAs, type RunInfo } from "../run/Run.ts"
import { classify, endOf, failureOf } from "../run/Terminal.ts"

export interface LaneActor {
  readonly name: string
  readonly config: LaneConfig
  readonly handle: (request: LaneRequest, as?: RunAs) => Effect.Effect<LaneResult, GatewayError>
  readonly inFlight: Effect.Effect<number>
  /** plan() against the live host view, without running anything (shadow mode, the health view). */
  readonly decide: Effect.Effect<{ readonly input: PlanInput; readonly plan: Plan }>
}

interface Deps {
  readonly journal: Journal
  readonly upstream: OllamaUpstream
  readonly hosts: ReadonlyMap<string, HostActor>
  readonly config: GatewayConfig
  /** Paid providers behind the budget (a lane's `paidFallback`, or a `paid` lane). */
  readonly paid?: PaidRoute
  /** The gateway's own event-loop lag (observability/EventLoopLag.ts): a timeout it caused is not the host's. */
  readonly lag?: {
    readonly mark: () => LagMark
    readonly since: (from: LagMark) => { readonly lagMs: number; readonly longestStallMs: number }
  }
  /** Wraps each run's writer so metrics and spans follow the run's facts (observability/RunObserver.ts). */
  readonly observe?: (lane: string, config: LaneConfig) => (run: StreamWriter, request: LaneRequest) => StreamWriter
}

type AttemptAnswer =
  | { readonly _tag: "Unary"; readonly bytes: Uint8Array; readonly usage: Usage }
  | { readonly _tag: "Stream"; readonly open: OpenStream }

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

    const snapshot = Effect.gen(function*() {
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

    /**
     * Every Ollama step failed (or the lane has none): the lane's paid providers when it has any and the
     * failures allow it (runbook: every endpoint failed or is circuit-open; a rule's refusal never
     * falls back to paying); otherwise the Ollama error as it is.
     */
    const exhausted = (
      at: { readonly run: StreamWriter; readonly runId: string; readonly request: LaneRequest; readonly startedAt: number; readonly attempts: number },
      error: GatewayError,
      misses: ReadonlyArray<Miss>
    ): Effect.Effect<LaneResult, GatewayError> => {
      const direct = config.paid.length > 0
      const providers = direct ? config.paid : config.paidFallback
      const reason = direct ? directReason(name) : fallbackReason(misses, route.map((s) => s.host))
      if (deps.paid === undefined || providers.length === 0 || reason === null) return fail(at.run, error, at.startedAt)
      const caller = at.request.caller
      if (caller.mayPay === false) {
        // The caller's entry (anonymous.paidFallback: false by default) never spends money.
        const why = `caller ${caller.caller ?? "anonymous"} may not spend money on paid providers (paidFallback: false)`
        return at.run.append({ _tag: "PaidFallbackSkipped", reason: why, providers, fallbackReason: reason, caller: caller.caller ?? null }).pipe(
          Effect.zipRight(fail(at.run, direct ? new CallerForbidden({ caller: caller.caller ?? "anonymous", reason: `may not use the paid lane ${name} (paidFallback: false)` }) : error, at.startedAt))
        )
      }
      return deps.paid.run({
        lane: name,
        run: at.run,
        runId: at.runId,
        caller: at.request.caller,
        request: at.request,
        providers,
        reason,
        direct,
        startedAt: at.startedAt,
        attemptsSoFar: at.attempts,
        ollamaError: error,
        onStreamEnd: leave
      })
    }

    const noMark: LagMark = { at: 0, stalled: 0 }
    const markLag = () => deps.lag?.mark() ?? noMark
    const noLag = { lagMs: 0, longestStallMs: 0 }
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
     * One attempt on one host: slot, breaker, timeout. Success hands back the answer with its permit
     * still held. `started` (the AttemptStarted event) runs only once the breaker admitted the call,
     * so a breaker that opened since plan() leaves a HostSkipped, not an attempt without an outcome.
     */
    const attempt = (
      host: HostActor,
      step: PlannedAttempt,
      body: Uint8Array,
      request: LaneRequest,
      permit: Permit,
      started: Effect.Effect<void>,
      lagAtStart: LagMark
    ): Effect.Effect<AttemptAnswer, UpstreamFailure | BreakerOpen> => {
      const path = operationPath[request.operation]
      // A timeout the gateway's own stall caused says nothing about the host (EventLoopLag.ts).
      const judge = (exit: Exit.Exit<unknown, UpstreamFailure>): Outcome => {
        const outcome = classify(exit)
        return outcome === "timeout" && stalledByGateway(lagSince(lagAtStart).longestStallMs, step.timeoutMs) ? "ignore" : outcome
      }
      if (!request.stream) {
        return host.breaker.guard(
          Effect.zipRight(started, deps.upstream.unary(host.target, "POST", path, body, step.timeoutMs)),
          judge
        ).pipe(
          Effect.map((r) => ({ _tag: "Unary" as const, bytes: r.bytes, usage: usageOf(r.json) })),
          Effect.ensuring(permit.release)
        )
      }
      return host.breaker.guard(
        Effect.zipRight(started, deps.upstream.openStream(host.target, path, body, step.timeoutMs)),
        judge
      ).pipe(
        Effect.map((open) => ({ _tag: "Stream" as const, open })),
        Effect.onError(() => permit.release)
      )
    }

    /** plan() against the live host view, at the time `now` gives (a run plans at its start). */
    const decideAt = (now: Effect.Effect<number>) =>
      Effect.gen(function*() {
        const input: PlanInput = {
          lane: name,
          model: config.model,
          route,
          hosts: yield* snapshot,
          policy: { heavyModelMinParamsB: deps.config.policy.heavyModelMinParamsB },
          now: yield* now
        }
        return { input, plan: plan(input) }
      })
    const decide = decideAt(Clock.currentTimeMillis)

    const handle = (request: LaneRequest, as?: RunAs): Effect.Effect<LaneResult, GatewayError> => {
      /** Set once RunStarted is appended: from then on the run must end. */
      let opened: { readonly run: StreamWriter; readonly startedAt: number } | null = null
      return Effect.gen(function*() {
        const startedAt = yield* Clock.currentTimeMillis
        const runId = as?.runId ?? crypto.randomUUID()
        const caller = request.caller
        // Nothing could record the run (neither Postgres nor the spill takes writes): refuse it at once.
        if (as === undefined && deps.journal.unavailable()) return yield* Effect.fail(new JournalUnavailable({ lane: name }))
        const run = observe(
          as?.run ?? makeStreamWriter(deps.journal, { streamId: `run-${runId}`, traceId: caller.traceId, projectId: caller.projectId, lane: name }, 0, { durableEnd: deps.config.server.durableRunEnd }),
          request
        )
        const requestedModel = typeof request.body.model === "string" ? request.body.model : null
        if (as === undefined) yield* run.append({
          _tag: "RunStarted",
          runId,
          // The process that runs it: a run of a process that is gone is an orphan (journal/Orphans.ts).
          instance: deps.journal.instance,
          operation: request.operation,
          protocol: request.protocol ?? "ollama",
          stream: request.stream,
          requestedModel,
          assignedModel: config.model === "" ? null : config.model,
          ...callerFacts(caller),
          ...(deps.config.server.journalPrompts ? { prompt: request.prompt } : {})
        })
        opened = { run, startedAt }
        if (config.async && as === undefined) return yield* fail(run, new AsyncOnlyLane({ lane: name }), startedAt)
        if (!(yield* admit)) {
          return yield* fail(run, new LaneSaturated({ lane: name, reason: `admission queue full (${config.queue.capacity} requests in the lane)`, retryAfterSeconds }), startedAt)
        }
        // From here the admission slot is held; it is returned when the answer (or stream) is done.
        let handedOff = false
        return yield* Effect.gen(function*() {
          const { input, plan: decision } = yield* decideAt(Effect.succeed(startedAt))
          yield* run.append({ _tag: "RouteDecided", input, plan: decision })

          const misses: Array<Miss> = decision.skipped.map((s) => ({ host: s.host, kind: s.reason.kind, text: describeSkip(s) }))
          if (decision.attempts.length === 0) {
            const kinds = new Set(decision.skipped.map((s) => s.reason.kind))
            const hosts = decision.skipped.map((s) => s.host)
            const error: GatewayError = kinds.size === 1 && kinds.has("heavy-model-denied")
              ? new ModelDenied({ lane: name, model: config.model, rule: `policy.heavyModelMinParamsB=${deps.config.policy.heavyModelMinParamsB} on protected hosts`, hosts })
              : kinds.size === 1 && kinds.has("model-not-installed")
              ? new ModelNotFound({ lane: name, model: config.model, hosts })
              : new AllHostsUnavailable({ lane: name, reasons: misses.map((m) => m.text), retryAfterSeconds })
            const result = yield* exhausted({ run, runId, request, startedAt, attempts: as?.attemptsSoFar ?? 0 }, error, misses)
            if (result._tag === "Stream") handedOff = true
            return result
          }

          const body = Buffer.from(JSON.stringify({ ...request.body, model: config.model, stream: request.stream }))
          const deadline = startedAt + config.queue.maxWait
          // True while every attempt so far failed because its host could not take the request.
          let onlyUnavailable = decision.skipped.every((s) => s.reason.kind !== "heavy-model-denied")
          let pending: ReadonlyArray<PlannedAttempt> = decision.attempts
          let attemptNo = as?.attemptsSoFar ?? 0

          while (pending.length > 0) {
            const saturated: Array<PlannedAttempt> = []
            // Conditional steps behind a host that is merely busy: busy is not unavailable (a
            // code-review flood on 111 must not spill onto gcp-b), so they wait with it.
            const deferred: Array<PlannedAttempt> = []
            const signals: Array<Deferred.Deferred<void>> = []
            for (const step of pending) {
              const host = deps.hosts.get(step.host)!
              if (step.conditional && !onlyUnavailable) {
                yield* run.append({ _tag: "HostSkipped", host: step.host, reason: "only-when-unavailable", message: `${step.host} is used only when the hosts before it are unavailable` })
                continue
              }
              if (step.conditional && saturated.length > 0) {
                deferred.push(step)
                continue
              }
              // A busy host hands back the signal of its next release with the refusal, so a slot
              // freed while this request is busy on later hosts still wakes it.
              const permit = yield* host.slots.acquireOrSignal(name)
              if (!("pool" in permit)) {
                saturated.push(step)
                signals.push(permit)
                continue
              }
              attemptNo++
              const attemptStartedAt = yield* Clock.currentTimeMillis
              const started = run.append({ _tag: "AttemptStarted", attempt: attemptNo, host: step.host, timeoutMs: step.timeoutMs, slotPool: permit.pool })
              const lagAtStart = markLag()
              const result = yield* Effect.either(attempt(host, step, body, request, permit, started, lagAtStart))
              const now = yield* Clock.currentTimeMillis
              const lag = lagSince(lagAtStart)
              if (result._tag === "Left") {
                const error = result.left
                if (error instanceof BreakerOpen) {
                  attemptNo-- // never started
                  yield* run.append({ _tag: "HostSkipped", host: step.host, reason: "circuit-open", until: error.until, probeInFlight: error.probeInFlight })
                  misses.push({ host: step.host, kind: "circuit-open", text: `${step.host} circuit open` })
                  continue
                }
                const stall = error.kind === "timeout" && stalledByGateway(lag.longestStallMs, step.timeoutMs)
                yield* run.append({
                  _tag: "AttemptFailed",
                  attempt: attemptNo,
                  host: step.host,
                  kind: error.kind,
                  status: error.status,
                  message: stall ? `${error.message}, but the gateway's event loop was blocked ${lag.longestStallMs}ms of it: not counted against ${step.host}` : error.message,
                  durationMs: now - attemptStartedAt,
                  afterFirstChunk: false,
                  eventLoopLagMs: lag.lagMs,
                  eventLoopStallMs: lag.longestStallMs,
                  ...(stall ? { gatewayStall: true } : {})
                })
                // A stall of ours is no host failure: not a timeout toward the breaker (see attempt),
                // and no reason to pay a provider either (fallbackReason does not know the kind).
                misses.push(stall
                  ? { host: step.host, kind: "gateway-stall", text: `${step.host} timed out while the gateway's event loop was blocked ${lag.longestStallMs}ms` }
                  : { host: step.host, kind: error.kind, text: `${step.host} ${error.kind === "timeout" ? "timed out" : "failed"}: ${error.message}` })
                if (error.kind === "refused") yield* host.reportRefused(error.message)
                if (error.kind === "rejected") {
                  return yield* fail(run, new UpstreamRejected({ host: step.host, upstreamStatus: error.status ?? 400, upstreamError: error.message.replace(/^\d+: /, "") }), startedAt)
                }
                if (!isUnavailableFailure(error) && error.kind !== "not-found") onlyUnavailable = false
                continue
              }
              const info: RunInfo = { runId, traceId: caller.traceId, lane: name, model: config.model, endpoint: step.host }
              const answer = result.right
              if (answer._tag === "Unary") {
                yield* complete(run, step.host, answer.usage, startedAt, attemptStartedAt, null, lag)
                return { _tag: "Unary", info, bytes: answer.bytes } satisfies LaneResult
              }
              handedOff = true
              const source = relay(run, answer.open, step.host, attemptNo, startedAt, attemptStartedAt, now, lagAtStart, Effect.zipRight(permit.release, leave))
              return { _tag: "Stream", info, source, stream: toStream(source), idleTimeoutMs: step.timeoutMs } satisfies LaneResult
            }
            if (saturated.length === 0) break
            // Every remaining host is busy: wait for a slot on one of them, within the lane's maxWait.
            const now = yield* Clock.currentTimeMillis
            if (now >= deadline) {
              for (const s of saturated) misses.push({ host: s.host, kind: "saturated", text: `${s.host} all slots busy` })
              break
            }
            const freed = yield* Effect.raceAll(signals.map((d) => Deferred.await(d))).pipe(Effect.timeout(deadline - now), Effect.option)
            if (Option.isNone(freed)) {
              for (const s of saturated) misses.push({ host: s.host, kind: "saturated", text: `${s.host} all slots busy for ${config.queue.maxWait / 1000}s` })
              break
            }
            pending = pending.filter((s) => saturated.includes(s) || deferred.includes(s))
          }

          const tried = misses.filter((m) => m.kind !== "only-when-unavailable")
          const error: GatewayError = tried.length > 0 && tried.every((m) => m.kind === "saturated")
            ? new LaneSaturated({ lane: name, reason: tried.map((m) => m.text).join("; "), retryAfterSeconds })
            : tried.length > 0 && tried.every((m) => m.kind === "timeout")
            ? new AllAttemptsTimedOut({ lane: name, reasons: tried.map((m) => m.text) })
            : tried.length > 0 && tried.every((m) => m.kind === "not-found" || m.kind === "model-not-installed")
            ? new ModelNotFound({ lane: name, model: config.model, hosts: tried.map((m) => m.host) })
            : new AllHostsUnavailable({ lane: name, reasons: misses.map((m) => m.text), retryAfterSeconds })
          const result = yield* exhausted({ run, runId, request, startedAt, attempts: attemptNo }, error, misses)
          if (result._tag === "Stream") handedOff = true
          return result
        }).pipe(
          Effect.onExit((exit) => handedOff && Exit.isSuccess(exit) ? Effect.void : leave)
        )
      }).pipe(
        // The run invariant: whatever ended this (an error, a defect, an interruption), the run
        // stream ends — once. A stream result ends it when the stream does (relay, PaidRoute).
        Effect.onExit((exit) => {
          if (opened === null || Exit.isSuccess(exit)) return Effect.void
          // An async run's worker decides what an interruption means (a cancel, a suspension).
          if (as !== undefined && Option.isNone(failureOf(exit.cause)) && Cause.isInterruptedOnly(exit.cause)) return Effect.void
          return endRun(opened.run, endOf(exit), opened.startedAt)
        })
      )
    }

    /**
     * The caller's stream: the head the upstream already sent, then the rest as it arrives. A failure
     * after the first chunk cannot fail over (the caller has tokens); it ends with an {"error"} line,
     * never a fake done, and the journal says so.
     */
    const relay = (
      run: StreamWriter,
      open: OpenStream,
      host: string,
      attemptNo: number,
      startedAt: number,
      attemptStartedAt: number,
      firstChunkAt: number,
      lagAtStart: LagMark,
      release: Effect.Effect<void>
    ): ChunkSource => {
      let state: "head" | "rest" | "over" = "head"
      // The answer's last facts are journaled whole, even if the caller goes away meanwhile.
      const failed = (failure: UpstreamFailure) =>
        Effect.uninterruptible(Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          yield* run.append({ _tag: "AttemptFailed", attempt: attemptNo, host, kind: failure.kind, status: failure.status, message: failure.message, durationMs: now - attemptStartedAt, afterFirstChunk: true })
          yield* run.append({ _tag: "RunFailed", status: 502, error: "StreamBroken", message: `host ${host}: ${failure.message}`, durationMs: now - startedAt })
          return encodeLine({ error: `lane ${name}: host ${host} failed mid-stream: ${failure.message}` })
        }))
      const next: Effect.Effect<Uint8Array | null> = Effect.suspend(() => {
        switch (state) {
          case "head":
            state = "rest"
            return Effect.succeed(joinLines(open.head))
          case "over":
            return Effect.succeed(null)
          case "rest":
            return Effect.matchEffect(open.pull, {
              onFailure: (failure) => {
                state = "over"
                return failed(failure)
              },
              onSuccess: (chunk) => {
                if (chunk !== null) return Effect.succeed(chunk)
                state = "over"
                return Effect.as(Effect.uninterruptible(complete(run, host, open.usage(), startedAt, attemptStartedAt, firstChunkAt, lagSince(lagAtStart))), null)
              }
            })
        }
      })
      const close = once((interrupted: boolean) =>
        Effect.gen(function*() {
          // An answer that already ended (completed, or its error line sent) was not cut short.
          if (interrupted && state !== "over") {
            state = "over"
            const now = yield* Clock.currentTimeMillis
            const why = yield* FiberRef.get(abortReason)
            yield* run.append({ _tag: "RunFailed", status: why.status, error: why.error, message: why.message, durationMs: now - startedAt })
          }
          yield* open.close
          yield* release
        })
      )
      return { next, close }
    }

    return { name, config, handle, inFlight: Ref.get(admitted), decide } satisfies LaneActor
  })
