/**
 * The journal event catalogue (domain/Events.ts) holds everything the gateway writes: one gateway
 * goes through a success, a failover, timeouts that open a breaker, a refused host, a mid-stream
 * break, paid fallback and a direct paid lane (budget reserved and settled), a budget hard kill
 * tripped and reset, an async run, a shadow decision, a maintenance window, a lane switched to shadow
 * and back, and keep-warm; then every
 * row of its step_journal — and the events that end runs from outside (shutdown, orphans) — is
 * decoded with the catalogue. An unknown type or data that does not match its schema fails the test,
 * so a writer that drifts from the catalogue is caught here.
 */
import { freePort } from "./support/FreePort.ts"
import { randomUUID } from "node:crypto"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { decodeEvent, eventTypes, type UnknownEvent } from "../src/domain/Events.ts"
import { closingEvents } from "../src/journal/Journal.ts"
import { type FakeGemini, startFakeGemini } from "./support/FakeGemini.ts"
import { collect, defaultLanes, newTraceId, startTestDatabase, startTestGateway, type TestDatabaseHandle, type TestGateway } from "./support/TestGateway.ts"

const GEMINI_KEY = `gem-test-key-${randomUUID()}`
const ADMIN_TOKEN = `admin-${randomUUID()}`

let db: TestDatabaseHandle
let gemini: FakeGemini
let gw: TestGateway
let closedPort: string
const previousToken = process.env.AWOOOP_ADMIN_TOKEN

beforeAll(async () => {
  process.env.AWOOOP_TEST_CATALOGUE_GEMINI_KEY = GEMINI_KEY
  process.env.AWOOOP_ADMIN_TOKEN = ADMIN_TOKEN
  db = await startTestDatabase()
  gemini = await startFakeGemini({ apiKey: GEMINI_KEY })
  closedPort = `http://127.0.0.1:${await freePort()}`
  gw = await startTestGateway({
    database: db,
    hosts: { dead: { slots: 2, url: closedPort } },
    lanes: {
      "alert-fast": { ...defaultLanes["alert-fast"], keepWarm: ["gcp-b"] },
      "with-fallback": { model: "gemma3:4b", route: [{ host: "dead", timeout: "300ms" }], paidFallback: ["gemini"] },
      "paid-emergency": { paid: ["gemini"] }
    },
    breaker: { consecutiveTimeouts: 2, cooldown: "30s" },
    extra: {
      providers: {
        gemini: { kind: "gemini", model: "gemini-2.5-flash", apiKeyEnv: "AWOOOP_TEST_CATALOGUE_GEMINI_KEY", baseUrl: gemini.url, timeout: "2s", maxOutputTokens: 256 }
      },
      prices: { "gemini-2.5-flash": { input: 0.30, output: 2.50 } },
      budget: { hardKillUsd: 5, period: "day" }
    }
  })
}, 30_000)

afterAll(async () => {
  await gw?.close()
  await gemini?.stop()
  await db?.close()
  if (previousToken === undefined) delete process.env.AWOOOP_ADMIN_TOKEN
  else process.env.AWOOOP_ADMIN_TOKEN = previousToken
})

const generate = async (lane: string, prompt: string, extra: Record<string, string> = {}) => {
  const traceId = newTraceId()
  const res = await gw.post("/api/generate", { model: "gemma3:4b", prompt, stream: false }, { "x-awooop-lane": lane, "x-awooop-trace-id": traceId, ...extra })
  await res.arrayBuffer()
  // A shadowed request is decided, not run: no run to wait for.
  if (extra["x-awooop-shadow"] === undefined) await gw.runEvents(traceId)
  return res.status
}

const admin = (path: string, body: unknown) =>
  fetch(`${gw.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${ADMIN_TOKEN}` },
    body: JSON.stringify(body)
  })

const laneMode = (method: "PUT" | "DELETE", body: unknown) =>
  fetch(`${gw.url}/awooop/admin/lanes/code-review/mode`, {
    method,
    headers: { "content-type": "application/json", authorization: `Bearer ${ADMIN_TOKEN}` },
    body: JSON.stringify(body)
  })

