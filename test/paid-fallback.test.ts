/**
 * Paid emergency fallback, end to end: the real gateway (HTTP, lanes, journal on PostgreSQL, budget
 * ledger), fake Ollama hosts that all fail, and fake Gemini / Anthropic servers on loopback speaking
 * their real wire formats (JSON and SSE), reached through each provider's baseUrl. The callers are the
 * real `ollama` npm client and plain fetch.
 */
import { LogLevel } from "effect"
import { randomUUID } from "node:crypto"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import type { StoredEvent } from "../src/journal/Journal.ts"
import { type FakeAnthropic, startFakeAnthropic } from "./support/FakeAnthropic.ts"
import { closedPortUrl } from "./support/ClosedPort.ts"
import { type FakeGemini, startFakeGemini } from "./support/FakeGemini.ts"
import {
  collect,
  newTraceId,
  startTestDatabase,
  startTestGateway,
  type TestDatabaseHandle,
  type TestGateway,
  thrown
} from "./support/TestGateway.ts"

const GEMINI_KEY = `gem-test-key-${randomUUID()}`
const CLAUDE_KEY = `sk-ant-test-key-${randomUUID()}`
const ADMIN_TOKEN = `admin-${randomUUID()}`
// Read by the gateway through Config.redacted, as in production (env only, never the config file).
process.env.AWOOOP_TEST_GEMINI_KEY = GEMINI_KEY
process.env.AWOOOP_TEST_ANTHROPIC_KEY = CLAUDE_KEY
process.env.AWOOOP_ADMIN_TOKEN = ADMIN_TOKEN

const GEMINI_IN = 0.30 / 1e6
const GEMINI_OUT = 2.50 / 1e6
const CLAUDE_IN = 1.00 / 1e6
const CLAUDE_OUT = 5.00 / 1e6

// Everything the gateway prints, to prove the keys never reach a log line.
const printed: Array<string> = []
const originals = { log: console.log, info: console.info, warn: console.warn, error: console.error, debug: console.debug }
for (const level of Object.keys(originals) as Array<keyof typeof originals>) {
  console[level] = (...args: Array<unknown>) => {
    printed.push(args.map((a) => (typeof a === "string" ? a : (() => { try { return JSON.stringify(a) } catch { return String(a) } })())).join(" "))
  }
}
afterAll(() => Object.assign(console, originals))

let db: TestDatabaseHandle
let gemini: FakeGemini
let claude: FakeAnthropic
let gw: TestGateway
/** A lane with alert-fast's paid fallback behind Ollama hosts that fail at once (configured in beforeAll). */
const failingLane = "alert-failing"
/** A closed port: connecting is refused at once. */
let closedPort: string

