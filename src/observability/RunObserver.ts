/**
 * Metrics and spans from a run's facts. The lane already journals every step of a run through its
 * StreamWriter (RunStarted, RouteDecided, AttemptStarted, AttemptFailed, AttemptSucceeded,
 * PaidFallbackRequested, Budget*, RunCompleted, RunFailed); wrapping that writer lets observability
 * follow the run without another code path in the lane, and keeps what is measured identical to what
 * is journaled (and so to the projections).
 *
 * Per event, with tracing off: a switch and a few map updates in Metrics. With tracing on (a server
 * span is current when RunStarted is appended): one client span per attempt, named
 * `{gen_ai.operation.name} {model}`, with the GenAI and awooop.* attributes; fallbacks, budget steps
 * and breaker transitions as span events.
 */
import { Context, Effect, FiberRef, Option, Tracer } from "effect"
import type { GatewayConfig, LaneConfig } from "../config/GatewayConfig.ts"
import type { AnyEvent, EventOf, HostEvent, RunEvent } from "../domain/Events.ts"
import type { StreamWriter } from "../journal/StreamWriter.ts"
import type { Miss } from "../run/Miss.ts"
import type { LaneRequest } from "../run/Run.ts"
import type { GenAiLabels, MetricsRegistry } from "./Metrics.ts"
import * as RequestLog from "./RequestLog.ts"
import * as StateLog from "./StateLog.ts"
import * as Tracing from "./Tracing.ts"

type Data = Readonly<Record<string, unknown>>

/** gen_ai.operation.name for a lane operation. */
export const operationName = (operation: string): string =>
  operation === "chat" ? "chat" : operation === "generate" ? "text_completion" : "embeddings"

interface Endpoint {
  /** gen_ai.provider.name */
  readonly provider: string
  readonly address: string
  readonly port: number
}

const endpointOf = (url: string, provider: string): Endpoint => {
  const u = new URL(url)
  return { provider, address: u.hostname, port: u.port === "" ? (u.protocol === "https:" ? 443 : 80) : Number(u.port) }
}

const publicUrls = { gemini: "https://generativelanguage.googleapis.com", anthropic: "https://api.anthropic.com" } as const
const providerNames = { gemini: "gcp.gemini", anthropic: "anthropic" } as const

/** Where each host and paid provider lives, for server.address / server.port / gen_ai.provider.name. */
export const topologyOf = (config: GatewayConfig): ReadonlyMap<string, Endpoint> => {
  const out = new Map<string, Endpoint>()
  for (const [name, host] of Object.entries(config.hosts)) out.set(name, endpointOf(host.url, "ollama"))
  for (const [name, p] of Object.entries(config.providers)) out.set(name, endpointOf(p.baseUrl ?? publicUrls[p.kind], providerNames[p.kind]))
  return out
}

/** The run being observed in this fiber, for breaker transitions (journaled on the host's stream). */
const currentRun = FiberRef.unsafeMake<RunObservation | null>(null)

const eventAt = (span: Tracer.Span, name: string, attributes: Record<string, unknown>) =>
  Effect.clockWith((clock) => Effect.sync(() => span.event(name, clock.unsafeCurrentTimeNanos(), attributes)))

class RunObservation implements RequestLog.RunFacts {
  route: ReadonlyArray<string> = []
  readonly misses: Array<Pick<Miss, "host" | "kind">> = []
  paidReason: string | null = null
  /** The attempt in progress (or the last one). */
  host = "none"
  tier = "ollama"
  g: GenAiLabels
  attemptNo = 0
  /** The endpoint whose output reached the caller (for a stream that broke after its first chunk). */
  answered: string | null = null
  server: Tracer.Span | null = null
  /** True when this observer opened the server span itself (a run outside an HTTP request). */
  ownServer = false
  attempt: Tracer.Span | null = null
  runId = ""
  error: string | null = null
  /** True when no HTTP request is current (an async run): the run writes its own log line. */
  standalone = false

  get caller() {
    return this.request.caller
  }
  get endpoint(): string | null {
    return this.answered ?? (this.attemptNo > 0 ? this.host : null)
  }
  get fallbackReason(): string | null {
    return this.fallbackText()
  }

  constructor(
    readonly metrics: MetricsRegistry,
    readonly topology: ReadonlyMap<string, Endpoint>,
    readonly lane: string,
    readonly model: string,
    readonly request: LaneRequest
  ) {
    this.g = { operation: operationName(request.operation), provider: "ollama", model, lane }
  }

  /** "gcp-a timeout, gcp-b circuit-open": the misses before the endpoint that answered. */
  fallbackText(): string | null {
    if (this.paidReason !== null) return this.paidReason
    return this.misses.length === 0 ? null : this.misses.map((m) => `${m.host} ${m.kind}`).join(", ")
  }

