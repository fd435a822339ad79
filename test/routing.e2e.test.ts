/**
 * The runbook's "Minimal Routing Algorithm", end to end: real gateway HTTP server, real journal on
 * PostgreSQL, fake Ollama hosts on loopback whose failure modes we switch per test. The scenarios
 * that only wait out step timeouts and breaker cooldowns (gcp-a hanging, the breaker opening and
 * probing, code-review's 111 timing out) run under TestClock in routing.scenarios.test.ts.
 */
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { StoredEvent } from "../src/journal/Journal.ts"
import { Gateway } from "../src/routing/Gateway.ts"
import type { FakeMode } from "./support/FakeOllama.ts"
import {
  collect,
  newTraceId,
  startTestDatabase,
  startTestGateway,
  type TestDatabaseHandle,
  type TestGateway,
  type TestGatewayOptions,
  thrown,
  typesOf
} from "./support/TestGateway.ts"

let db: TestDatabaseHandle
beforeAll(async () => {
  db = await startTestDatabase()
})
afterAll(() => db?.close())

const gateways: Array<TestGateway> = []
const gateway = async (options: TestGatewayOptions = {}) => {
  const gw = await startTestGateway({ database: db, ...options })
  gateways.push(gw)
  return gw
}
afterAll(() => Promise.all(gateways.map((g) => g.close())))

interface Answer {
  readonly status: number
  readonly headers: Headers
  readonly body: Record<string, unknown>
  readonly text: string
  readonly traceId: string
  readonly ms: number
}

/** A non-streaming generate through the gateway on `lane`. */
const generate = async (gw: TestGateway, lane: string | null, init: { body?: Record<string, unknown>; headers?: Record<string, string> } = {}): Promise<Answer> => {
  const traceId = newTraceId()
  const started = performance.now()
  const res = await gw.post(
    "/api/generate",
    { model: "gemma3:4b", prompt: "why is the alert firing?", stream: false, ...init.body },
    { ...(lane === null ? {} : { "x-awooop-lane": lane }), "x-awooop-trace-id": traceId, ...init.headers }
  )
  const text = await res.text()
  const ms = performance.now() - started
  let body: Record<string, unknown> = {}
  try {
    body = JSON.parse(text) as Record<string, unknown>
  } catch { /* asserted by the caller */ }
  return { status: res.status, headers: res.headers, body, text, traceId, ms }
}

const inferenceCount = (gw: TestGateway, host: string) =>
  gw.fakes[host]!.requests.filter((r) => r.method === "POST" && r.path.startsWith("/api/") && r.path !== "/api/show").length

const ofType = (events: ReadonlyArray<StoredEvent>, type: string) => events.filter((e) => e.type === type)
const dataOf = (e: StoredEvent | undefined) => (e?.data ?? {}) as Record<string, unknown>

/** Every error answer of the gateway is Ollama's `{"error": "..."}` and nothing else. */
const expectOllamaError = (answer: Answer, status: number, ...mentions: Array<string>) => {
  expect(answer.status, answer.text).toBe(status)
  expect(answer.headers.get("content-type")).toMatch(/^application\/json/)
  expect(Object.keys(answer.body)).toEqual(["error"])
  expect(typeof answer.body.error).toBe("string")
  for (const m of mentions) expect(answer.body.error).toContain(m)
}