beforeAll(async () => {
  db = await startTestDatabase()
  gemini = await startFakeGemini({ apiKey: GEMINI_KEY })
  claude = await startFakeAnthropic({ apiKey: CLAUDE_KEY })
  closedPort = await closedPortUrl()
  gw = await startTestGateway({
    database: db,
    logLevel: LogLevel.All,
    hosts: {
      "gcp-a": { slots: 4, protected: true, fake: { mode: "hang" } },
      "gcp-b": { slots: 4, protected: true, fake: { mode: "error500" } },
      "111": { slots: 2, url: closedPort }
    },
    lanes: {
      "alert-fast": {
        model: "gemma3:4b",
        reserved: { "gcp-a": 2, "gcp-b": 2 },
        // gcp-a hangs: every request here waits out its timeout. A timeout during which this
        // process's event loop stalled for half of it or more is the gateway's, not the host's, and
        // pays no provider (EventLoopLag.ts), so 300 ms failed on CI stalls of 151-237 ms (a clean
        // clone builds dist/ and its declarations while the first files run). 600 ms needs a 300 ms stall.
        route: [
          { host: "gcp-a", timeout: "600ms" },
          { host: "gcp-b", timeout: "300ms" },
          { host: "111", timeout: "300ms" }
        ],
        paidFallback: ["gemini", "claude"]
      },
      // The same fallback behind hosts that fail at once (gcp-b's 500, 111 refused): the tests of
      // the providers' side, which need the Ollama route to fail but not how, don't wait out gcp-a.
      [failingLane]: {
        model: "gemma3:4b",
        route: [{ host: "gcp-b", timeout: "300ms" }, { host: "111", timeout: "300ms" }],
        paidFallback: ["gemini", "claude"]
      },
      "paid-emergency": { paid: ["gemini", "claude"] },
      priced: { model: "qwen2.5-coder:7b", route: [{ host: "gpu-node", timeout: "2s" }] },
      free: { model: "gemma3:4b", route: [{ host: "gpu-node", timeout: "2s" }] }
    },
    // A timeout each breaker needs twice to open: keep gcp-a trying (and timing out) in every test.
    breaker: { consecutiveTimeouts: 1000 },
    extra: {
      providers: {
        gemini: { kind: "gemini", model: "gemini-2.5-flash", apiKeyEnv: "AWOOOP_TEST_GEMINI_KEY", baseUrl: gemini.url, timeout: "2s", maxOutputTokens: 256 },
        claude: { kind: "anthropic", model: "claude-haiku-4-5", apiKeyEnv: "AWOOOP_TEST_ANTHROPIC_KEY", baseUrl: claude.url, timeout: "2s", maxOutputTokens: 256 }
      },
      prices: {
        "gemini-2.5-flash": { input: 0.30, output: 2.50 },
        // An Ollama model may be priced too (unlisted ones cost 0).
        "qwen2.5-coder:7b": { input: 0.10, output: 0.20 },
        // LiteLLM's per-token entry, as pasted from model_prices_and_context_window.json.
        "claude-haiku-4-5": { input_cost_per_token: 1e-6, output_cost_per_token: 5e-6, litellm_provider: "anthropic", max_tokens: 64000, mode: "chat" }
      },
      budget: { hardKillUsd: 5, period: "day" }
    }
  })
}, 30_000)

afterAll(async () => {
  await gw?.close()
  await gemini?.stop()
  await claude?.stop()
  await db?.close()
})

afterEach(() => {
  gemini.setMode("ok")
  claude.setMode("ok")
})

const headers = (traceId: string, lane = "alert-fast") => ({
  "x-awooop-lane": lane,
  "x-awooop-trace-id": traceId,
  "x-awooop-project-id": "awoooi"
})

const data = (e: StoredEvent) => e.data as Record<string, unknown>
const one = (events: ReadonlyArray<StoredEvent>, type: string, where: (d: Record<string, unknown>) => boolean = () => true) => {
  const found = events.filter((e) => e.type === type && where(data(e)))
  expect(found, `${type} in ${events.map((e) => e.type).join(", ")}`).toHaveLength(1)
  return data(found[0]!)
}
const close = (a: number, b: number) => expect(Math.abs(a - b)).toBeLessThan(1e-12)

const ledgerRow = async (reservationId: string) => {
  const rows = await gw.query<{ status: string; reserved: number; settled: number | null; cost: number | null }>(
    `SELECT status, reserved_usd::float8 AS reserved, settled_usd::float8 AS settled, cost_usd::float8 AS cost FROM budget_ledger WHERE reservation_id = $1`,
    [reservationId]
  )
  return rows[0]
}