  on(e: RunEvent): Effect.Effect<void> {
    switch (e._tag) {
      case "RunStarted":
        return this.started()
      case "RouteDecided":
        return this.routeDecided(e)
      case "HostSkipped": {
        if (e.reason !== "only-when-unavailable") this.misses.push({ host: e.host, kind: e.reason })
        return this.server === null ? Effect.void : eventAt(this.server, "awooop.host_skipped", { "awooop.host": e.host, "awooop.reason": e.reason })
      }
      case "AttemptStarted":
        return this.attemptStarted(e)
      case "AttemptFailed":
        return this.attemptFailed(e)
      case "AttemptSucceeded": {
        this.answered = e.host
        this.metrics.attempt(this.g, e.host, null, e.durationMs / 1000)
        if (e.firstChunkMs !== null) this.metrics.firstChunk(this.g, e.host, e.firstChunkMs / 1000)
        // The span stays open until RunCompleted brings the usage and cost.
        return Effect.void
      }
      case "PaidFallbackRequested":
        return this.paidFallback(e)
      case "BudgetReserved":
      case "BudgetDenied":
      case "BudgetSettled":
      case "BudgetReleased":
      case "PaidProviderSkipped":
      case "PaidFallbackSkipped":
        return this.paidStep(e)
      case "RunCompleted":
        return this.standalone ? Effect.zipRight(this.completed(e), RequestLog.runLine(this, 200, e.durationMs)) : this.completed(e)
      case "RunFailed":
        this.error = e.error
        return this.standalone ? Effect.zipRight(this.failed(e), RequestLog.runLine(this, e.status, e.durationMs)) : this.failed(e)
      default:
        return Effect.void
    }
  }

  private started(): Effect.Effect<void> {
    return Effect.zipRight(
      // The request's log line reads this run's facts when the request ends.
      Effect.map(FiberRef.get(RequestLog.currentRequest), (request) => {
        if (request === null) this.standalone = true
        else request.run = this
      }),
      Effect.flatMap(Tracing.enabled, (on) => (on ? this.startTracing() : Effect.void))
    )
  }

  private routeDecided(e: EventOf<"RouteDecided">): Effect.Effect<void> {
    this.route = e.input.route.map((r) => r.host)
    for (const s of e.plan.skipped) this.misses.push({ host: s.host, kind: s.reason.kind })
    if (this.server === null) return Effect.void
    return eventAt(this.server, "awooop.route_decided", {
      "awooop.route": this.route.join(", "),
      "awooop.skipped": this.misses.map((m) => `${m.host} ${m.kind}`).join(", ")
    })
  }

  private attemptStarted(e: EventOf<"AttemptStarted">): Effect.Effect<void> {
    this.host = e.host
    this.tier = e.tier ?? "ollama"
    this.attemptNo = e.attempt
    const provider = this.topology.get(this.host)?.provider ?? (this.tier === "ollama" ? "ollama" : this.host)
    this.g = { operation: this.g.operation, provider, model: e.model ?? this.model, lane: this.lane }
    return this.server === null ? Effect.void : this.startAttempt()
  }

  private attemptFailed(e: EventOf<"AttemptFailed">): Effect.Effect<void> {
    const host = e.host ?? this.host
    const afterFirstChunk = e.afterFirstChunk === true
    if (afterFirstChunk) this.answered = host
    else this.misses.push({ host, kind: e.kind })
    this.metrics.attempt(this.g, host, e.kind, (e.durationMs ?? 0) / 1000)
    const span = this.attempt
    if (span === null) return Effect.void
    this.attempt = null
    span.attribute("awooop.after_first_chunk", afterFirstChunk)
    return Tracing.endSpan(span, { type: e.kind, message: e.message })
  }

  private paidFallback(e: EventOf<"PaidFallbackRequested">): Effect.Effect<void> {
    if (!e.direct) this.paidReason = e.reason
    if (this.server === null) return Effect.void
    return eventAt(this.server, e.direct ? "awooop.paid_direct" : "awooop.paid_fallback", {
      "awooop.fallback_reason": e.reason,
      "awooop.providers": e.providers.join(", ")
    })
  }

  /** A budget step or a paid provider left out: an event on the attempt's span (else the server's). */
  private paidStep(
    e: EventOf<"BudgetReserved" | "BudgetDenied" | "BudgetSettled" | "BudgetReleased" | "PaidProviderSkipped" | "PaidFallbackSkipped">
  ): Effect.Effect<void> {
    const span = this.attempt ?? this.server
    if (span === null) return Effect.void
    const d: Data = e
    const attributes: Record<string, unknown> = {}
    for (const key of ["provider", "reason", "amountUsd", "costUsd", "chargedUsd", "reservedUsd", "capUsd", "committedUsd"]) {
      const v = d[key]
      if (typeof v === "string" || typeof v === "number" || typeof v === "boolean") attributes[`awooop.${key}`] = v
    }
    return eventAt(span, `awooop.${e._tag.replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase()}`, attributes)
  }

