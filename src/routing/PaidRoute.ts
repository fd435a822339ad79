/**
 * The paid route: Gemini / Claude once a lane's Ollama steps are exhausted (`paidFallback`), or
 * directly for a `paid` lane (the runbook's `paid-emergency`), always behind the budget.
 *
 * Per provider, in the lane's order:
 *   reserve the worst case in the ledger (refused → BudgetDenied, 503 naming the hard kill; ledger
 *   unreachable → 503, fail closed) → BudgetReserved, durable → AttemptStarted(provider) → the call →
 *   BudgetSettled (real cost; the worst case when usage is unknown) or BudgetReleased (the call failed
 *   before any output) → RunCompleted with providerTier "paid" and the provider as endpoint.
 * A provider that fails before its first token hands over to the next one; after the first token the
 * stream ends with an {"error"} line, like an Ollama host's.
 */
import { Clock, Duration, Effect, Exit, FiberRef, Option, Scope, Stream } from "effect"
import { GatewayConfigTag, type Price, priceOf } from "../config/GatewayConfig.ts"
import type { CallerContext } from "../domain/CallerContext.ts"
import { BadRequest, BudgetDenied, BudgetUnavailable, type GatewayError, PaidProvidersFailed } from "../domain/Errors.ts"
import { Budget } from "../budget/Budget.ts"
import type { StreamWriter } from "../journal/StreamWriter.ts"
import { type PaidProvider, ProviderFailure } from "../providers/PaidProvider.ts"
import { PaidProviders } from "../providers/PaidProviders.ts"
import {
  type DoneReason,
  estimateInputTokens,
  ollamaChunk,
  ollamaFinal,
  type PaidRequest,
  type PaidUsage,
  type ProviderEvent,
  toPaidRequest
} from "../providers/Translate.ts"
import { encodeLine } from "../upstream/Ndjson.ts"
import { abortReason } from "./AbortReason.ts"
import { endOf } from "../run/Terminal.ts"
import { costOf } from "../run/Cost.ts"
import { type LaneRequest, type LaneResult, type RunInfo } from "../run/Run.ts"

export interface PaidRunContext {
  readonly lane: string
  readonly run: StreamWriter
  readonly runId: string
  readonly caller: CallerContext
  readonly request: LaneRequest
  /** Provider names, in the order to try them. */
  readonly providers: ReadonlyArray<string>
  /** Why paid providers are asked ("all Ollama endpoints failed: …"); journaled and put in RunCompleted. */
  readonly reason: string
  /** A `paid` lane (no Ollama route) rather than a fallback. */
  readonly direct: boolean
  readonly startedAt: number
  /** Attempts the lane already made (the paid ones are numbered after them). */
  readonly attemptsSoFar: number
  /** The Ollama outcome, returned as it is when the request cannot go to a paid provider. */
  readonly ollamaError: GatewayError
}

/** The worst-case cost of a call: every prompt token (bounded from above) and every output token allowed. */
export const worstCaseUsd = (request: PaidRequest, price: Price) => {
  const inputTokens = estimateInputTokens(request)
  return { inputTokens, amountUsd: inputTokens * price.inputPerToken + request.maxOutputTokens * price.outputPerToken }
}

/** How long a money event may wait to be durable before the call is refused (fail closed). */
const DURABLE_TIMEOUT = Duration.seconds(5)

interface Reserved {
  readonly reservationId: string
  readonly provider: PaidProvider
  readonly amountUsd: number
  readonly price: Price
}