describe("paid fallback on alert-fast", () => {
  it("every Ollama host failing → Gemini answers a normal non-streaming generate; the journal holds reason, reservation, settlement and cost", async () => {
    const traceId = newTraceId()
    const before = gemini.requests.length
    const answer = await gw.ollama(headers(traceId)).generate({
      model: "gemma3:4b",
      system: "You are the alert triage assistant.",
      prompt: "why is the alert firing?",
      options: { temperature: 0.2, num_predict: 100, stop: ["\n\n"] }
    })
    expect(answer.response).toBe("[gemini] hello from gemini")
    expect(answer.done).toBe(true)
    expect(answer.done_reason).toBe("stop")
    expect(answer.model).toBe("gemini-2.5-flash")
    const sent = gemini.requests.slice(before)
    expect(sent).toHaveLength(1)
    const body = sent[0]!.body as { contents: unknown; systemInstruction: unknown; generationConfig: Record<string, unknown> }
    expect(sent[0]!.model).toBe("gemini-2.5-flash")
    expect(sent[0]!.path).toBe("/v1beta/models/gemini-2.5-flash:generateContent")
    expect(body.systemInstruction).toMatchObject({ parts: [{ text: "You are the alert triage assistant." }] })
    expect(body.contents).toEqual([{ role: "user", parts: [{ text: "why is the alert firing?" }] }])
    expect(body.generationConfig).toMatchObject({ temperature: 0.2, maxOutputTokens: 100, stopSequences: ["\n\n"] })
    // Usage is Gemini's, mapped to Ollama's counters.
    const promptTokens = Math.ceil("You are the alert triage assistant.\nwhy is the alert firing?".length / 4)
    expect(answer.prompt_eval_count).toBe(promptTokens)
    expect(answer.eval_count).toBe(4)

    const events = await gw.runEvents(traceId)
    const types = events.map((e) => e.type)
    expect(types.indexOf("PaidFallbackRequested")).toBeGreaterThan(types.lastIndexOf("AttemptFailed"))
    expect(types.slice(types.indexOf("PaidFallbackRequested"))).toEqual([
      "PaidFallbackRequested", "BudgetReserved", "AttemptStarted", "BudgetSettled", "AttemptSucceeded", "RunCompleted"
    ])
    expect(one(events, "PaidFallbackRequested").reason).toBe("all Ollama endpoints failed: gcp-a timeout, gcp-b error, 111 down")
    const reserved = one(events, "BudgetReserved")
    expect(reserved.provider).toBe("gemini")
    // Worst case: the prompt bounded by its bytes (+ framing) at the input price, num_predict at the output price.
    expect(reserved.maxOutputTokens).toBe(100)
    close(reserved.amountUsd as number, (reserved.inputTokensEstimate as number) * GEMINI_IN + 100 * GEMINI_OUT)
    expect(one(events, "AttemptStarted", (d) => d.tier === "paid")).toMatchObject({ provider: "gemini", model: "gemini-2.5-flash" })
    const cost = promptTokens * GEMINI_IN + 4 * GEMINI_OUT
    const settled = one(events, "BudgetSettled")
    expect(settled).toMatchObject({ reservationId: reserved.reservationId, usageKnown: true, inputTokens: promptTokens, outputTokens: 4 })
    close(settled.costUsd as number, cost)
    const completed = one(events, "RunCompleted")
    expect(completed).toMatchObject({ providerTier: "paid", endpoint: "gemini", model: "gemini-2.5-flash", inputTokens: promptTokens, outputTokens: 4 })
    expect(completed.fallbackReason).toBe("all Ollama endpoints failed: gcp-a timeout, gcp-b error, 111 down")
    close(completed.costUsd as number, cost)
    const row = await ledgerRow(reserved.reservationId as string)
    expect(row?.status).toBe("settled")
    close(row!.settled!, cost)
  })

  it("a streaming chat comes back as Ollama NDJSON with a final done chunk and counters", async () => {
    const traceId = newTraceId()
    const before = gemini.requests.length
    const parts = await collect(await gw.ollama(headers(traceId, failingLane)).chat({
      model: "gemma3:4b",
      messages: [
        { role: "system", content: "Be brief." },
        { role: "user", content: "status?", images: ["iVBORw0KGgoAAAANSUhEUg=="] },
        { role: "assistant", content: "checking" },
        { role: "user", content: "and now?" }
      ],
      format: "json",
      stream: true
    }))
    expect(parts.length).toBeGreaterThan(2)
    expect(parts.map((p) => p.message.content).join("")).toBe("[gemini] hello from gemini")
    expect(parts.slice(0, -1).every((p) => p.done === false)).toBe(true)
    const last = parts.at(-1)!
    expect(last).toMatchObject({ done: true, done_reason: "stop", eval_count: 4, message: { role: "assistant", content: "" } })
    expect(last.prompt_eval_count).toBeGreaterThan(0)
    const sent = gemini.requests.slice(before)
    expect(sent).toHaveLength(1)
    expect(sent[0]!.stream).toBe(true)
    expect(sent[0]!.body).toMatchObject({
      systemInstruction: { parts: [{ text: "Be brief." }] },
      contents: [
        { role: "user", parts: [{ text: "status?" }, { inlineData: { mimeType: "image/png", data: "iVBORw0KGgoAAAANSUhEUg==" } }] },
        { role: "model", parts: [{ text: "checking" }] },
        { role: "user", parts: [{ text: "and now?" }] }
      ],
      generationConfig: { responseMimeType: "application/json", maxOutputTokens: 256 }
    })

    const events = await gw.runEvents(traceId)
    const completed = one(events, "RunCompleted")
    expect(completed).toMatchObject({ providerTier: "paid", endpoint: "gemini", outputTokens: 4 })
    const settled = one(events, "BudgetSettled")
    close(settled.costUsd as number, (last.prompt_eval_count as number) * GEMINI_IN + 4 * GEMINI_OUT)
    expect((await ledgerRow(settled.reservationId as string))?.status).toBe("settled")
  })

  it("Gemini failing → Claude answers (non-streaming); Gemini's reservation is released, Claude's settled", async () => {
    gemini.setMode("error500")
    const traceId = newTraceId()
    const before = claude.requests.length
    const answer = await gw.ollama(headers(traceId, failingLane)).generate({
      model: "gemma3:4b",
      system: "sys",
      prompt: "why?",
      format: { type: "object", properties: { cause: { type: "string" } } },
      options: { temperature: 1.7, num_predict: 2, stop: ["END"] }
    })
    // num_predict 2 cuts Claude's answer: max_tokens → Ollama's "length".
    expect(answer.response).toBe("[claude] hello ")
    expect(answer.done_reason).toBe("length")
    const sent = claude.requests.slice(before)
    expect(sent).toHaveLength(1)
    expect(sent[0]!.version).toBe("2023-06-01")
    expect(sent[0]!.body).toMatchObject({
      model: "claude-haiku-4-5",
      max_tokens: 2,
      temperature: 1,
      stop_sequences: ["END"],
      messages: [{ role: "user", content: [{ type: "text", text: "why?" }] }]
    })
    expect(String((sent[0]!.body as { system?: unknown }).system)).toMatch(/^sys\n\nRespond with one valid JSON value only, matching this JSON schema/)

    const events = await gw.runEvents(traceId)
    const failed = one(events, "AttemptFailed", (d) => d.provider === "gemini")
    expect(failed).toMatchObject({ kind: "server-error", status: 500 })
    const geminiReservation = one(events, "BudgetReserved", (d) => d.provider === "gemini")
    const claudeReservation = one(events, "BudgetReserved", (d) => d.provider === "claude")
    expect(one(events, "BudgetReleased").reservationId).toBe(geminiReservation.reservationId)
    expect(one(events, "BudgetSettled").reservationId).toBe(claudeReservation.reservationId)
    expect((await ledgerRow(geminiReservation.reservationId as string))?.status).toBe("released")
    const completed = one(events, "RunCompleted")
    expect(completed).toMatchObject({ providerTier: "paid", endpoint: "claude", model: "claude-haiku-4-5", outputTokens: 2 })
    expect(completed.inputTokens).toBeGreaterThan(0)
    close(completed.costUsd as number, (completed.inputTokens as number) * CLAUDE_IN + 2 * CLAUDE_OUT)
  })

  it("Gemini failing → Claude answers a stream (SSE → NDJSON)", async () => {
    gemini.setMode("error429")
    const traceId = newTraceId()
    const parts = await collect(await gw.ollama(headers(traceId, failingLane)).generate({ model: "gemma3:4b", prompt: "why?", stream: true }))
    expect(parts.map((p) => p.response).join("")).toBe("[claude] hello from claude")
    expect(parts.at(-1)).toMatchObject({ done: true, done_reason: "stop", eval_count: 4 })
    const events = await gw.runEvents(traceId)
    expect(one(events, "AttemptFailed", (d) => d.provider === "gemini").kind).toBe("rate-limited")
    expect(one(events, "RunCompleted")).toMatchObject({ endpoint: "claude", providerTier: "paid" })
  })

  it("both providers failing → 503 naming every failure; nothing stays reserved", async () => {
    gemini.setMode("error500")
    claude.setMode("overloaded")
    const traceId = newTraceId()
    const error = await thrown(gw.ollama(headers(traceId)).generate({ model: "gemma3:4b", prompt: "why?" }))
    expect(error.status_code).toBe(503)
    expect(error.error).toMatch(/no paid provider could serve the request: all Ollama endpoints failed: gcp-a timeout, gcp-b error, 111 down; gemini server-error: 500: .*; claude server-error: 529: Overloaded/)
    const events = await gw.runEvents(traceId)
    expect(events.filter((e) => e.type === "BudgetReleased")).toHaveLength(2)
    expect(events.filter((e) => e.type === "BudgetSettled")).toHaveLength(0)
    const open = await gw.query<{ n: number }>(`SELECT count(*)::int AS n FROM budget_ledger WHERE status = 'reserved'`)
    expect(open[0]!.n).toBe(0)
  })

  it("a provider that reports no usage: cost unknown (null, never 0), the worst case is charged", async () => {
    gemini.setMode("noUsage")
    const traceId = newTraceId()
    const answer = await gw.ollama(headers(traceId, failingLane)).generate({ model: "gemma3:4b", prompt: "why?" })
    expect(answer.response).toBe("[gemini] hello from gemini")
    expect(answer.eval_count).toBeUndefined()
    const events = await gw.runEvents(traceId)
    const completed = one(events, "RunCompleted")
    expect(completed.costUsd).toBeNull()
    expect(completed.inputTokens).toBeNull()
    const settled = one(events, "BudgetSettled")
    expect(settled.costUsd).toBeNull()
    expect(settled.usageKnown).toBe(false)
    expect(settled.chargedUsd).toBe(one(events, "BudgetReserved").amountUsd)
  })

  it("a failure after the first token ends the stream with an error line, charged at the worst case", async () => {
    claude.setMode("midStreamError")
    gemini.setMode("error500")
    const traceId = newTraceId()
    const error = await thrown(collect(await gw.ollama(headers(traceId, failingLane)).chat({ model: "gemma3:4b", messages: [{ role: "user", content: "hi" }], stream: true })))
    expect(String(error.message)).toMatch(/claude failed mid-stream/)
    const events = await gw.runEvents(traceId)
    expect(one(events, "AttemptFailed", (d) => d.provider === "claude").afterFirstChunk).toBe(true)
    expect(one(events, "RunFailed").error).toBe("StreamBroken")
    const settled = one(events, "BudgetSettled")
    expect(settled.usageKnown).toBe(false)
    expect((await ledgerRow(settled.reservationId as string))?.status).toBe("settled")
  })
})

