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
import { costOf } from "../run/Cost.ts"
import { type LaneRequest, type LaneResult, once, type RunInfo } from "../run/Run.ts"

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
  /** Runs once the caller's stream is over (the lane's admission slot). */
  readonly onStreamEnd: Effect.Effect<void>
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

    const run = (ctx: PaidRunContext): Effect.Effect<LaneResult, GatewayError> =>
      Effect.gen(function*() {
        const operation = ctx.request.operation
        const first = toPaidRequest(operation, ctx.request.body, 1)
        if ("unsupported" in first) {
          yield* ctx.run.append({ _tag: "PaidFallbackSkipped", reason: first.unsupported, providers: ctx.providers, fallbackReason: ctx.reason })
          if (!ctx.direct) return yield* failRun(ctx, ctx.ollamaError)
          if (first.load === true) return yield* loadAnswer(ctx)
          return yield* failRun(ctx, new BadRequest({ message: `lane ${ctx.lane}: ${first.unsupported}` }))
        }
        yield* ctx.run.append({ _tag: "PaidFallbackRequested", reason: ctx.reason, providers: ctx.providers, direct: ctx.direct })

        const failures: Array<string> = []
        let attempt = ctx.attemptsSoFar
        for (const name of ctx.providers) {
          const provider = registry.get(name)
          if (provider === undefined || !provider.configured) {
            const why = provider === undefined ? `${name} is not a configured provider` : `${name} skipped: its API key environment variable is not set`
            yield* ctx.run.append({ _tag: "PaidProviderSkipped", provider: name, reason: why })
            failures.push(why)
            continue
          }
          const request = toPaidRequest(operation, ctx.request.body, provider.maxOutputTokens) as PaidRequest
          const price = priceOf(config.prices, provider.model, provider.kind)
          if (price === undefined) {
            // The config check makes this unreachable; without a price no worst case can be reserved.
            failures.push(`${name} has no price for ${provider.model}`)
            continue
          }
          const worst = worstCaseUsd(request, price)
          const reservationId = crypto.randomUUID()
          const decision = yield* budget.reserve({
            reservationId,
            runId: ctx.runId,
            traceId: ctx.caller.traceId,
            projectId: ctx.caller.projectId,
            lane: ctx.lane,
            provider: name,
            model: provider.model,
            amountUsd: worst.amountUsd,
            caller: ctx.caller.caller ?? null,
            callerBudget: ctx.caller.caller == null ? undefined : config.callers?.[ctx.caller.caller]?.budget
          }).pipe(Effect.either)
          if (decision._tag === "Left") {
            yield* ctx.run.append({ _tag: "BudgetDenied", provider: name, amountUsd: worst.amountUsd, failClosed: true, reason: decision.left.message })
            yield* Effect.logError(`lane ${ctx.lane}: paid call refused, the budget ledger is unreachable`, decision.left)
            return yield* failRun(ctx, new BudgetUnavailable({ lane: ctx.lane, fallbackReason: ctx.reason }))
          }
          if (decision.right._tag === "Denied") {
            const d = decision.right
            yield* ctx.run.append({
              _tag: "BudgetDenied",
              provider: name,
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
          const durable = yield* ctx.run.appendDurable({
            _tag: "BudgetReserved",
            reservationId,
            provider: name,
            model: provider.model,
            amountUsd: worst.amountUsd,
            inputTokensEstimate: worst.inputTokens,
            maxOutputTokens: request.maxOutputTokens,
            inputUsdPerMillion: price.inputPerToken * 1e6,
            outputUsdPerMillion: price.outputPerToken * 1e6,
            capUsd: decision.right.capUsd,
            committedUsd: decision.right.committedUsd,
            periodStart: decision.right.periodStart
          }).pipe(
            Effect.timeout(DURABLE_TIMEOUT),
            Effect.either,
            Effect.onInterrupt(() => release(ctx, reserved, "the caller went away before the call"))
          )
          if (durable._tag === "Left") {
            // Not confirmed durable (the journal is degraded): no call is made. The release goes on the
            // run's stream before RunFailed (spilled in order if need be), so a restart finds the
            // reservation already released instead of appending to a finished run.
            const why = "the reservation could not be journaled durably; no call was made"
            yield* ctx.run.append({ _tag: "BudgetReleased", reservationId, provider: name, reservedUsd: worst.amountUsd, reason: why })
            yield* budget.release(reservationId, why).pipe(Effect.ignore)
            return yield* failRun(ctx, new BudgetUnavailable({ lane: ctx.lane, fallbackReason: ctx.reason }))
          }

          attempt++
          const attemptStartedAt = yield* Clock.currentTimeMillis
          yield* ctx.run.append({
            _tag: "AttemptStarted",
            attempt,
            host: name,
            provider: name,
            tier: "paid",
            model: provider.model,
            timeoutMs: provider.timeoutMs,
            reservationId
          })
          const info: RunInfo = { runId: ctx.runId, traceId: ctx.caller.traceId, lane: ctx.lane, model: provider.model, endpoint: name }
          const createdAt = new Date(attemptStartedAt).toISOString()

          if (!ctx.request.stream) {
            const answer = yield* provider.generate(request).pipe(
              Effect.timeoutFail({ duration: provider.timeoutMs, onTimeout: () => timeoutFailure(provider, "answer") }),
              Effect.either,
              // The caller left while the call was in flight: it may have been billed, so charge the worst case.
              Effect.onInterrupt(() => settle(ctx, reserved, null, "the caller went away during the call"))
            )
            if (answer._tag === "Left") {
              yield* attemptFailed(ctx, attempt, reserved, answer.left, attemptStartedAt, false)
              yield* release(ctx, reserved, `${name} failed before answering: ${answer.left.message}`)
              failures.push(`${name} ${answer.left.kind}: ${answer.left.message}`)
              continue
            }
            const a = answer.right
            const costUsd = yield* settle(ctx, reserved, a.usage, "answered")
            const now = yield* Clock.currentTimeMillis
            yield* complete(ctx, reserved, attemptStartedAt, null, a.usage, a.doneReason, costUsd)
            const body = ollamaFinal(operation as "generate" | "chat", provider.model, createdAt, a.text, a.doneReason, a.usage, now - attemptStartedAt)
            return { _tag: "Unary", info, bytes: new TextEncoder().encode(JSON.stringify(body)) } satisfies LaneResult
          }

          const opened = yield* openStream(provider, request).pipe(
            Effect.either,
            Effect.onInterrupt(() => settle(ctx, reserved, null, "the caller went away during the call"))
          )
          if (opened._tag === "Left") {
            yield* attemptFailed(ctx, attempt, reserved, opened.left, attemptStartedAt, false)
            yield* release(ctx, reserved, `${name} failed before its first token: ${opened.left.message}`)
            failures.push(`${name} ${opened.left.kind}: ${opened.left.message}`)
            continue
          }
          const firstChunkAt = yield* Clock.currentTimeMillis
          return {
            _tag: "Stream",
            info,
            stream: relay(ctx, reserved, attempt, opened.right, operation as "generate" | "chat", createdAt, attemptStartedAt, firstChunkAt),
            idleTimeoutMs: provider.timeoutMs
          } satisfies LaneResult
        }
        return yield* failRun(ctx, new PaidProvidersFailed({ lane: ctx.lane, reasons: [ctx.reason, ...failures] }))
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
        const info: RunInfo = { runId: ctx.runId, traceId: ctx.caller.traceId, lane: ctx.lane, model: String(ctx.request.body.model), endpoint: "none" }
        const bytes = new TextEncoder().encode(JSON.stringify(body) + (ctx.request.stream ? "\n" : ""))
        return ctx.request.stream
          ? { _tag: "Stream", info, stream: Stream.make(bytes).pipe(Stream.ensuringWith(once(() => ctx.onStreamEnd))) } satisfies LaneResult
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
    ): Stream.Stream<Uint8Array> => {
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
      return Stream.fromIterable(open.head).pipe(
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
        ),
        Stream.ensuringWith(once((exit) =>
          Effect.gen(function*() {
            yield* open.close
            if (outcome === "open" && Exit.isInterrupted(exit)) {
              outcome = "failed"
              const why = yield* FiberRef.get(abortReason)
              yield* settle(ctx, r, null, why.message)
              const now = yield* Clock.currentTimeMillis
              yield* ctx.run.append({ _tag: "RunFailed", status: why.status, error: why.error, message: why.message, durationMs: now - ctx.startedAt })
            }
            yield* ctx.onStreamEnd
          })
        ))
      )
    }

    return { run, budget, providers: registry.all } as const
  }),
  dependencies: [Budget.Default, PaidProviders.Default]
}) {}