describe("alert-fast walks gcp-a → gcp-b → 111", () => {
  let gw: TestGateway
  beforeAll(async () => {
    // A high breaker threshold: this block is about the walk, not the breaker.
    gw = await gateway({ breaker: { consecutiveTimeouts: 100 } })
  })
  const reset = () => {
    for (const f of Object.values(gw.fakes)) {
      f.setMode("ok", { delayMs: 50, chunks: 3 })
      f.reset()
    }
  }

  it("answers from gcp-a when it is healthy; the header and the text say so", async () => {
    reset()
    const a = await generate(gw, "alert-fast")
    expect(a.status).toBe(200)
    expect(a.headers.get("x-awooop-endpoint")).toBe("gcp-a")
    expect(a.headers.get("x-awooop-lane")).toBe("alert-fast")
    expect(a.headers.get("x-awooop-model")).toBe("gemma3:4b")
    expect(a.headers.get("x-awooop-trace-id")).toBe(a.traceId)
    expect(a.body.response).toBe("[gcp-a] hello world")
    expect(a.body.done).toBe(true)
    expect(inferenceCount(gw, "gcp-b") + inferenceCount(gw, "111")).toBe(0)
  })

  it("streaming is passed through as it arrives (NDJSON, not buffered), with the routing headers", async () => {
    reset()
    gw.fakes["gcp-a"]!.setMode("drip", { delayMs: 150, chunks: 4 })
    const started = performance.now()
    const res = await gw.post("/api/generate", { model: "gemma3:4b", prompt: "hi" }, { "x-awooop-lane": "alert-fast" }) // stream defaults to true
    expect(res.status).toBe(200)
    expect(res.headers.get("content-type")).toMatch(/^application\/x-ndjson/)
    expect(res.headers.get("x-awooop-endpoint")).toBe("gcp-a")
    expect(res.headers.get("x-awooop-trace-id")).toMatch(/^[0-9a-f]{32}$/)
    const reader = res.body!.getReader()
    const first = await reader.read()
    const firstAt = performance.now() - started
    let text = new TextDecoder().decode(first.value)
    for (let r = await reader.read(); !r.done; r = await reader.read()) text += new TextDecoder().decode(r.value)
    const total = performance.now() - started
    // The first chunk did not wait for the rest (four more, 150 ms apart).
    expect(total - firstAt).toBeGreaterThanOrEqual(400)
    const lines = text.trim().split("\n").map((l) => JSON.parse(l) as { response: string; done: boolean })
    expect(lines).toHaveLength(5)
    expect(lines.map((l) => l.response).join("")).toBe("[gcp-a] hello world!")
    expect(lines.map((l) => l.done)).toEqual([false, false, false, false, true])
  })

  it("every host timing out → 504 naming the lane and each host", async () => {
    reset()
    for (const f of Object.values(gw.fakes)) f.setMode("hang")
    const a = await generate(gw, "alert-fast")
    expectOllamaError(a, 504, "alert-fast", "gcp-a", "gcp-b", "111")
    expect(a.ms).toBeGreaterThanOrEqual(880)
    expect(a.headers.get("x-awooop-trace-id")).toBe(a.traceId)
  })

  const failoverModes: Array<FakeMode> = ["error500", "busy503", "resetBeforeFirst", "resetMidStream"]
  for (const mode of failoverModes) {
    it(`gcp-a in mode ${mode} before any byte: fails over to gcp-b at once (non-streaming and streaming)`, async () => {
      reset()
      gw.fakes["gcp-a"]!.setMode(mode)
      const a = await generate(gw, "alert-fast")
      expect(a.status, a.text).toBe(200)
      expect(a.headers.get("x-awooop-endpoint")).toBe("gcp-b")
      const events = await gw.runEvents(a.traceId)
      const failed = ofType(events, "AttemptFailed")
      expect(failed).toHaveLength(1)
      expect(dataOf(failed[0]).host).toBe("gcp-a")
      expect(dataOf(failed[0]).kind).not.toBe("timeout")
      expect(dataOf(failed[0]).afterFirstChunk).toBe(false)

      if (mode !== "resetMidStream") {
        const parts = await collect(await gw.ollama({ "x-awooop-lane": "alert-fast" }).generate({ model: "gemma3:4b", prompt: "hi", stream: true }))
        expect(parts.map((p) => p.response).join("")).toBe("[gcp-b] hello world")
      }
    })
  }

  it("gcp-a refusing connections (down): fails over to gcp-b; the host is marked down until the poller sees it again", async () => {
    reset()
    const gcpA = gw.fakes["gcp-a"]!
    await gcpA.stop()
    try {
      const a = await generate(gw, "alert-fast")
      expect(a.status, a.text).toBe(200)
      expect(a.headers.get("x-awooop-endpoint")).toBe("gcp-b")
      const events = await gw.runEvents(a.traceId)
      const failedOrSkipped = [...ofType(events, "AttemptFailed").map((e) => dataOf(e).kind), ...(dataOf(ofType(events, "RouteDecided")[0]).plan as { skipped: Array<{ host: string; reason: { kind: string } }> }).skipped.filter((s) => s.host === "gcp-a").map((s) => s.reason.kind)]
      expect(failedOrSkipped).toEqual([expect.stringMatching(/refused|host-down/)])

      const b = await generate(gw, "alert-fast")
      expect(b.headers.get("x-awooop-endpoint")).toBe("gcp-b")
      const decided = dataOf(ofType(await gw.runEvents(b.traceId), "RouteDecided")[0])
      expect((decided.plan as { skipped: unknown }).skipped).toEqual([{ host: "gcp-a", reason: { kind: "host-down" } }])
      const hostStream = await gw.streamEvents("host-gcp-a")
      expect(typesOf(hostStream)).toContain("HostDown")
    } finally {
      await gcpA.start()
    }
    await gw.pollHosts()
    const c = await generate(gw, "alert-fast")
    expect(c.headers.get("x-awooop-endpoint")).toBe("gcp-a")
    expect(typesOf(await gw.streamEvents("host-gcp-a")).slice(-2)).toContain("HostUp")
  })

  it("a reset after the first chunk ends the stream with an error: the ollama client throws, and the journal says so", async () => {
    reset()
    gw.fakes["gcp-a"]!.setMode("resetMidStream")
    const traceId = newTraceId()
    const client = gw.ollama({ "x-awooop-lane": "alert-fast", "x-awooop-trace-id": traceId })
    const seen: Array<{ response?: string; done: boolean }> = []
    const error = await thrown(async () => {
      for await (const part of await client.generate({ model: "gemma3:4b", prompt: "hi", stream: true })) seen.push(part)
    })
    expect(error.message).toMatch(/gcp-a/)
    expect(error.message).not.toMatch(/Did not receive done/) // an explicit error line, not a silent truncation
    expect(seen.length).toBeGreaterThanOrEqual(1)
    expect(seen.every((p) => p.done === false)).toBe(true)
    expect(inferenceCount(gw, "gcp-b")).toBe(0) // tokens reached the caller: no failover

    const events = await gw.runEvents(traceId)
    expect(typesOf(events)).toEqual(["RunStarted", "RouteDecided", "AttemptStarted", "AttemptFailed", "RunFailed"])
    expect(dataOf(ofType(events, "AttemptFailed")[0])).toMatchObject({ host: "gcp-a", afterFirstChunk: true })
    expect(ofType(events, "RunCompleted")).toHaveLength(0)
  })
})