describe("a caller that hangs up mid-stream", () => {
  it("the call is settled once, at the worst case (tokens were produced), and the run ends 499", async () => {
    gemini.setMode("stallAfterFirst")
    const traceId = newTraceId()
    const abort = new AbortController()
    const res = await fetch(`${gw.url}/api/generate`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers(traceId, failingLane) },
      body: JSON.stringify({ model: "gemma3:4b", prompt: "why?", stream: true }),
      signal: abort.signal
    })
    const reader = res.body!.getReader()
    const first = new TextDecoder().decode((await reader.read()).value)
    expect(JSON.parse(first.split("\n")[0]!)).toMatchObject({ response: "[gemini] ", done: false })
    abort.abort()
    const events = await gw.runEvents(traceId)
    expect(one(events, "RunFailed")).toMatchObject({ status: 499, error: "ClientAborted" })
    const settled = one(events, "BudgetSettled")
    expect(settled).toMatchObject({ usageKnown: false, costUsd: null })
    expect(settled.chargedUsd).toBe(one(events, "BudgetReserved").amountUsd)
    const row = await ledgerRow(settled.reservationId as string)
    expect(row?.status).toBe("settled")
    close(row!.settled!, settled.chargedUsd as number)
    await new Promise((r) => setTimeout(r, 100))
    expect(gemini.inFlight()).toBe(0) // the upstream request was aborted too
  })
})

