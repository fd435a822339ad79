/**
 * The OpenTelemetry SDK side of tracing (Tracing.ts): an Effect tracer over an SDK tracer whose root
 * spans carry the journal's trace id, and the OTLP/HTTP exporting layer. Tracing.layerFromEnv loads
 * this module only when an OTLP endpoint is set, so a gateway without tracing never evaluates the SDK.
 *
 * The trace id is the journal's. A request without a valid `traceparent` starts a root span that must
 * still carry that id, which the SDK cannot be told directly: it asks its IdGenerator. So the tracer
 * below passes the wanted id to `JournalTraceIds` for the one synchronous `startSpan` call that
 * creates the root span.
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import * as Resource from "@effect/opentelemetry/Resource"
import * as OtelTracer from "@effect/opentelemetry/Tracer"
import type * as OtelApi from "@opentelemetry/api"
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http"
import { BatchSpanProcessor, type IdGenerator, RandomIdGenerator } from "@opentelemetry/sdk-trace-base"
import { Context, Effect, Layer, Option, Tracer } from "effect"
import { exporting, RootTraceId } from "./TracerRegistry.ts"

// Set only for the duration of one synchronous startSpan (see makeTracer).
let forcedTraceId: string | undefined

/** The SDK's random ids, except a root span's trace id when the gateway already has one. */
export class JournalTraceIds implements IdGenerator {
  private readonly random = new RandomIdGenerator()
  generateTraceId = (): string => forcedTraceId ?? this.random.generateTraceId()
  generateSpanId = (): string => this.random.generateSpanId()
}

/**
 * An Effect tracer over an OpenTelemetry tracer (whose provider must use JournalTraceIds). The SDK
 * creates the span synchronously inside `span`, so the forced id cannot leak to another span.
 */
export const makeTracer = (otel: OtelApi.Tracer): Tracer.Tracer => {
  const inner = Effect.runSync(Effect.provideService(OtelTracer.make, OtelTracer.OtelTracer, otel))
  const tracer = Tracer.make({
    span(name, parent, context, links, startTime, kind, options) {
      forcedTraceId = Option.isNone(parent) ? Option.getOrUndefined(Context.getOption(context, RootTraceId)) : undefined
      try {
        return inner.span(name, parent, context, links, startTime, kind, options)
      } finally {
        forcedTraceId = undefined
      }
    },
    context: inner.context
  })
  exporting.add(tracer)
  return tracer
}

/** The Effect tracer over the SDK's tracer provider: OTLP/HTTP (JSON) to `url`, batched, flushed on shutdown. */
export const layerOtlp = (url: string, serviceName: string) =>
  Layer.unwrapEffect(Effect.map(OtelTracer.OtelTracer, (otel) => Layer.setTracer(makeTracer(otel)))).pipe(
    Layer.provide(OtelTracer.layerTracer),
    Layer.provide(NodeSdk.layerTracerProvider(new BatchSpanProcessor(new OTLPTraceExporter({ url })), { idGenerator: new JournalTraceIds(), shutdownTimeout: "5 seconds" })),
    Layer.provide(Resource.layerFromEnv(Resource.configToAttributes({ serviceName })))
  )