const waitForAsync = async (runId: string) => {
  const deadline = Date.now() + 10_000
  for (;;) {
    const body = (await (await fetch(`${gw.url}/awooop/runs/${runId}`)).json()) as { status: string }
    if (body.status === "succeeded" || body.status === "failed") return body.status
    if (Date.now() > deadline) throw new Error(`async run ${runId} still ${body.status}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** Rows the catalogue does not hold, as "type: why". */
const undecodable = (rows: ReadonlyArray<{ readonly type: string; readonly data: unknown }>): Array<string> =>
  rows.flatMap((row) => {
    const event = decodeEvent(row.type, row.data)
    return event._tag === "UnknownEvent" ? [`${row.type}: ${(event as UnknownEvent).invalid ?? "not in the catalogue"}`] : []
  })

describe("the journal event catalogue", () => {
  it("decodes every row a gateway journals through success, failover, breaker, paid, budget, async, shadow, maintenance, lane modes and keep-warm", async () => {
    expect(await generate("alert-fast", "a success")).toBe(200)
    gw.fakes["gcp-a"]!.setMode("error500")
    expect(await generate("alert-fast", "a failover")).toBe(200)
    gw.fakes["gcp-a"]!.setMode("hang")
    await generate("alert-fast", "slow 1")
    await generate("alert-fast", "slow 2")
    gw.fakes["gcp-a"]!.setMode("ok")
    expect(await generate("alert-fast", "the breaker is open")).toBe(200)

    // A stream that breaks after its first chunk.
    gw.fakes["111"]!.setMode("resetMidStream")
    const traceId = newTraceId()
    await collect(await gw.ollama({ "x-awooop-lane": "code-review", "x-awooop-trace-id": traceId }).generate({ model: "qwen2.5-coder:7b", prompt: "stream", stream: true })).catch(() => [])
    await gw.runEvents(traceId)
    gw.fakes["111"]!.setMode("ok")

    expect(await generate("with-fallback", "every host refused: pay")).toBe(200)
    expect(await generate("paid-emergency", "paid directly")).toBe(200)
    expect((await admin("/awooop/admin/budget/hard-kill", { tripped: true, reason: "catalogue test" })).status).toBe(200)
    expect(await generate("with-fallback", "refused by the hard kill")).toBe(503)
    expect((await admin("/awooop/admin/budget/hard-kill", { tripped: false, reason: "done" })).status).toBe(200)

    const submitted = await gw.post("/awooop/runs", { model: "qwen2.5:14b", prompt: "deep dive" }, { "x-awooop-lane": "deep-rca" })
    expect(submitted.status).toBe(202)
    expect(await waitForAsync(((await submitted.json()) as { runId: string }).runId)).toBe("succeeded")

    expect(await generate("alert-fast", "shadow me", { "x-awooop-shadow": "1", "x-awooop-legacy-endpoint": "http://gcp-b:11434" })).toBe(202)
    expect((await admin("/awooop/admin/hosts/gcp-a/maintenance", { open: true, reason: "reindex", until: new Date(Date.now() + 60_000).toISOString() })).status).toBe(200)
    expect((await admin("/awooop/admin/hosts/gcp-a/maintenance", { open: false, reason: "done early" })).status).toBe(200)
    expect((await laneMode("PUT", { mode: "shadow", reason: "rollback" })).status).toBe(200)
    expect((await laneMode("DELETE", { reason: "back to the config" })).status).toBe(200)
    await gw.pollHosts()

    const rows = await gw.query<{ type: string; data: unknown }>("SELECT type, data FROM step_journal ORDER BY global_position")
    expect(undecodable(rows)).toEqual([])
    const seen = new Set(rows.map((r) => r.type))
    const expected = [
      "RunStarted", "RouteDecided", "AttemptStarted", "AttemptFailed", "AttemptSucceeded", "RunCompleted", "RunFailed",
      "PaidFallbackRequested", "BudgetReserved", "BudgetSettled", "BudgetDenied", "RunDequeued",
      "BreakerOpened", "HostUp", "HostDown", "ResidencyChanged", "MaintenanceOpened", "MaintenanceClosed", "KeepWarmLoaded",
      "HardKillTripped", "HardKillReset", "ShadowDecided", "LaneModeChanged"
    ]
    expect(expected.filter((t) => !seen.has(t))).toEqual([])
  }, 60_000)

  it("decodes the events that end runs from outside (a shutdown, an orphan)", () => {
    const run = { streamId: "run-x", traceId: null, projectId: null, lane: "alert-fast", startedAt: 0, next: 3, attempts: new Set([1, 2]) }
    const rows = [
      ...closingEvents(run, 10, { status: 503, error: "ShuttingDown", message: "the gateway shut down before the run ended", shutdown: true }),
      ...closingEvents(run, 10, { status: 500, error: "Orphaned", message: "stopped", orphaned: true, instance: null })
    ]
    expect(rows.map((r) => r.type)).toEqual(["AttemptFailed", "AttemptFailed", "RunFailed", "AttemptFailed", "AttemptFailed", "RunFailed"])
    expect(undecodable(rows)).toEqual([])
  })

  it("keeps an unknown type or a malformed event raw instead of failing", () => {
    expect(decodeEvent("FromALaterGateway", { x: 1 })).toEqual({ _tag: "UnknownEvent", type: "FromALaterGateway", data: { x: 1 }, invalid: null })
    const broken = decodeEvent("HostUp", { host: "gcp-a" })
    expect(broken._tag).toBe("UnknownEvent")
    expect((broken as UnknownEvent).invalid).toContain("latencyMs")
    expect(decodeEvent("HostUp", { host: "gcp-a", latencyMs: 3 })).toEqual({ _tag: "HostUp", host: "gcp-a", latencyMs: 3 })
    expect(eventTypes).toContain("ShadowDecided")
  })
})