describe("code-review: gcp-b only when 111 is unavailable", () => {
  let gw: TestGateway
  beforeAll(async () => {
    gw = await gateway({ breaker: { consecutiveTimeouts: 2, cooldown: "30s" } })
  })
  const review = () => generate(gw, "code-review", { body: { model: "qwen2.5-coder:7b" } })

  it("111 healthy: 111 answers, gcp-b is never asked", async () => {
    const a = await review()
    expect(a.headers.get("x-awooop-endpoint")).toBe("111")
    expect(inferenceCount(gw, "gcp-b")).toBe(0)
  })

  it("111 busy (503): gcp-b answers", async () => {
    gw.fakes["111"]!.setMode("busy503")
    const a = await review()
    gw.fakes["111"]!.setMode("ok")
    expect(a.status, a.text).toBe(200)
    expect(a.headers.get("x-awooop-endpoint")).toBe("gcp-b")
    expect(a.body.response).toBe("[gcp-b] hello world")
  })

  it("111 refusing connections: gcp-b answers; once the poller marks 111 down, the plan goes straight to gcp-b", async () => {
    const host111 = gw.fakes["111"]!
    await host111.stop()
    try {
      const a = await review()
      expect(a.status, a.text).toBe(200)
      expect(a.headers.get("x-awooop-endpoint")).toBe("gcp-b")
      await gw.pollHosts()
      const b = await review()
      expect(b.headers.get("x-awooop-endpoint")).toBe("gcp-b")
      const decided = dataOf(ofType(await gw.runEvents(b.traceId), "RouteDecided")[0])
      expect(decided.plan).toEqual({
        attempts: [{ host: "gcp-b", timeoutMs: 300, conditional: false }],
        skipped: [{ host: "111", reason: { kind: "host-down" } }]
      })
    } finally {
      await host111.start()
    }
    await gw.pollHosts()
  })

  it("111 merely busy (all its slots taken by code-review): requests wait for 111, they do not spill onto gcp-b", async () => {
    const host111 = gw.fakes["111"]!
    host111.setMode("slow", { delayMs: 150 })
    const gcpBBefore = inferenceCount(gw, "gcp-b")
    // 111 has 2 slots: the third and fourth requests wait for one instead of going to gcp-b.
    const answers = await Promise.all([review(), review(), review(), review()])
    host111.setMode("ok")
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200])
    expect(answers.map((a) => a.headers.get("x-awooop-endpoint"))).toEqual(["111", "111", "111", "111"])
    expect(inferenceCount(gw, "gcp-b")).toBe(gcpBBefore)
    expect(host111.maxInFlight()).toBeLessThanOrEqual(2)
  })
})

