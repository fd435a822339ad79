/**
 * What Tracing.ts (the spans of a request) and OtlpExport.ts (the SDK that exports them) share, in a
 * module of its own so that Tracing.ts can load OtlpExport.ts lazily without an import cycle.
 */
import { Context, type Tracer } from "effect"

/** Put in a root span's `context` option: the trace id the span must have (the journal's). */
export class RootTraceId extends Context.Tag("awooop/RootTraceId")<RootTraceId, string>() {}

/** The tracers that export (OtlpExport.makeTracer registers each): spans are made only under one. */
export const exporting = new WeakSet<Tracer.Tracer>()
