/**
 * Tracing, end to end: the real gateway built with an Effect tracer over an OpenTelemetry SDK tracer
 * provider (the same `OtlpExport.makeTracer` and `JournalTraceIds` the OTLP layer uses) that exports to
 * an in-memory exporter. A fallback request (gcp-a fails, gcp-b answers) and a paid fallback (every
 * host fails, Gemini answers) must produce the GenAI and awooop.* attribute set, on the journal's
 * trace, under the caller's traceparent.
 */
import { InMemorySpanExporter, BasicTracerProvider, type ReadableSpan, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { SpanKind, SpanStatusCode } from "@opentelemetry/api"
import { Effect, Exit, Scope, Tracer } from "effect"
import { randomUUID } from "node:crypto"
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest"
import * as OtlpExport from "../src/observability/OtlpExport.ts"
import { type FakeGemini, startFakeGemini } from "./support/FakeGemini.ts"
import { make, newTraceId, type TestGateway, type TestGatewayOptions } from "./support/TestGateway.ts"

const GEMINI_KEY = `gem-test-key-${randomUUID()}`
process.env.AWOOOP_TRACING_TEST_GEMINI_KEY = GEMINI_KEY

const exporter = new InMemorySpanExporter()
const provider = new BasicTracerProvider({ idGenerator: new OtlpExport.JournalTraceIds(), spanProcessors: [new SimpleSpanProcessor(exporter)] })
const tracer = OtlpExport.makeTracer(provider.getTracer("awooop-test"))

/** A test gateway whose request fibers run with `withTracer` (as Tracing.layerFromEnv sets it). */
const startTraced = async (options: TestGatewayOptions, withTracer: Tracer.Tracer = tracer) => {
  const scope = Effect.runSync(Scope.make())
  const exit = await Effect.runPromiseExit(Scope.extend(make(options).pipe(Effect.withTracer(withTracer)), scope))
  if (Exit.isFailure(exit)) throw new Error(`gateway did not start: ${String(exit.cause)}`)
  return { gw: exit.value, close: () => Effect.runPromise(Scope.close(scope, Exit.void)) }
}

let gemini: FakeGemini
let gw: TestGateway
let close: () => Promise<void>

beforeAll(async () => {
  gemini = await startFakeGemini({ apiKey: GEMINI_KEY })
  const started = await startTraced({
    lanes: {
      "alert-fast": {
        model: "gemma3:4b",
        reserved: { "gcp-a": 2, "gcp-b": 2 },
        route: [{ host: "gcp-a", timeout: "300ms" }, { host: "gcp-b", timeout: "300ms" }, { host: "111", timeout: "300ms" }],
        paidFallback: ["gemini"]
      }
    },
    extra: {
      providers: {
        gemini: { kind: "gemini", model: "gemini-2.5-flash", apiKeyEnv: "AWOOOP_TRACING_TEST_GEMINI_KEY", baseUrl: gemini.url, timeout: "2s", maxOutputTokens: 256 }
      },
      prices: { "gemini-2.5-flash": { input: 0.30, output: 2.50 } },
      budget: { hardKillUsd: 5, period: "day" }
    }
  })
  gw = started.gw
  close = started.close
}, 30_000)

afterAll(async () => {
  await close?.()
  await gemini?.stop()
  await provider.shutdown()
})

beforeEach(() => {
  exporter.reset()
  for (const fake of Object.values(gw.fakes)) fake.setMode("ok")
})

/** The trace's spans once the server span has ended. */
const spansOf = async (traceId: string): Promise<Array<ReadableSpan>> => {
  const deadline = Date.now() + 3_000
  for (;;) {
    const spans = exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === traceId)
    if (spans.some((s) => s.kind === SpanKind.SERVER)) return spans
    if (Date.now() > deadline) throw new Error(`no server span for trace ${traceId}; exported: ${exporter.getFinishedSpans().map((s) => s.name).join(", ")}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId

const eventNames = (span: ReadableSpan) => span.events.map((e) => e.name)

describe("spans", () => {
  it("a fallback request: server span under the caller's traceparent, one client span per attempt, the fallback reason", async () => {
    gw.fakes["gcp-a"]!.setMode("error500")
    const traceId = newTraceId()
    const callerSpan = "00f067aa0ba902b7"
    const res = await gw.post("/api/chat", { model: "gemma3:4b", messages: [{ role: "user", content: "why?" }], stream: false }, {
      traceparent: `00-${traceId}-${callerSpan}-01`,
      "x-awooop-lane": "alert-fast",
      "x-awooop-project-id": "awoooi",
      "x-awooop-intent": "DIAGNOSE"
    })
    expect(res.status).toBe(200)
    expect(res.headers.get("x-awooop-trace-id")).toBe(traceId)
    const spans = await spansOf(traceId)

    const server = spans.find((s) => s.kind === SpanKind.SERVER)!
    expect(server.name).toBe("POST /api/chat")
    expect(parentOf(server)).toBe(callerSpan)
    expect(server.attributes).toMatchObject({
      "http.request.method": "POST",
      "http.route": "/api/chat",
      "http.response.status_code": 200,
      "awooop.project_id": "awoooi",
      "awooop.lane": "alert-fast",
      "awooop.intent": "DIAGNOSE",
      "awooop.provider_tier": "ollama",
      "awooop.endpoint": "gcp-b",
      "awooop.fallback_reason": "gcp-a server-error",
      "awooop.cost_usd": 0,
      "gen_ai.operation.name": "chat",
      "gen_ai.provider.name": "ollama",
      "gen_ai.request.model": "gemma3:4b",
      "gen_ai.response.model": "gemma3:4b"
    })
    expect(server.attributes["gen_ai.usage.input_tokens"]).toBeGreaterThan(0)
    expect(server.attributes["gen_ai.usage.output_tokens"]).toBeGreaterThan(0)
    expect(server.status.code).not.toBe(SpanStatusCode.ERROR)
    expect(eventNames(server)).toEqual(expect.arrayContaining(["awooop.route_decided", "awooop.fallback"]))
    const fallback = server.events.find((e) => e.name === "awooop.fallback")!
    expect(fallback.attributes).toMatchObject({ "awooop.from": "gcp-a", "awooop.to": "gcp-b", "awooop.reason": "server-error" })

    const attempts = spans.filter((s) => s.kind === SpanKind.CLIENT).sort((a, b) => Number(a.attributes["awooop.attempt"]) - Number(b.attributes["awooop.attempt"]))
    expect(attempts.map((s) => s.name)).toEqual(["chat gemma3:4b", "chat gemma3:4b"])
    for (const a of attempts) expect(parentOf(a)).toBe(server.spanContext().spanId)
    const [first, second] = attempts as [ReadableSpan, ReadableSpan]
    expect(first.attributes).toMatchObject({
      "gen_ai.operation.name": "chat",
      "gen_ai.provider.name": "ollama",
      "gen_ai.request.model": "gemma3:4b",
      "gen_ai.request.stream": false,
      "server.address": "127.0.0.1",
      "server.port": gw.fakes["gcp-a"]!.port,
      "awooop.endpoint": "gcp-a",
      "awooop.lane": "alert-fast",
      "awooop.project_id": "awoooi",
      "awooop.provider_tier": "ollama",
      "error.type": "server-error"
    })
    expect(first.status.code).toBe(SpanStatusCode.ERROR)
    expect(second.attributes).toMatchObject({
      "server.port": gw.fakes["gcp-b"]!.port,
      "awooop.endpoint": "gcp-b",
      "awooop.fallback_reason": "gcp-a server-error",
      "gen_ai.response.model": "gemma3:4b",
      "gen_ai.response.finish_reasons": ["stop"],
      "awooop.cost_usd": 0
    })
    expect(second.attributes["gen_ai.usage.output_tokens"]).toBeGreaterThan(0)
    expect(second.attributes["error.type"]).toBeUndefined()
    expect(second.status.code).not.toBe(SpanStatusCode.ERROR)

    // The journal is on the same trace.
    const events = await gw.runEvents(traceId)
    expect(events.length).toBeGreaterThan(0)
    expect(events.every((e) => e.traceId === traceId)).toBe(true)
  })

  it("a paid fallback: the provider's client span with its price, and the budget steps as events", async () => {
    for (const name of ["gcp-a", "gcp-b", "111"]) gw.fakes[name]!.setMode("error500")
    const traceId = newTraceId()
    const res = await gw.post("/api/generate", { model: "gemma3:4b", prompt: "diagnose", stream: true }, { "x-awooop-lane": "alert-fast", "x-awooop-trace-id": traceId })
    expect(res.status).toBe(200)
    expect(await res.text()).toContain("\"done\":true")
    const spans = await spansOf(traceId)
    const server = spans.find((s) => s.kind === SpanKind.SERVER)!
    // (The budget ledger's SQL shows up as client spans too; the attempts are the GenAI ones.)
    const attempts = spans.filter((s) => s.kind === SpanKind.CLIENT && s.attributes["gen_ai.operation.name"] !== undefined)
    expect(attempts.map((s) => s.name).sort()).toEqual([
      "text_completion gemini-2.5-flash",
      "text_completion gemma3:4b",
      "text_completion gemma3:4b",
      "text_completion gemma3:4b"
    ])
    const paid = attempts.find((s) => s.attributes["awooop.provider_tier"] === "paid")!
    expect(paid.attributes).toMatchObject({
      "gen_ai.provider.name": "gcp.gemini",
      "gen_ai.request.model": "gemini-2.5-flash",
      "gen_ai.request.stream": true,
      "server.address": "127.0.0.1",
      "server.port": Number(new URL(gemini.url).port),
      "awooop.endpoint": "gemini",
      "awooop.fallback_reason": expect.stringContaining("all Ollama endpoints failed")
    })
    const cost = paid.attributes["awooop.cost_usd"] as number
    const input = paid.attributes["gen_ai.usage.input_tokens"] as number
    const output = paid.attributes["gen_ai.usage.output_tokens"] as number
    expect(input).toBeGreaterThan(0)
    expect(output).toBeGreaterThan(0)
    expect(cost).toBeCloseTo(input * 0.30 / 1e6 + output * 2.50 / 1e6, 12)
    expect(eventNames(paid)).toEqual(expect.arrayContaining(["awooop.budget_settled"]))
    expect(server.attributes).toMatchObject({
      "awooop.provider_tier": "paid",
      "awooop.endpoint": "gemini",
      "awooop.cost_usd": cost,
      "awooop.fallback_reason": paid.attributes["awooop.fallback_reason"],
      "gen_ai.request.model": "gemma3:4b",
      "gen_ai.response.model": "gemini-2.5-flash"
    })
    expect(eventNames(server)).toEqual(expect.arrayContaining(["awooop.paid_fallback", "awooop.budget_reserved"]))
    expect(parentOf(server)).toBeUndefined()
  })

  it("breaker transitions are events on the attempt that caused them", async () => {
    gw.fakes["gcp-a"]!.setMode("hang")
    const traces = [newTraceId(), newTraceId()]
    for (const traceId of traces) {
      const res = await gw.post("/api/generate", { model: "gemma3:4b", prompt: "x", stream: false }, { "x-awooop-lane": "alert-fast", "x-awooop-trace-id": traceId })
      expect(res.status).toBe(200)
    }
    gw.fakes["gcp-a"]!.setMode("ok")
    const second = await spansOf(traces[1]!)
    const timedOut = second.find((s) => s.kind === SpanKind.CLIENT && s.attributes["awooop.endpoint"] === "gcp-a")!
    expect(timedOut.attributes["error.type"]).toBe("timeout")
    const opened = timedOut.events.find((e) => e.name === "awooop.breaker.opened")
    expect(opened?.attributes).toMatchObject({ "awooop.host": "gcp-a", "awooop.breaker.consecutiveTimeouts": 2 })
    const first = await spansOf(traces[0]!)
    expect(first.flatMap(eventNames)).not.toContain("awooop.breaker.opened")
    // Let the breaker close again for the other tests (cool-down 1 s, then a probe).
    await new Promise((r) => setTimeout(r, 1_100))
    await gw.post("/api/generate", { model: "gemma3:4b", prompt: "x", stream: false }, { "x-awooop-lane": "alert-fast" })
  })

  it("a request without traceparent: a root span carrying the journal's trace id (given or minted)", async () => {
    const given = newTraceId()
    const res = await gw.post("/api/generate", { model: "gemma3:4b", prompt: "x", stream: false }, { "x-awooop-lane": "alert-fast", "x-awooop-trace-id": given })
    expect(res.status).toBe(200)
    const spans = await spansOf(given)
    const server = spans.find((s) => s.kind === SpanKind.SERVER)!
    expect(parentOf(server)).toBeUndefined()

    const minted = await gw.post("/api/generate", { model: "gemma3:4b", prompt: "x", stream: false }, { "x-awooop-lane": "alert-fast" })
    const mintedId = minted.headers.get("x-awooop-trace-id")!
    expect(mintedId).toMatch(/^[0-9a-f]{32}$/)
    const mintedSpans = await spansOf(mintedId)
    expect(mintedSpans.filter((s) => s.kind === SpanKind.CLIENT)).toHaveLength(1)
    expect((await gw.runEvents(mintedId)).length).toBeGreaterThan(0)
  })

  it("a refusal is traced too: the server span names the error", async () => {
    const traceId = newTraceId()
    const res = await gw.post("/v1/chat/completions", { model: "gemma3:4b", messages: [{ role: "user", content: "x" }] }, { "x-awooop-lane": "deep-rca", "x-awooop-trace-id": traceId })
    expect(res.status).toBe(409)
    const spans = await spansOf(traceId)
    const server = spans.find((s) => s.kind === SpanKind.SERVER)!
    expect(server.name).toBe("POST /v1/chat/completions")
    expect(server.attributes).toMatchObject({ "http.response.status_code": 409, "error.type": "AsyncOnlyLane", "awooop.lane": "deep-rca" })
  })
})

describe("tracing off", () => {
  it("creates no span on the request path: not for the request, not for its attempts", async () => {
    // Effect's own tracer, counting: what the gateway runs with when OTEL_EXPORTER_OTLP_ENDPOINT is unset.
    const names: Array<string> = []
    const native = Effect.runSync(Effect.tracer)
    const counting = Tracer.make({
      span: (name, ...rest) => {
        names.push(name)
        return native.span(name, ...rest)
      },
      context: native.context
    })
    const started = await startTraced({ pollFirst: true }, counting)
    try {
      names.length = 0
      for (let i = 0; i < 5; i++) {
        const res = await started.gw.post("/api/generate", { model: "gemma3:4b", prompt: "x", stream: i % 2 === 0 }, { "x-awooop-lane": "alert-fast" })
        expect(res.status).toBe(200)
        await res.text()
      }
      started.gw.fakes["gcp-a"]!.setMode("error500")
      const fallback = await started.gw.post("/v1/chat/completions", { model: "gemma3:4b", messages: [{ role: "user", content: "x" }] }, { "x-awooop-lane": "alert-fast" })
      expect(fallback.status).toBe(200)
      // The journal writer's batched INSERTs run in their own fiber (sql.* spans); nothing else may appear.
      expect(names.filter((n) => !n.startsWith("sql."))).toEqual([])
    } finally {
      await started.close()
    }
  })
})