describe("refusals: policy, lanes, headers", () => {
  let gw: TestGateway
  beforeAll(async () => {
    gw = await gateway({
      hosts: {
        // Real Ollama lists untagged pulls with their tag: `ollama pull bge-m3` shows up as "bge-m3:latest".
        "111": {
          slots: 2,
          fake: {
            models: [
              { name: "gemma3:4b", parameterSize: "4.3B" },
              { name: "qwen2.5-coder:7b", parameterSize: "7.6B" },
              { name: "bge-m3:latest", parameterSize: "567M", family: "bert" },
              { name: "qwen2.5:14b", parameterSize: "14.8B" }
            ]
          }
        }
      },
      lanes: {
        // A 14B model routed to the protected hosts only.
        heavy: { model: "qwen2.5:14b", route: [{ host: "gcp-a", timeout: "300ms" }, { host: "gcp-b", timeout: "300ms" }] },
        // Heavy on protected hosts, but 111 may serve it.
        "heavy-mixed": { model: "qwen2.5:14b", route: [{ host: "gcp-a", timeout: "300ms" }, { host: "111", timeout: "300ms" }] },
        // A model no host has.
        ghost: { model: "llama9:1b", route: [{ host: "111", timeout: "300ms" }, { host: "gpu-node", timeout: "300ms" }] }
      }
    })
  })

  it("a heavy model on protected hosts is denied with 403 naming the lane, model and rule; nothing is sent", async () => {
    const a = await generate(gw, "heavy")
    expectOllamaError(a, 403, "heavy", "qwen2.5:14b", "gcp-a", "gcp-b", "heavyModelMinParamsB")
    expect(inferenceCount(gw, "gcp-a") + inferenceCount(gw, "gcp-b")).toBe(0)
    const events = await gw.runEvents(a.traceId)
    expect(typesOf(events)).toEqual(["RunStarted", "RouteDecided", "RunFailed"])
    expect(dataOf(ofType(events, "RunFailed")[0])).toMatchObject({ status: 403, error: "ModelDenied" })
  })

  it("the same model goes to an unprotected host on the route", async () => {
    const a = await generate(gw, "heavy-mixed")
    expect(a.status, a.text).toBe(200)
    expect(a.headers.get("x-awooop-endpoint")).toBe("111")
    expect(a.headers.get("x-awooop-model")).toBe("qwen2.5:14b")
  })

  it("a model missing on every host of the lane → 404", async () => {
    const a = await generate(gw, "ghost")
    expectOllamaError(a, 404, "llama9:1b", "ghost")
  })

  it("an async-only lane refuses a synchronous embed with 409 (a generate or chat there becomes an async run, 202)", async () => {
    const traceId = newTraceId()
    const res = await gw.post("/api/embed", { model: "qwen2.5:14b", input: "x" }, { "x-awooop-lane": "deep-rca", "x-awooop-trace-id": traceId })
    const text = await res.text()
    expectOllamaError({ status: res.status, headers: res.headers, body: JSON.parse(text) as Record<string, unknown>, text, traceId, ms: 0 }, 409, "deep-rca", "async")
    expect(typesOf(await gw.runEvents(traceId))).toEqual(["RunStarted", "RunFailed"])
  })

  it("an unknown lane → 400 naming it and the known lanes", async () => {
    const a = await generate(gw, "alert-slow")
    expectOllamaError(a, 400, "alert-slow", "alert-fast")
  })

  it("a malformed trace id → 400 naming the header", async () => {
    for (const bad of ["xyz", "0".repeat(32), "ABCDEF0123456789ABCDEF0123456789", "a".repeat(33)]) {
      const a = await generate(gw, "alert-fast", { headers: { "x-awooop-trace-id": bad } })
      expectOllamaError(a, 400, "X-AwoooP-Trace-ID")
    }
  })

  it("bad JSON, a missing model and a wrongly typed field → 400", async () => {
    const badJson = await gw.post("/api/generate", "{not json", { "x-awooop-lane": "alert-fast" })
    expect(badJson.status).toBe(400)
    expect(Object.keys(await badJson.json() as object)).toEqual(["error"])
    const noModel = await gw.post("/api/generate", { prompt: "hi" }, { "x-awooop-lane": "alert-fast" })
    expect(noModel.status).toBe(400)
    expect(await noModel.json()).toEqual({ error: "model is required" })
    const badType = await gw.post("/api/generate", { model: "gemma3:4b", prompt: 42 }, { "x-awooop-lane": "alert-fast" })
    expect(badType.status).toBe(400)
    expect(((await badType.json()) as { error: string }).error).toContain("prompt")
  })

  it("a legacy caller (no AwoooP headers) gets project awoooi and the lane legacy.lanes names for its model", async () => {
    const res = await gw.post("/api/generate", { model: "qwen2.5-coder:7b", prompt: "review this", stream: false })
    expect(res.status).toBe(200)
    expect(res.headers.get("x-awooop-lane")).toBe("code-review")
    expect(res.headers.get("x-awooop-endpoint")).toBe("111")
    const traceId = res.headers.get("x-awooop-trace-id")!
    expect(traceId).toMatch(/^[0-9a-f]{32}$/)
    const events = await gw.runEvents(traceId)
    expect(events[0]).toMatchObject({ type: "RunStarted", projectId: "awoooi", lane: "code-review", traceId })
    expect(dataOf(events[0])).toMatchObject({ legacy: true, traceMinted: true, requestedModel: "qwen2.5-coder:7b", assignedModel: "qwen2.5-coder:7b" })

    const unknown = await gw.post("/api/generate", { model: "mistral:7b", prompt: "hi", stream: false })
    expect(unknown.status).toBe(400)
    expect(((await unknown.json()) as { error: string }).error).toContain("X-AwoooP-Lane")
  })

  it("model names follow Ollama's rule that no tag means :latest (lane model, installed list, legacy rules)", async () => {
    // The embedding lane's model is "bge-m3"; 111 lists "bge-m3:latest".
    const viaLane = await gw.post("/api/embed", { model: "bge-m3", input: "disk full" }, { "x-awooop-lane": "embedding" })
    expect(viaLane.status, await viaLane.clone().text()).toBe(200)
    expect(viaLane.headers.get("x-awooop-endpoint")).toBe("111")
    // A legacy caller that writes the tag out is still put on the embedding lane.
    const legacy = await gw.post("/api/embeddings", { model: "bge-m3:latest", prompt: "disk full" })
    expect(legacy.status, await legacy.clone().text()).toBe(200)
    expect(legacy.headers.get("x-awooop-lane")).toBe("embedding")
  })

  it("the lane pins the model: whatever the caller asks for, the lane's model is sent and both are journaled", async () => {
    const a = await generate(gw, "alert-fast", { body: { model: "llama3:70b" }, headers: { "x-awooop-project-id": "billing", "x-awooop-intent": "DIAGNOSE" } })
    expect(a.status, a.text).toBe(200)
    expect(a.body.model).toBe("gemma3:4b")
    const sent = gw.fakes["gcp-a"]!.requests.filter((r) => r.path === "/api/generate").at(-1)!.body as { model: string; stream: boolean }
    expect(sent.model).toBe("gemma3:4b")
    const events = await gw.runEvents(a.traceId)
    expect(events[0]).toMatchObject({ projectId: "billing", lane: "alert-fast" })
    expect(dataOf(events[0])).toMatchObject({ requestedModel: "llama3:70b", assignedModel: "gemma3:4b", intent: "DIAGNOSE", legacy: false, traceMinted: false })
  })

  it("a trace id is minted when none is given; traceparent is accepted; an invalid traceparent is ignored", async () => {
    const minted = await gw.post("/api/generate", { model: "gemma3:4b", prompt: "hi", stream: false }, { "x-awooop-lane": "alert-fast" })
    expect(minted.headers.get("x-awooop-trace-id")).toMatch(/^[0-9a-f]{32}$/)

    const trace = newTraceId()
    const parent = "b7ad6b7169203331"
    const viaParent = await gw.post("/api/generate", { model: "gemma3:4b", prompt: "hi", stream: false }, {
      "x-awooop-lane": "alert-fast",
      traceparent: `00-${trace}-${parent}-01`
    })
    expect(viaParent.status).toBe(200)
    expect(viaParent.headers.get("x-awooop-trace-id")).toBe(trace)
    const events = await gw.runEvents(trace)
    expect(dataOf(events[0])).toMatchObject({ parentSpanId: parent, traceMinted: false })

    const invalid = await gw.post("/api/generate", { model: "gemma3:4b", prompt: "hi", stream: false }, {
      "x-awooop-lane": "alert-fast",
      traceparent: `00-${"0".repeat(32)}-${parent}-01`
    })
    expect(invalid.status).toBe(200)
    const got = invalid.headers.get("x-awooop-trace-id")!
    expect(got).toMatch(/^[0-9a-f]{32}$/)
    expect(got).not.toBe("0".repeat(32))
  })

  it("the trace id is echoed on refusals too", async () => {
    const a = await generate(gw, "ghost", { body: { model: "llama9:1b" } })
    expect(a.status).toBe(404)
    expect(a.headers.get("x-awooop-trace-id")).toBe(a.traceId)
  })

  it("unknown routes and model management answer {\"error\"} too", async () => {
    const nope = await fetch(gw.url + "/api/nope")
    expect(nope.status).toBe(404)
    expect(Object.keys(await nope.json() as object)).toEqual(["error"])
    const pull = await gw.post("/api/pull", { model: "gemma3:4b" })
    expect(pull.status).toBe(403)
    expect(((await pull.json()) as { error: string }).error).toContain("does not manage models")
  })
})