  private startTracing(): Effect.Effect<void> {
    return Effect.gen(this, function*() {
      const current = yield* Effect.option(Effect.currentSpan)
      if (Option.isSome(current)) {
        this.server = current.value
      } else {
        // A run outside an HTTP request (an async worker): its own root span on the journal's trace.
        const caller = this.request.caller
        this.ownServer = true
        this.server = yield* Effect.makeSpan(`run ${this.lane}`, {
          kind: "internal",
          captureStackTrace: false,
          attributes: Tracing.callerAttributes(caller),
          ...(caller.parentSpanId !== null
            ? { parent: Tracer.externalSpan({ traceId: caller.traceId, spanId: caller.parentSpanId, sampled: true }) }
            : { root: true, context: Context.make(Tracing.RootTraceId, caller.traceId) })
        })
      }
      this.server.attribute("gen_ai.operation.name", this.g.operation)
      this.server.attribute("gen_ai.request.model", this.model)
      this.server.attribute("awooop.run_id", this.runId)
      yield* FiberRef.set(currentRun, this)
    })
  }

  private startAttempt(): Effect.Effect<void> {
    const where = this.topology.get(this.host)
    const fallback = this.attemptNo > 1 || this.misses.length > 0 ? this.fallbackText() : null
    const caller = this.request.caller
    const attributes: Record<string, unknown> = {
      "gen_ai.operation.name": this.g.operation,
      "gen_ai.provider.name": this.g.provider,
      "gen_ai.request.model": this.g.model,
      "gen_ai.request.stream": this.request.stream,
      "awooop.project_id": caller.projectId,
      "awooop.lane": this.lane,
      "awooop.provider_tier": this.tier,
      "awooop.endpoint": this.host,
      "awooop.attempt": this.attemptNo,
      ...(where === undefined ? {} : { "server.address": where.address, "server.port": where.port }),
      ...(fallback === null ? {} : { "awooop.fallback_reason": fallback })
    }
    const server = this.server!
    return Effect.gen(this, function*() {
      if (fallback !== null) {
        const last = this.misses[this.misses.length - 1]
        yield* eventAt(server, "awooop.fallback", {
          "awooop.to": this.host,
          "awooop.provider_tier": this.tier,
          ...(last === undefined ? {} : { "awooop.from": last.host, "awooop.reason": last.kind }),
          "awooop.fallback_reason": fallback
        })
      }
      this.attempt = yield* Effect.makeSpan(`${this.g.operation} ${this.g.model}`, {
        kind: "client",
        parent: server,
        attributes,
        captureStackTrace: false
      })
    })
  }

  private completed(d: EventOf<"RunCompleted">): Effect.Effect<void> {
    const endpoint = d.endpoint ?? "none"
    const tier = d.providerTier ?? this.tier
    const inputTokens = d.inputTokens
    const outputTokens = d.outputTokens
    const costUsd = d.costUsd ?? null
    const responseModel = d.model ?? this.g.model
    this.metrics.request(this.lane, endpoint, "success")
    if (inputTokens !== null || outputTokens !== null) this.metrics.tokens(this.g, inputTokens, outputTokens)
    if (costUsd !== null) this.metrics.cost(this.lane, tier, endpoint, costUsd)
    // As the projection counts it: a completed run with a paid fallback, or misses before its endpoint.
    const fallback = this.paidReason !== null ? "paid" : this.fallbackBefore(endpoint)
    if (fallback !== null) this.metrics.fallback(this.lane, endpoint, fallback)
    if (this.server === null) return Effect.void

    const doneReason = d.doneReason
    const usage: Record<string, unknown> = {
      "gen_ai.response.model": responseModel,
      ...(inputTokens === null ? {} : { "gen_ai.usage.input_tokens": inputTokens }),
      ...(outputTokens === null ? {} : { "gen_ai.usage.output_tokens": outputTokens }),
      ...(doneReason === null ? {} : { "gen_ai.response.finish_reasons": [doneReason] }),
      ...(costUsd === null ? {} : { "awooop.cost_usd": costUsd })
    }
    const fallbackText = this.fallbackText()
    const server = this.server
    for (const [k, v] of Object.entries(usage)) Tracing.setAttribute(server, k, v)
    server.attribute("awooop.endpoint", endpoint)
    server.attribute("awooop.provider_tier", tier)
    server.attribute("gen_ai.provider.name", this.g.provider)
    if (fallbackText !== null && endpoint !== this.route[0]) server.attribute("awooop.fallback_reason", fallbackText)
    const span = this.attempt
    this.attempt = null
    if (span !== null) for (const [k, v] of Object.entries(usage)) Tracing.setAttribute(span, k, v)
    return Effect.zipRight(span === null ? Effect.void : Tracing.endSpan(span, null), this.finish(null))
  }