describe("cost on every request", () => {
  it("Ollama answers cost 0 unless the config prices the lane's model", async () => {
    const free = newTraceId()
    const a = await gw.ollama(headers(free, "free")).generate({ model: "gemma3:4b", prompt: "hi" })
    expect(a.eval_count).toBeGreaterThan(0)
    expect(one(await gw.runEvents(free), "RunCompleted")).toMatchObject({ providerTier: "ollama", endpoint: "gpu-node", costUsd: 0 })

    const priced = newTraceId()
    const b = await gw.ollama(headers(priced, "priced")).generate({ model: "qwen2.5-coder:7b", prompt: "review this" })
    const completed = one(await gw.runEvents(priced), "RunCompleted")
    expect(completed).toMatchObject({ providerTier: "ollama", inputTokens: b.prompt_eval_count, outputTokens: b.eval_count })
    close(completed.costUsd as number, b.prompt_eval_count * 0.10e-6 + b.eval_count * 0.20e-6)
  })
})

describe("paid-emergency lane", () => {
  it("calls the providers directly: no Ollama host sees the request", async () => {
    const traceId = newTraceId()
    const ollamaBefore = Object.values(gw.fakes).map((f) => f.requests.filter((r) => r.method === "POST").length)
    const answer = await gw.ollama(headers(traceId, "paid-emergency")).chat({ model: "anything", messages: [{ role: "user", content: "help" }] })
    expect(answer.message.content).toBe("[gemini] hello from gemini")
    expect(Object.values(gw.fakes).map((f) => f.requests.filter((r) => r.method === "POST").length)).toEqual(ollamaBefore)
    const events = await gw.runEvents(traceId)
    expect(one(events, "PaidFallbackRequested")).toMatchObject({ direct: true, reason: "lane paid-emergency calls paid providers directly (no Ollama route)" })
    expect(one(events, "RunCompleted")).toMatchObject({ providerTier: "paid", endpoint: "gemini" })
  })

  it("a load request costs nothing and calls nobody", async () => {
    const before = gemini.requests.length
    const res = await gw.post("/api/generate", { model: "gemini-2.5-flash", stream: false }, headers(newTraceId(), "paid-emergency"))
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ done: true, done_reason: "load" })
    expect(gemini.requests.length).toBe(before)
  })
})