describe("reservations and admission", () => {
  let gw: TestGateway
  beforeAll(async () => {
    gw = await gateway({
      breaker: { consecutiveTimeouts: 100 },
      hosts: { solo: { slots: 1 }, stuck: { slots: 2, fake: { mode: "hang" } } },
      lanes: {
        spill: { model: "gemma3:4b", route: [{ host: "solo", timeout: "1s" }, { host: "stuck", timeout: "400ms" }], queue: { maxWait: "3s" } },
        // Shares gcp-a with alert-fast: gcp-a has 4 slots, alert-fast reserves 2, so bulk may use 2.
        bulk: { model: "gemma3:4b", route: [{ host: "gcp-a", timeout: "800ms" }], queue: { capacity: 20, maxWait: "400ms" } },
        // One request at a time.
        tiny: { model: "gemma3:4b", route: [{ host: "gpu-node", timeout: "1s" }], queue: { capacity: 1, maxWait: "1s" } }
      }
    })
  })

  it("a flood on another lane never takes alert-fast's reserved slots on gcp-a", async () => {
    const gcpA = gw.fakes["gcp-a"]!
    gcpA.setMode("hang")
    gcpA.reset()
    const flood = Array.from({ length: 6 }, () => generate(gw, "bulk"))
    // The two shared slots fill; the other four bulk requests wait for a slot.
    for (let i = 0; i < 300 && gcpA.inFlight() < 2; i++) await new Promise((r) => setTimeout(r, 10))
    expect(gcpA.inFlight()).toBe(2)

    // alert-fast still gets its two reserved slots on gcp-a while the flood holds the shared ones.
    gcpA.setMode("ok")
    const alerts = await Promise.all([generate(gw, "alert-fast"), generate(gw, "alert-fast")])
    for (const a of alerts) {
      expect(a.status, a.text).toBe(200)
      expect(a.headers.get("x-awooop-endpoint")).toBe("gcp-a")
      const started = ofType(await gw.runEvents(a.traceId), "AttemptStarted")
      expect(dataOf(started[0])).toMatchObject({ host: "gcp-a", slotPool: "reserved" })
    }

    const results = await Promise.all(flood)
    // The waiting bulk requests were never lent a reserved slot: after maxWait they are refused.
    const saturated = results.filter((r) => r.status === 503)
    expect(saturated.length).toBeGreaterThanOrEqual(1)
    for (const r of saturated) {
      expectOllamaError(r, 503, "bulk")
      expect(r.headers.get("retry-after")).toMatch(/^\d+$/)
    }
    expect(gcpA.maxInFlight()).toBeLessThanOrEqual(4)
    const bulkStarts = (await Promise.all(results.map((r) => gw.runEvents(r.traceId))))
      .flatMap((events) => ofType(events, "AttemptStarted").map((e) => dataOf(e).slotPool))
    expect(bulkStarts.every((pool) => pool === "shared")).toBe(true)
  })

  it("a slot freed while the request was busy elsewhere on its route is not missed", async () => {
    // solo (1 slot) is taken by A; B tries stuck (times out after 400 ms) meanwhile. A is done by
    // then, so B must go back to solo at once, not sit out its whole maxWait.
    gw.fakes.solo!.setMode("slow", { delayMs: 150 })
    const a = generate(gw, "spill")
    for (let i = 0; i < 300 && gw.fakes.solo!.inFlight() < 1; i++) await new Promise((r) => setTimeout(r, 5))
    const b = await generate(gw, "spill")
    expect((await a).headers.get("x-awooop-endpoint")).toBe("solo")
    expect(b.status, b.text).toBe(200)
    expect(b.headers.get("x-awooop-endpoint")).toBe("solo")
    expect(b.ms).toBeLessThan(1_500)
  })

  it("the admission bound: a full lane answers 503 at once, with Retry-After, naming the lane", async () => {
    const gpu = gw.fakes["gpu-node"]!
    gpu.setMode("hang")
    const first = generate(gw, "tiny")
    for (let i = 0; i < 300 && gpu.inFlight() < 1; i++) await new Promise((r) => setTimeout(r, 10))
    const second = await generate(gw, "tiny")
    expectOllamaError(second, 503, "tiny", "admission")
    expect(second.headers.get("retry-after")).toMatch(/^\d+$/)
    expect(second.ms).toBeLessThan(900) // not after the 1 s step timeout
    expect((await first).status).toBe(504)
    gpu.setMode("ok")
    // The slot is back once the first request is done.
    expect((await generate(gw, "tiny")).status).toBe(200)
  })
})