  private failed(d: EventOf<"RunFailed">): Effect.Effect<void> {
    const error = d.error
    const message = d.message
    this.metrics.request(this.lane, "none", error)
    const costUsd = d.costUsd ?? null
    if (costUsd !== null) this.metrics.cost(this.lane, this.tier, this.answered ?? this.host, costUsd)
    if (this.server === null) return Effect.void
    const server = this.server
    server.attribute("error.type", error)
    if (costUsd !== null) server.attribute("awooop.cost_usd", costUsd)
    const fallbackText = this.fallbackText()
    if (fallbackText !== null) server.attribute("awooop.fallback_reason", fallbackText)
    if (this.answered !== null) server.attribute("awooop.endpoint", this.answered)
    const span = this.attempt
    this.attempt = null
    return Effect.zipRight(span === null ? Effect.void : Tracing.endSpan(span, { type: error, message }), this.finish({ type: error, message }))
  }

  private finish(failure: { readonly type: string; readonly message: string } | null): Effect.Effect<void> {
    return Effect.zipRight(
      FiberRef.update(currentRun, (r) => (r === this ? null : r)),
      this.ownServer && this.server !== null ? Tracing.endSpan(this.server, failure) : Effect.void
    )
  }

  /** The first miss's kind when a host earlier on the route than `endpoint` missed, else null. */
  private fallbackBefore(endpoint: string): string | null {
    if (this.misses.length === 0) return null
    const at = this.route.indexOf(endpoint)
    const before = at < 0 ? this.misses : this.misses.filter((m) => {
      const i = this.route.indexOf(m.host)
      return i >= 0 && i < at
    })
    return before.length === 0 ? null : this.misses[0]!.kind
  }

  /** A breaker transition on a host's stream, seen in this run's fiber: an event on the attempt that caused it. */
  breaker(host: string, e: EventOf<"BreakerOpened" | "BreakerHalfOpened" | "BreakerClosed">): Effect.Effect<void> {
    const span = this.attempt ?? this.server
    if (span === null) return Effect.void
    const attributes: Record<string, unknown> = { "awooop.host": host }
    if (e._tag === "BreakerOpened") {
      attributes["awooop.breaker.reason"] = e.reason
      attributes["awooop.breaker.consecutiveTimeouts"] = e.consecutiveTimeouts
      attributes["awooop.breaker.until"] = e.until
    }
    return eventAt(span, `awooop.breaker.${e._tag === "BreakerOpened" ? "opened" : e._tag === "BreakerClosed" ? "closed" : "half_opened"}`, attributes)
  }
}

const wrap = <E extends AnyEvent>(inner: StreamWriter<E>, on: (event: E) => Effect.Effect<void>): StreamWriter<E> => ({
  streamId: inner.streamId,
  append: (event) => Effect.flatMap(inner.append(event), () => on(event)),
  appendDurable: (event) => Effect.tap(inner.appendDurable(event), () => on(event)),
  position: inner.position,
  progress: inner.progress
})

/** What the lanes and hosts are given (see Lane.ts / Host.ts deps). */
export const make = (metrics: MetricsRegistry, config: GatewayConfig) => {
  const topology = topologyOf(config)
  return {
    /** Wraps a run's writer: its facts feed the metrics and, when tracing is on, the spans. */
    run: (lane: string, laneConfig: LaneConfig) => (writer: StreamWriter, request: LaneRequest): StreamWriter => {
      const observation = new RunObservation(metrics, topology, lane, laneConfig.model, request)
      observation.runId = writer.streamId.startsWith("run-") ? writer.streamId.slice(4) : writer.streamId
      return wrap(writer, (event) => observation.on(event))
    },
    /** Wraps a host's writer: breaker transitions are counted and become events on the current run's span. */
    host: (host: string) => (writer: StreamWriter<HostEvent>): StreamWriter<HostEvent> =>
      wrap(writer, (event) => {
        const logged = StateLog.hostEvent(host, event)
        if (event._tag !== "BreakerOpened" && event._tag !== "BreakerHalfOpened" && event._tag !== "BreakerClosed") return logged
        metrics.breakerTransition(host, event._tag)
        return Effect.zipRight(logged, Effect.flatMap(FiberRef.get(currentRun), (run) => (run === null ? Effect.void : run.breaker(host, event))))
      })
  }
}

export type Observers = ReturnType<typeof make>