describe("the operator's hard kill", () => {
  const admin = (body: unknown, token: string | null = ADMIN_TOKEN) =>
    fetch(`${gw.url}/awooop/admin/budget/hard-kill`, {
      method: "POST",
      headers: { "content-type": "application/json", ...(token === null ? {} : { authorization: `Bearer ${token}` }) },
      body: JSON.stringify(body)
    })

  it("401 without the bearer token or with a wrong one", async () => {
    const missing = await admin({ tripped: true, reason: "x" }, null)
    expect(missing.status).toBe(401)
    expect((await missing.json() as { error: string }).error).toMatch(/missing bearer token/)
    const wrong = await admin({ tripped: true, reason: "x" }, "not-the-token")
    expect(wrong.status).toBe(401)
    const status = await fetch(`${gw.url}/awooop/admin/budget`)
    expect(status.status).toBe(401)
    const state = await gw.query<{ tripped: boolean }>(`SELECT tripped FROM budget_state`)
    expect(state[0]!.tripped).toBe(false)
  })

  it("tripped: fallbacks are refused with 503 naming the hard kill and no provider is called; reset: they flow again", async () => {
    const tripped = await admin({ tripped: true, reason: "incident 2026-05-05: stop paid spend" })
    expect(tripped.status).toBe(200)
    expect(await tripped.json()).toMatchObject({ hardKill: { tripped: true, reason: "incident 2026-05-05: stop paid spend" }, capUsd: 5 })

    const before = gemini.requests.length + claude.requests.length
    const traceId = newTraceId()
    const error = await thrown(gw.ollama(headers(traceId, failingLane)).generate({ model: "gemma3:4b", prompt: "why?" }))
    expect(error.status_code).toBe(503)
    expect(error.error).toMatch(/refused by the budget hard kill: the operator tripped the budget hard kill \(incident 2026-05-05: stop paid spend\)/)
    expect(gemini.requests.length + claude.requests.length).toBe(before)
    const events = await gw.runEvents(traceId)
    expect(one(events, "BudgetDenied")).toMatchObject({ provider: "gemini", operatorKill: true })
    expect(events.some((e) => e.type === "BudgetReserved")).toBe(false)

    const budgetStream = await gw.streamEvents("budget")
    expect(budgetStream.map((e) => e.type)).toContain("HardKillTripped")

    const reset = await admin({ tripped: false, reason: "incident over" })
    expect(reset.status).toBe(200)
    const answer = await gw.ollama(headers(newTraceId(), failingLane)).generate({ model: "gemma3:4b", prompt: "why?" })
    expect(answer.response).toBe("[gemini] hello from gemini")
    expect((await gw.streamEvents("budget")).map((e) => e.type).slice(-2)).toEqual(["HardKillTripped", "HardKillReset"])
  })
})