export class PaidRoute extends Effect.Service<PaidRoute>()("awooop/PaidRoute", {
  effect: Effect.gen(function*() {
    const config = yield* GatewayConfigTag
    const budget = yield* Budget
    const registry = yield* PaidProviders

    const failRun = (ctx: PaidRunContext, error: GatewayError) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        yield* ctx.run.append({ _tag: "RunFailed", status: error.status, error: error._tag, message: error.message, durationMs: now - ctx.startedAt, fallbackReason: ctx.reason })
        return yield* Effect.fail(error)
      })

    /** Journal first (durably), then the ledger: a crash in between leaves the journal ahead, and startup repairs the table. */
    const settle = (ctx: PaidRunContext, r: Reserved, usage: PaidUsage | null, why: string) =>
      Effect.gen(function*() {
        const costUsd = costOf(usage, r.price)
        // Unknown usage is charged at the reservation: the cap must hold even when a provider is silent.
        const chargedUsd = costUsd ?? r.amountUsd
        yield* ctx.run.appendDurable({
          _tag: "BudgetSettled",
          reservationId: r.reservationId,
          provider: r.provider.name,
          model: r.provider.model,
          reservedUsd: r.amountUsd,
          costUsd,
          chargedUsd,
          inputTokens: usage?.inputTokens ?? null,
          outputTokens: usage?.outputTokens ?? null,
          usageKnown: costUsd !== null,
          note: why
        }).pipe(Effect.timeout(DURABLE_TIMEOUT))
        yield* budget.settle(r.reservationId, chargedUsd, costUsd)
        return costUsd
      }).pipe(
        Effect.catchAll((error) =>
          Effect.logError(`Budget: settling reservation ${r.reservationId} failed; it stays reserved (at its worst case) until the next start`, error).pipe(
            Effect.as(costOf(usage, r.price))
          )
        )
      )

    const release = (ctx: PaidRunContext, r: Reserved, reason: string) =>
      ctx.run.appendDurable({ _tag: "BudgetReleased", reservationId: r.reservationId, provider: r.provider.name, reservedUsd: r.amountUsd, reason }).pipe(
        Effect.timeout(DURABLE_TIMEOUT),
        Effect.zipRight(budget.release(r.reservationId, reason)),
        Effect.catchAll((error) =>
          Effect.logError(`Budget: releasing reservation ${r.reservationId} failed; it stays reserved until the next start`, error)
        )
      )

    const complete = (ctx: PaidRunContext, r: Reserved, attemptStartedAt: number, firstChunkAt: number | null, usage: PaidUsage | null, doneReason: DoneReason, costUsd: number | null) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        yield* ctx.run.append({
          _tag: "AttemptSucceeded",
          host: r.provider.name,
          provider: r.provider.name,
          tier: "paid",
          durationMs: now - attemptStartedAt,
          firstChunkMs: firstChunkAt === null ? null : firstChunkAt - attemptStartedAt
        })
        yield* ctx.run.append({
          _tag: "RunCompleted",
          endpoint: r.provider.name,
          providerTier: "paid",
          model: r.provider.model,
          inputTokens: usage?.inputTokens ?? null,
          outputTokens: usage?.outputTokens ?? null,
          doneReason,
          costUsd,
          fallbackReason: ctx.reason,
          reservationId: r.reservationId,
          durationMs: now - ctx.startedAt
        })
      })

    const attemptFailed = (ctx: PaidRunContext, attempt: number, r: Reserved, failure: ProviderFailure, attemptStartedAt: number, afterFirstChunk: boolean) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        ctx.run.append({
          _tag: "AttemptFailed",
          attempt,
          host: r.provider.name,
          provider: r.provider.name,
          tier: "paid",
          kind: failure.kind,
          status: failure.status,
          message: failure.message,
          durationMs: now - attemptStartedAt,
          afterFirstChunk
        }))

    const timeoutFailure = (provider: PaidProvider, what: string) =>
      new ProviderFailure({ provider: provider.name, kind: "timeout", status: null, message: `no ${what} within ${provider.timeoutMs / 1000}s` })

    /** Stream events until the first text (or the finish): what must arrive before the caller sees anything. */
    const openStream = (provider: PaidProvider, request: PaidRequest) =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const close = Scope.close(scope, Exit.void)
        const pull = yield* Stream.toPull(provider.stream(request)).pipe(Scope.extend(scope))
        const next = (what: string) =>
          pull.pipe(
            Effect.timeoutFail({ duration: provider.timeoutMs, onTimeout: () => Option.some(timeoutFailure(provider, what)) })
          )
        const head: Array<ProviderEvent> = []
        let ended = false
        while (!head.some((e) => e._tag !== "Usage") && !ended) {
          const chunk = yield* next(head.length === 0 ? "answer" : "first chunk").pipe(
            Effect.map(Option.some),
            Effect.catchAll((e) => Option.isNone(e) ? Effect.succeed(Option.none()) : Effect.fail(e.value)),
            Effect.onError(() => close)
          )
          if (Option.isNone(chunk)) ended = true
          else head.push(...chunk.value)
        }
        const rest: Stream.Stream<ProviderEvent, ProviderFailure> = ended
          ? Stream.empty
          : Stream.repeatEffectOption(next("next chunk")).pipe(Stream.flattenChunks)
        return { head, rest, close }
      })

    const run = (ctx: PaidRunContext): Effect.Effect<LaneResult, GatewayError, Scope.Scope> =>
      Effect.gen(function*() {
        const first = toPaidRequest(ctx.request.operation, ctx.request.body, 1)
        if ("unsupported" in first) {
          yield* ctx.run.append({ _tag: "PaidFallbackSkipped", reason: first.unsupported, providers: ctx.providers, fallbackReason: ctx.reason })
          if (!ctx.direct) return yield* failRun(ctx, ctx.ollamaError)
          if (first.load === true) return yield* loadAnswer(ctx)
          return yield* failRun(ctx, new BadRequest({ message: `lane ${ctx.lane}: ${first.unsupported}` }))
        }
        yield* ctx.run.append({ _tag: "PaidFallbackRequested", reason: ctx.reason, providers: ctx.providers, direct: ctx.direct })
        return yield* tryProviders(ctx, ctx.providers, ctx.attemptsSoFar, [])
      })

    /** The providers in the lane's order: each failure before any output hands over to the next one. */
    const tryProviders = (
      ctx: PaidRunContext,
      names: ReadonlyArray<string>,
      attempt: number,
      failures: ReadonlyArray<string>
    ): Effect.Effect<LaneResult, GatewayError, Scope.Scope> => {
      const [name, ...rest] = names
      if (name === undefined) return failRun(ctx, new PaidProvidersFailed({ lane: ctx.lane, reasons: [ctx.reason, ...failures] }))
      return Effect.flatMap(tryProvider(ctx, name, attempt), (outcome) =>
        outcome._tag === "Answered"
          ? Effect.succeed(outcome.result)
          : tryProviders(ctx, rest, outcome.attempted ? attempt + 1 : attempt, [...failures, outcome.why]))
    }

    type ProviderOutcome =
      | { readonly _tag: "Answered"; readonly result: LaneResult }
      | { readonly _tag: "Next"; readonly why: string; readonly attempted: boolean }

    const tryProvider = (ctx: PaidRunContext, name: string, attemptsSoFar: number): Effect.Effect<ProviderOutcome, GatewayError, Scope.Scope> =>
      Effect.gen(function*() {
        const provider = registry.get(name)
        if (provider === undefined || !provider.configured) {
          const why = provider === undefined ? `${name} is not a configured provider` : `${name} skipped: its API key environment variable is not set`
          yield* ctx.run.append({ _tag: "PaidProviderSkipped", provider: name, reason: why })
          return { _tag: "Next", why, attempted: false } as const
        }
        const request = toPaidRequest(ctx.request.operation, ctx.request.body, provider.maxOutputTokens) as PaidRequest
        const price = priceOf(config.prices, provider.model, provider.kind)
        // The config check makes this unreachable; without a price no worst case can be reserved.
        if (price === undefined) return { _tag: "Next", why: `${name} has no price for ${provider.model}`, attempted: false } as const
        const reserved = yield* reserve(ctx, provider, request, price)
        const attempt = attemptsSoFar + 1
        const attemptStartedAt = yield* Clock.currentTimeMillis
        yield* ctx.run.append({
          _tag: "AttemptStarted",
          attempt,
          host: name,
          provider: name,
          tier: "paid",
          model: provider.model,
          timeoutMs: provider.timeoutMs,
          reservationId: reserved.reservationId
        })
        const call: ProviderCall = { ctx, reserved, request, attempt, attemptStartedAt }
        return yield* (ctx.request.stream ? callStream(call) : callUnary(call))
      })

    /** The worst case reserved in the ledger and journaled durably, or the run fails (fail closed). */
    const reserve = (ctx: PaidRunContext, provider: PaidProvider, request: PaidRequest, price: Price) =>
      Effect.gen(function*() {
        const worst = worstCaseUsd(request, price)
        const reservationId = crypto.randomUUID()
        const decision = yield* budget.reserve({
          reservationId,
          runId: ctx.runId,
          traceId: ctx.caller.traceId,
          projectId: ctx.caller.projectId,
          lane: ctx.lane,
          provider: provider.name,
          model: provider.model,
          amountUsd: worst.amountUsd,
          caller: ctx.caller.caller ?? null,
          callerBudget: ctx.caller.caller == null ? undefined : config.callers?.[ctx.caller.caller]?.budget
        }).pipe(Effect.either)
        if (decision._tag === "Left") {
          yield* ctx.run.append({ _tag: "BudgetDenied", provider: provider.name, amountUsd: worst.amountUsd, failClosed: true, reason: decision.left.message })
          yield* Effect.logError(`lane ${ctx.lane}: paid call refused, the budget ledger is unreachable`, decision.left)
          return yield* failRun(ctx, new BudgetUnavailable({ lane: ctx.lane, fallbackReason: ctx.reason }))
        }
        const d = decision.right
        if (d._tag === "Denied") {
          yield* ctx.run.append({
            _tag: "BudgetDenied",
            provider: provider.name,
            amountUsd: worst.amountUsd,
            capUsd: d.capUsd,
            committedUsd: d.committedUsd,
            periodStart: d.periodStart,
            operatorKill: d.operatorKill,
            reason: d.reason
          })
          // The journal keeps the figures; the caller is told only which cap said no.
          return yield* failRun(ctx, new BudgetDenied({ lane: ctx.lane, reason: d.publicReason, fallbackReason: ctx.reason }))
        }
        const reserved: Reserved = { reservationId, provider, amountUsd: worst.amountUsd, price }
        yield* journalReserved(ctx, reserved, worst.inputTokens, request.maxOutputTokens, d)
        return reserved
      })

    /**
     * BudgetReserved, durably, before any call. Not confirmed durable (the journal is degraded): no
     * call is made. The release goes on the run's stream before RunFailed (spilled in order if need
     * be), so a restart finds the reservation already released instead of appending to a finished run.
     */
    const journalReserved = (
      ctx: PaidRunContext,
      r: Reserved,
      inputTokensEstimate: number,
      maxOutputTokens: number,
      cap: { readonly capUsd: number; readonly committedUsd: number; readonly periodStart: string }
    ) =>
      Effect.gen(function*() {
        const durable = yield* ctx.run.appendDurable({
          _tag: "BudgetReserved",
          reservationId: r.reservationId,
          provider: r.provider.name,
          model: r.provider.model,
          amountUsd: r.amountUsd,
          inputTokensEstimate,
          maxOutputTokens,
          inputUsdPerMillion: r.price.inputPerToken * 1e6,
          outputUsdPerMillion: r.price.outputPerToken * 1e6,
          capUsd: cap.capUsd,
          committedUsd: cap.committedUsd,
          periodStart: cap.periodStart
        }).pipe(
          Effect.timeout(DURABLE_TIMEOUT),
          Effect.either,
          Effect.onInterrupt(() => release(ctx, r, "the caller went away before the call"))
        )
        if (durable._tag === "Right") return
        const why = "the reservation could not be journaled durably; no call was made"
        yield* ctx.run.append({ _tag: "BudgetReleased", reservationId: r.reservationId, provider: r.provider.name, reservedUsd: r.amountUsd, reason: why })
        yield* budget.release(r.reservationId, why).pipe(Effect.ignore)
        return yield* failRun(ctx, new BudgetUnavailable({ lane: ctx.lane, fallbackReason: ctx.reason }))
      })

    interface ProviderCall {
      readonly ctx: PaidRunContext
      readonly reserved: Reserved
      readonly request: PaidRequest
      readonly attempt: number
      readonly attemptStartedAt: number
    }

    const infoOf = (c: ProviderCall): RunInfo =>
      ({ runId: c.ctx.runId, traceId: c.ctx.caller.traceId, lane: c.ctx.lane, model: c.reserved.provider.model, endpoint: c.reserved.provider.name })

    /** A call that failed before any output: journaled, its reservation released, the next provider's turn. */
    const failedBefore = (c: ProviderCall, failure: ProviderFailure, before: string) =>
      Effect.gen(function*() {
        const name = c.reserved.provider.name
        yield* attemptFailed(c.ctx, c.attempt, c.reserved, failure, c.attemptStartedAt, false)
        yield* release(c.ctx, c.reserved, `${name} failed before ${before}: ${failure.message}`)
        return { _tag: "Next", why: `${name} ${failure.kind}: ${failure.message}`, attempted: true } as const
      })

    const callUnary = (c: ProviderCall): Effect.Effect<ProviderOutcome> =>
      Effect.gen(function*() {
        const provider = c.reserved.provider
        const answer = yield* provider.generate(c.request).pipe(
          Effect.timeoutFail({ duration: provider.timeoutMs, onTimeout: () => timeoutFailure(provider, "answer") }),
          Effect.either,
          // The caller left while the call was in flight: it may have been billed, so charge the worst case.
          Effect.onInterrupt(() => settle(c.ctx, c.reserved, null, "the caller went away during the call"))
        )
        if (answer._tag === "Left") return yield* failedBefore(c, answer.left, "answering")
        const a = answer.right
        const costUsd = yield* settle(c.ctx, c.reserved, a.usage, "answered")
        const now = yield* Clock.currentTimeMillis
        yield* complete(c.ctx, c.reserved, c.attemptStartedAt, null, a.usage, a.doneReason, costUsd)
        const createdAt = new Date(c.attemptStartedAt).toISOString()
        const body = ollamaFinal(c.ctx.request.operation as "generate" | "chat", provider.model, createdAt, a.text, a.doneReason, a.usage, now - c.attemptStartedAt)
        const result: LaneResult = { _tag: "Unary", info: infoOf(c), bytes: new TextEncoder().encode(JSON.stringify(body)) }
        return { _tag: "Answered", result } as const
      })

    const callStream = (c: ProviderCall): Effect.Effect<ProviderOutcome, never, Scope.Scope> =>
      Effect.gen(function*() {
        const provider = c.reserved.provider
        const opened = yield* openStream(provider, c.request).pipe(
          Effect.either,
          Effect.onInterrupt(() => settle(c.ctx, c.reserved, null, "the caller went away during the call"))
        )
        if (opened._tag === "Left") return yield* failedBefore(c, opened.left, "its first token")
        const firstChunkAt = yield* Clock.currentTimeMillis
        const createdAt = new Date(c.attemptStartedAt).toISOString()
        const stream = yield* relay(c.ctx, c.reserved, c.attempt, opened.right, c.ctx.request.operation as "generate" | "chat", createdAt, c.attemptStartedAt, firstChunkAt)
        const result: LaneResult = { _tag: "Stream", info: infoOf(c), stream, idleTimeoutMs: provider.timeoutMs }
        return { _tag: "Answered", result } as const
      })

    /** A `paid` lane asked to load a model: nothing to load, nothing to pay; answer like Ollama does. */
    const loadAnswer = (ctx: PaidRunContext) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const createdAt = new Date(now).toISOString()
        const body = {
          model: ctx.request.body.model,
          created_at: createdAt,
          ...(ctx.request.operation === "chat" ? { message: { role: "assistant", content: "" } } : { response: "" }),
          done: true,
          done_reason: "load"
        }
        yield* ctx.run.append({
          _tag: "RunCompleted",
          endpoint: null,
          providerTier: "paid",
          inputTokens: 0,
          outputTokens: 0,
          doneReason: "load",
          costUsd: 0,
          fallbackReason: ctx.reason,
          durationMs: now - ctx.startedAt
        })
        const info: RunInfo = { runId: ctx.runId, traceId: ctx.caller.traceId, lane: ctx.lane, model: ctx.request.body.model, endpoint: "none" }
        const bytes = new TextEncoder().encode(JSON.stringify(body) + (ctx.request.stream ? "\n" : ""))
        return ctx.request.stream
          ? { _tag: "Stream", info, stream: Stream.make(bytes) } satisfies LaneResult
          : { _tag: "Unary", info, bytes } satisfies LaneResult
      })

    /**
     * The caller's NDJSON stream. The settlement runs exactly once: with the reported usage at the end,
     * or at the worst case when the stream broke or the caller left (tokens were produced and may be billed).
     */
    const relay = (
      ctx: PaidRunContext,
      r: Reserved,
      attempt: number,
      open: { readonly head: ReadonlyArray<ProviderEvent>; readonly rest: Stream.Stream<ProviderEvent, ProviderFailure>; readonly close: Effect.Effect<void> },
      operation: "generate" | "chat",
      createdAt: string,
      attemptStartedAt: number,
      firstChunkAt: number
    ): Effect.Effect<Stream.Stream<Uint8Array>, never, Scope.Scope> => {
      const model = r.provider.model
      let usage: PaidUsage | null = null
      let finish: DoneReason | null = null
      let outcome: "open" | "done" | "failed" = "open"
      const lines = (event: ProviderEvent): Array<Uint8Array> => {
        switch (event._tag) {
          case "Text": return [encodeLine(ollamaChunk(operation, model, createdAt, event.text))]
          case "Usage":
            usage = { inputTokens: event.usage.inputTokens ?? usage?.inputTokens ?? null, outputTokens: event.usage.outputTokens ?? usage?.outputTokens ?? null }
            return []
          case "Finish":
            finish = event.doneReason
            return []
        }
      }
      // Settled and journaled before the caller sees done:true (a client may hang up right after it).
      const final = Stream.unwrap(Effect.uninterruptible(Effect.gen(function*() {
        if (finish === null) {
          return Stream.fail(new ProviderFailure({ provider: r.provider.name, kind: "malformed", status: null, message: "the stream ended without a finish reason" }))
        }
        outcome = "done"
        const costUsd = yield* settle(ctx, r, usage, "answered")
        yield* complete(ctx, r, attemptStartedAt, firstChunkAt, usage, finish, costUsd)
        const now = yield* Clock.currentTimeMillis
        return Stream.make(encodeLine(ollamaFinal(operation, model, createdAt, "", finish, usage ?? { inputTokens: null, outputTokens: null }, now - attemptStartedAt)))
      })))
      const stream = Stream.fromIterable(open.head).pipe(
        Stream.concat(open.rest),
        Stream.mapConcat(lines),
        Stream.concat(final),
        Stream.catchAll((failure: ProviderFailure) =>
          Stream.fromEffect(Effect.uninterruptible(Effect.gen(function*() {
            outcome = "failed"
            yield* attemptFailed(ctx, attempt, r, failure, attemptStartedAt, true)
            // Counts seen so far are not final (message_start's output_tokens is a placeholder): charge the worst case.
            const costUsd = yield* settle(ctx, r, null, `the stream broke after the first token: ${failure.message}`)
            const now = yield* Clock.currentTimeMillis
            yield* ctx.run.append({
              _tag: "RunFailed",
              status: 502,
              error: "StreamBroken",
              message: `provider ${r.provider.name}: ${failure.message}`,
              costUsd,
              fallbackReason: ctx.reason,
              durationMs: now - ctx.startedAt
            })
            return encodeLine({ error: `lane ${ctx.lane}: provider ${r.provider.name} failed mid-stream: ${failure.message}` })
          })))
        )
      )
      // The settlement of a stream cut short (the caller left, the request's scope closed before the
      // end) is the request scope's: it runs whether or not the stream was ever run.
      const close = (exit: Exit.Exit<unknown, unknown>) =>
        Effect.gen(function*() {
          yield* open.close
          if (outcome !== "open") return
          outcome = "failed"
          const why = Exit.isFailure(exit) && !Exit.isInterrupted(exit) ? endOf(exit as Exit.Exit<unknown, never>) : yield* FiberRef.get(abortReason)
          yield* settle(ctx, r, null, why.message)
          const now = yield* Clock.currentTimeMillis
          yield* ctx.run.append({ _tag: "RunFailed", status: why.status, error: why.error, message: why.message, durationMs: now - ctx.startedAt })
        })
      return Effect.as(Effect.flatMap(Effect.scope, (scope) => Scope.addFinalizerExit(scope, close)), stream)
    }

    return { run, budget, providers: registry.all } as const
  }),
  dependencies: [Budget.Default, PaidProviders.Default]
}) {}
