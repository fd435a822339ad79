/**
 * What observability adds to one request, in process and without I/O: the five journal facts of a
 * successful run (RunStarted, RouteDecided, AttemptStarted, AttemptSucceeded, RunCompleted) appended
 * through a run writer that discards them, plain and wrapped by RunObserver (metrics; metrics and
 * spans with a tracer that exports to memory). The gateway-level numbers are in bench/gateway.ts;
 * this isolates the part that cannot be seen in their noise.
 *
 *   npx tsx bench/observability.ts
 */
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { Effect } from "effect"
import { parseConfig } from "../src/config/GatewayConfig.ts"
import type { StreamWriter } from "../src/journal/StreamWriter.ts"
import * as Metrics from "../src/observability/Metrics.ts"
import * as RunObserver from "../src/observability/RunObserver.ts"
import * as OtlpExport from "../src/observability/OtlpExport.ts"
import * as Tracing from "../src/observability/Tracing.ts"
import type { PlanInput } from "../src/routing/Plan.ts"
import type { LaneRequest } from "../src/run/Run.ts"

const config = await Effect.runPromise(parseConfig(JSON.stringify({
  hosts: { "gcp-a": { url: "http://127.0.0.1:11435", slots: 4 }, "gcp-b": { url: "http://127.0.0.1:11436", slots: 4 } },
  lanes: { "alert-fast": { model: "gemma3:4b", route: [{ host: "gcp-a", timeout: "45s" }, { host: "gcp-b", timeout: "45s" }] } }
}), "bench.json", {}))
const lane = config.lanes["alert-fast"]!

const discard: StreamWriter = { streamId: "run-bench", append: () => Effect.void, appendDurable: () => Effect.void, position: () => 0, progress: () => ({ ended: false, openAttempts: [] }) }

const request: LaneRequest = {
  operation: "generate",
  body: { model: "gemma3:4b", prompt: "why is the alert firing?" },
  stream: false,
  caller: { projectId: "awoooi", traceId: "0af7651916cd43dd8448eb211c80319c", parentSpanId: null, lane: "alert-fast", intent: null, legacy: false, traceMinted: false },
  prompt: null
}

const planInput: PlanInput = {
  lane: "alert-fast",
  model: "gemma3:4b",
  route: [{ host: "gcp-a", timeoutMs: 45_000, when: "always" }, { host: "gcp-b", timeoutMs: 45_000, when: "always" }],
  hosts: {},
  policy: { heavyModelMinParamsB: 14 },
  now: 0
}

const facts = (run: StreamWriter) =>
  Effect.gen(function*() {
    yield* run.append({
      _tag: "RunStarted", runId: "r", operation: "generate", stream: false, requestedModel: "gemma3:4b", assignedModel: "gemma3:4b",
      intent: null, caller: null, legacy: false, traceMinted: false, parentSpanId: null
    })
    yield* run.append({ _tag: "RouteDecided", input: planInput, plan: { attempts: [{ host: "gcp-a", timeoutMs: 45_000, conditional: false }, { host: "gcp-b", timeoutMs: 45_000, conditional: false }], skipped: [] } })
    yield* run.append({ _tag: "AttemptStarted", attempt: 1, host: "gcp-a", timeoutMs: 45_000, slotPool: "reserved" })
    yield* run.append({ _tag: "AttemptSucceeded", host: "gcp-a", durationMs: 12, firstChunkMs: null })
    yield* run.append({ _tag: "RunCompleted", endpoint: "gcp-a", providerTier: "ollama", inputTokens: 12, outputTokens: 40, doneReason: "stop", costUsd: 0, durationMs: 13 })
  })

// Everything here is synchronous (the writer discards, the exporter keeps spans in memory), so CPU
// time per request is the measure: unlike wall time it does not count waiting for a busy machine.
const time = (name: string, n: number, one: () => Effect.Effect<void>) => {
  for (let i = 0; i < 5_000; i++) Effect.runSync(one()) // warm-up
  const c0 = process.cpuUsage()
  for (let i = 0; i < n; i++) Effect.runSync(one())
  const c = process.cpuUsage(c0)
  return { name, us: (c.user + c.system) / n }
}

const n = 100_000
const observers = RunObserver.make(Metrics.make(), config)
const exporter = new InMemorySpanExporter()
const provider = new BasicTracerProvider({ idGenerator: new OtlpExport.JournalTraceIds(), spanProcessors: [new SimpleSpanProcessor(exporter)] })
const tracer = OtlpExport.makeTracer(provider.getTracer("bench"))

const results = [
  time("facts, plain writer", n, () => facts(discard)),
  time("facts, observed (tracing off: metrics only)", n, () => facts(observers.run("alert-fast", lane)(discard, request))),
  time("facts, observed, tracing on (server + attempt span, in-memory export)", n / 5, () =>
    Effect.gen(function*() {
      const span = yield* Tracing.startServerSpan("POST", "/api/generate", request.caller)
      yield* Effect.withParentSpan(facts(observers.run("alert-fast", lane)(discard, request)), span!)
      yield* Tracing.endServerSpan(span, 200, null)
      exporter.reset()
    }).pipe(Effect.withTracer(tracer)))
]
const base = results[0]!.us
console.log("| per request | CPU µs | added CPU µs |\n|---|---|---|")
for (const r of results) console.log(`| ${r.name} | ${r.us.toFixed(2)} | ${(r.us - base).toFixed(2)} |`)