describe("fail closed", () => {
  it("budget ledger unreachable → 503, and no provider is called", async () => {
    await gw.query(`ALTER TABLE budget_ledger RENAME TO budget_ledger_away`)
    try {
      const before = gemini.requests.length + claude.requests.length
      const traceId = newTraceId()
      const error = await thrown(gw.ollama(headers(traceId, failingLane)).generate({ model: "gemma3:4b", prompt: "why?" }))
      expect(error.status_code).toBe(503)
      expect(error.error).toMatch(/the budget ledger is unreachable, so the budget hard kill cannot be checked \(fail closed\)/)
      expect(gemini.requests.length + claude.requests.length).toBe(before)
      expect(one(await gw.runEvents(traceId), "BudgetDenied").failClosed).toBe(true)
    } finally {
      await gw.query(`ALTER TABLE budget_ledger_away RENAME TO budget_ledger`)
    }
  })
})

describe("secrets", () => {
  it("the API keys never appear in any journal row, ledger row or log line — even when an upstream echoes the key", async () => {
    gemini.setMode("echoKey")
    const traceId = newTraceId()
    const answer = await gw.ollama(headers(traceId, failingLane)).generate({ model: "gemma3:4b", prompt: "why?" })
    expect(answer.response).toBe("[claude] hello from claude")
    const failed = one(await gw.runEvents(traceId), "AttemptFailed", (d) => d.provider === "gemini")
    expect(failed.message).toMatch(/internal error while serving key \[REDACTED\]/)
    // The fake really received the key (so the checks below could fail).
    expect(gemini.requests.some((r) => r.apiKey === GEMINI_KEY)).toBe(true)
    expect(claude.requests.some((r) => r.apiKey === CLAUDE_KEY)).toBe(true)

    for (const key of [GEMINI_KEY, CLAUDE_KEY]) {
      const journal = await gw.query<{ n: number }>(`SELECT count(*)::int AS n FROM step_journal t WHERE row_to_json(t)::text LIKE '%' || $1 || '%'`, [key])
      expect(journal[0]!.n).toBe(0)
      const ledger = await gw.query<{ n: number }>(`SELECT count(*)::int AS n FROM budget_ledger t WHERE row_to_json(t)::text LIKE '%' || $1 || '%'`, [key])
      expect(ledger[0]!.n).toBe(0)
      expect(printed.filter((line) => line.includes(key))).toEqual([])
    }
    const total = await gw.query<{ n: number }>(`SELECT count(*)::int AS n FROM step_journal`)
    expect(total[0]!.n).toBeGreaterThan(20)
    expect(printed.length).toBeGreaterThan(0)
  })
})
