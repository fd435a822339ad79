/**
 * Tracing with @effect/opentelemetry: a server span per request, a client span per upstream attempt
 * (RunObserver.ts builds those from the run's journal facts), exported over OTLP/HTTP.
 *
 * On only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set. When
 * it is not, no tracer is installed, the OpenTelemetry SDK is never loaded (OtlpExport.ts), and the
 * request path creates no span object at all: every span here is made only after `enabled` saw one
 * of our tracers (a fiber-context lookup).
 *
 * The trace id is the journal's. A request with a valid `traceparent` gets the caller's span as its
 * parent; one without starts a root span that still carries that id (OtlpExport.ts's JournalTraceIds).
 */
import type * as OtelApi from "@opentelemetry/api"
import { Config, Context, Effect, Exit, Layer, Option, Tracer } from "effect"
import type { CallerContext } from "../domain/CallerContext.ts"
import { exporting, RootTraceId } from "./TracerRegistry.ts"

export { RootTraceId } from "./TracerRegistry.ts"

/** True when the current tracer exports spans (one made by makeTracer). */
export const enabled: Effect.Effect<boolean> = Effect.tracerWith((tracer) => Effect.succeed(exporting.has(tracer)))

/** The OTLP/HTTP endpoint for traces from the environment, if tracing is wanted. */
export const OtlpEndpoint = Config.all({
  traces: Config.option(Config.string("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")),
  base: Config.option(Config.string("OTEL_EXPORTER_OTLP_ENDPOINT"))
}).pipe(Config.map(({ base, traces }) =>
  Option.orElse(traces, () => Option.map(base, (url) => `${url.replace(/\/+$/, "")}/v1/traces`))
))

/**
 * Tracing from the environment: OTLP/HTTP (JSON) to `OTEL_EXPORTER_OTLP_ENDPOINT`/v1/traces, batched,
 * flushed on shutdown; service.name from `OTEL_SERVICE_NAME` (default awooop-inference-gateway).
 * Nothing at all when neither endpoint variable is set, not even the OpenTelemetry SDK's modules:
 * OtlpExport.ts is loaded only then (start-up CPU a gateway without tracing spares).
 */
export const layerFromEnv = Layer.unwrapEffect(Effect.gen(function*() {
  const endpoint = yield* OtlpEndpoint
  if (Option.isNone(endpoint)) return Layer.empty
  const serviceName = yield* Config.string("OTEL_SERVICE_NAME").pipe(Config.withDefault("awooop-inference-gateway"))
  yield* Effect.logInfo(`tracing: exporting spans over OTLP/HTTP to ${endpoint.value}`)
  const { layerOtlp } = yield* Effect.promise(() => import("./OtlpExport.ts"))
  return layerOtlp(endpoint.value, serviceName)
}))

// ---------------------------------------------------------------------------------------------
// Server spans
// ---------------------------------------------------------------------------------------------

/**
 * Sets an attribute; an array of strings stays an array (the conventions' `gen_ai.response.finish_reasons`
 * is a string[]), which @effect/opentelemetry's `attribute` would stringify, so it goes to the SDK span.
 */
export const setAttribute = (span: Tracer.Span, key: string, value: unknown): void => {
  const otel = (span as { readonly span?: Partial<OtelApi.Span> }).span
  if (Array.isArray(value) && value.every((v) => typeof v === "string") && typeof otel?.setAttribute === "function") {
    otel.setAttribute(key, value)
  } else span.attribute(key, value)
}

/** The runbook's request attributes known from the headers. */
export const callerAttributes = (caller: CallerContext): Record<string, unknown> => ({
  "awooop.project_id": caller.projectId,
  "awooop.lane": caller.lane,
  ...(caller.intent === null ? {} : { "awooop.intent": caller.intent })
})

/**
 * The request's server span, or null when tracing is off. Its trace id is the caller's (journal's);
 * its parent is the caller's span when a valid traceparent came with the request.
 */
export const startServerSpan = (
  method: string,
  route: string,
  caller: CallerContext | null
): Effect.Effect<Tracer.Span | null> =>
  Effect.tracerWith((tracer) => {
    if (!exporting.has(tracer)) return Effect.succeed(null)
    const attributes: Record<string, unknown> = {
      "http.request.method": method,
      "http.route": route,
      "url.path": route,
      ...(caller === null ? {} : callerAttributes(caller))
    }
    const name = `${method} ${route}`
    if (caller !== null && caller.parentSpanId !== null) {
      const parent = Tracer.externalSpan({ traceId: caller.traceId, spanId: caller.parentSpanId, sampled: true })
      return Effect.makeSpan(name, { kind: "server", parent, attributes, captureStackTrace: false })
    }
    return Effect.makeSpan(name, {
      kind: "server",
      root: true,
      attributes,
      captureStackTrace: false,
      ...(caller === null ? {} : { context: Context.make(RootTraceId, caller.traceId) })
    })
  })

/** A span's end now; a failed outcome carries its error type and message into the span status. */
export const endSpan = (span: Tracer.Span, failure: { readonly type: string; readonly message: string } | null) =>
  Effect.clockWith((clock) =>
    Effect.sync(() => {
      if (span.status._tag === "Ended") return
      if (failure !== null) span.attribute("error.type", failure.type)
      span.end(clock.unsafeCurrentTimeNanos(), failure === null ? Exit.void : Exit.fail(new SpanFailure(failure)))
    })
  )

/** What a failed span's status says (OtelSpan records it as the exception). */
export class SpanFailure extends Error {
  constructor(failure: { readonly type: string; readonly message: string }) {
    super(failure.message)
    this.name = failure.type
  }
}

/** Ends the request's server span with the HTTP status (≥ 500 marks it failed). */
export const endServerSpan = (span: Tracer.Span | null, status: number, error: { readonly _tag: string; readonly message: string } | null) => {
  if (span === null) return Effect.void
  span.attribute("http.response.status_code", status)
  // HTTP server conventions: a 4xx is the caller's fault, not the server span's; error.type still names it.
  if (error !== null) span.attribute("error.type", error._tag)
  return endSpan(span, error === null || status < 500 ? null : { type: error._tag, message: error.message })
}