describe("callers that go away, hosts that stall mid-stream", () => {
  let gw: TestGateway
  beforeAll(async () => {
    gw = await gateway({ breaker: { consecutiveTimeouts: 2, cooldown: "500ms" } })
  })
  const slotsInUse = (host: string) => gw.run(Effect.flatMap(Gateway, (g) => g.hosts.get(host)!.slots.snapshot)).then((s) => s.inUse)
  const laneInFlight = (lane: string) => gw.run(Effect.flatMap(Gateway, (g) => g.lanes.get(lane)!.inFlight))
  const until = async (what: string, check: () => Promise<boolean> | boolean, ms = 2_000) => {
    const deadline = Date.now() + ms
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`)
      await new Promise((r) => setTimeout(r, 10))
    }
  }
  const settle = async () => {
    for (const f of Object.values(gw.fakes)) f.setMode("ok", { delayMs: 50, chunks: 3 })
    await gw.run(Effect.flatMap(Gateway, (g) => Effect.forEach(g.hosts.values(), (h) => h.breaker.reset)))
  }

  it("a caller that hangs up while the host is thinking: the upstream call is cancelled, the slot freed, the run journaled as 499", async () => {
    await settle()
    const gcpA = gw.fakes["gcp-a"]!
    gcpA.setMode("hang")
    const traceId = newTraceId()
    const abort = new AbortController()
    const pending = fetch(gw.url + "/api/generate", {
      method: "POST",
      signal: abort.signal,
      headers: { "content-type": "application/json", "x-awooop-lane": "alert-fast", "x-awooop-trace-id": traceId },
      body: JSON.stringify({ model: "gemma3:4b", prompt: "hi", stream: false })
    }).catch((e: Error) => e)
    await until("the host has the request", () => gcpA.inFlight() === 1)
    abort.abort()
    expect(await pending).toBeInstanceOf(Error)
    await until("the host's request is cancelled", () => gcpA.inFlight() === 0)
    await until("the slot is back", async () => (await slotsInUse("gcp-a")) === 0)
    await until("the lane is empty", async () => (await laneInFlight("alert-fast")) === 0)
    const events = await gw.runEvents(traceId)
    expect(dataOf(events.at(-1))).toMatchObject({ status: 499 })
    expect(inferenceCount(gw, "gcp-b")).toBe(0) // no failover for a caller who left
  })

  it("a caller that hangs up mid-stream: the upstream stream is closed, the slot freed, the run journaled as 499", async () => {
    await settle()
    const gcpA = gw.fakes["gcp-a"]!
    gcpA.setMode("drip", { delayMs: 100, chunks: 20 })
    const traceId = newTraceId()
    const client = gw.ollama({ "x-awooop-lane": "alert-fast", "x-awooop-trace-id": traceId })
    const stream = await client.generate({ model: "gemma3:4b", prompt: "hi", stream: true })
    for await (const part of stream) {
      expect(part.done).toBe(false)
      break // leaves the loop: the iterator is returned, the request aborted
    }
    stream.abort()
    await until("the host's stream is closed", () => gcpA.inFlight() === 0)
    await until("the slot is back", async () => (await slotsInUse("gcp-a")) === 0)
    await until("the lane is empty", async () => (await laneInFlight("alert-fast")) === 0)
    const events = await gw.runEvents(traceId)
    expect(typesOf(events)).toEqual(["RunStarted", "RouteDecided", "AttemptStarted", "RunFailed"])
    expect(dataOf(events.at(-1))).toMatchObject({ status: 499 })
  })

  it("a host that stalls mid-stream longer than the step timeout: the stream ends with an error line, never a fake done", async () => {
    await settle()
    gw.fakes["gcp-a"]!.setMode("drip", { delayMs: 600, chunks: 5 })
    const traceId = newTraceId()
    const seen: Array<{ done: boolean }> = []
    const error = await thrown(async () => {
      for await (const part of await gw.ollama({ "x-awooop-lane": "alert-fast", "x-awooop-trace-id": traceId }).generate({ model: "gemma3:4b", prompt: "hi", stream: true })) seen.push(part)
    })
    expect(error.message).toMatch(/gcp-a/)
    expect(seen.some((p) => p.done)).toBe(false)
    const events = await gw.runEvents(traceId)
    expect(dataOf(ofType(events, "AttemptFailed")[0])).toMatchObject({ host: "gcp-a", kind: "timeout", afterFirstChunk: true })
    expect(typesOf(events).at(-1)).toBe("RunFailed")
    await until("the slot is back", async () => (await slotsInUse("gcp-a")) === 0)
  })

  it("a host that sends garbage in its first packet: nothing reached the caller yet, so it fails over; journaled as malformed", async () => {
    await settle()
    // The fake writes its first line and a broken one together: the gateway sees the garbage
    // before it has handed the caller anything.
    gw.fakes["gcp-a"]!.setMode("malformed")
    const traceId = newTraceId()
    const parts = await collect(await gw.ollama({ "x-awooop-lane": "alert-fast", "x-awooop-trace-id": traceId }).chat({ model: "gemma3:4b", messages: [{ role: "user", content: "hi" }], stream: true }))
    expect(parts.map((p) => p.message.content).join("")).toBe("[gcp-b] hello world")
    const events = await gw.runEvents(traceId)
    expect(dataOf(ofType(events, "AttemptFailed")[0])).toMatchObject({ host: "gcp-a", kind: "malformed", afterFirstChunk: false })
    expect(dataOf(ofType(events, "RunCompleted")[0])).toMatchObject({ endpoint: "gcp-b" })
  })

  it("a probe whose caller hangs up does not wedge the breaker: the next caller probes", async () => {
    await settle()
    const gcpA = gw.fakes["gcp-a"]!
    gcpA.setMode("hang")
    await generate(gw, "alert-fast")
    await generate(gw, "alert-fast")
    expect(typesOf(await gw.streamEvents("host-gcp-a")).filter((t) => t.startsWith("Breaker")).at(-1)).toBe("BreakerOpened")
    await new Promise((r) => setTimeout(r, 550))

    // The probe: its caller leaves before the host answers.
    const abort = new AbortController()
    const before = inferenceCount(gw, "gcp-a")
    const probe = fetch(gw.url + "/api/generate", {
      method: "POST",
      signal: abort.signal,
      headers: { "content-type": "application/json", "x-awooop-lane": "alert-fast" },
      body: JSON.stringify({ model: "gemma3:4b", prompt: "probe", stream: false })
    }).catch((e: Error) => e)
    await until("the probe reached gcp-a", () => inferenceCount(gw, "gcp-a") === before + 1)
    abort.abort()
    await probe
    await until("the probe is cancelled", () => gcpA.inFlight() === 0)

    gcpA.setMode("ok")
    const next = await generate(gw, "alert-fast")
    expect(next.headers.get("x-awooop-endpoint")).toBe("gcp-a")
    const breaker = typesOf(await gw.streamEvents("host-gcp-a")).filter((t) => t.startsWith("Breaker"))
    expect(breaker.slice(-3)).toEqual(["BreakerHalfOpened", "BreakerHalfOpened", "BreakerClosed"])
  })
})

describe("journal invariants over every run of this file", () => {
  it("each run stream: positions 0..n-1, RunStarted first, exactly one RunCompleted/RunFailed and it is last, every admitted attempt has an outcome", async () => {
    const gw = gateways[0]!
    const rows = await gw.query<{ stream_id: string; stream_position: number; type: string; data: Record<string, unknown> }>(
      "SELECT stream_id, stream_position, type, data FROM step_journal WHERE stream_id LIKE 'run-%' ORDER BY stream_id, stream_position"
    )
    const runs = new Map<string, Array<(typeof rows)[number]>>()
    for (const r of rows) runs.set(r.stream_id, [...(runs.get(r.stream_id) ?? []), r])
    // (The timeout and breaker scenarios moved to routing.scenarios.test.ts, where the same checks run over their runs.)
    expect(runs.size).toBeGreaterThan(35)
    for (const [stream, events] of runs) {
      const types = events.map((e) => e.type)
      expect(events.map((e) => e.stream_position), stream).toEqual(events.map((_, i) => i))
      expect(types[0], stream).toBe("RunStarted")
      const terminals = types.filter((t) => t === "RunCompleted" || t === "RunFailed")
      expect(terminals, `${stream}: ${types.join(",")}`).toHaveLength(1)
      expect(["RunCompleted", "RunFailed"], `${stream}: ${types.join(",")}`).toContain(types.at(-1))
      const started = events.filter((e) => e.type === "AttemptStarted").length
      const outcomes = events.filter((e) => e.type === "AttemptFailed" || e.type === "AttemptSucceeded").length
      // A caller that left mid-stream leaves its attempt without an outcome; one that left before the
      // answer has it settled as interrupted (Lane's endRun).
      const abandoned = types.at(-1) === "RunFailed" && events.at(-1)!.data.status === 499 && outcomes === started - 1 ? 1 : 0
      expect(outcomes, `${stream}: ${types.join(",")}`).toBe(started - abandoned)
    }
  })
})
