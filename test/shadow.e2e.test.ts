/**
 * Shadow mode (runbook stage 2) and per-lane activation (stages 3–4), end to end: mirrored requests
 * are decided by plan() against the live host view, answered 202 at once, never sent to a host (the
 * fakes' request logs prove it), and journaled; the report's figures match what was sent.
 */
import { Effect } from "effect"
import { Ollama } from "ollama"
import OpenAI from "openai"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Journal } from "../src/journal/Journal.ts"
import { newTraceId, startTestGateway, type TestGateway } from "./support/TestGateway.ts"

let gw: TestGateway
beforeAll(async () => {
  gw = await startTestGateway({
    lanes: {
      // Stage 3: code review still on the legacy path, only decided here.
      "code-review": {
        model: "qwen2.5-coder:7b",
        mode: "shadow",
        route: [{ host: "111", timeout: "300ms" }, { host: "gcp-b", timeout: "300ms", when: "unavailable" }]
      },
      big: { model: "qwen2.5:14b", route: [{ host: "gcp-a", timeout: "1s" }, { host: "gcp-b", timeout: "1s" }] }
    }
  })
})
afterAll(() => gw?.close())

const inferencePosts = () =>
  Object.fromEntries(Object.entries(gw.fakes).map(([name, f]) => [name, f.requests.filter((r) => r.method === "POST").length]))

const mirror = async (
  lane: string | null,
  legacy: { endpoint?: string; model?: string },
  options: { shadowHeader?: boolean; path?: string; body?: Record<string, unknown> } = {}
) => {
  const traceId = newTraceId()
  const headers: Record<string, string> = { "x-awooop-trace-id": traceId }
  if (lane !== null) headers["x-awooop-lane"] = lane
  if (options.shadowHeader ?? true) headers["x-awooop-shadow"] = "1"
  if (legacy.endpoint !== undefined) headers["x-awooop-legacy-endpoint"] = legacy.endpoint
  if (legacy.model !== undefined) headers["x-awooop-legacy-model"] = legacy.model
  const started = performance.now()
  const res = await gw.post(options.path ?? "/api/generate", options.body ?? { model: "gemma3:4b", prompt: "shadow: why is the alert firing?" }, headers)
  const ms = performance.now() - started
  return { res, body: (await res.json()) as Record<string, unknown>, traceId, ms }
}

describe("shadow decisions", () => {
  it("are answered 202 at once, reach no host, and are journaled with both choices and their agreement", async () => {
    const before = inferencePosts()
    const gcpA = gw.fakes["gcp-a"]!.url
    const gcpB = gw.fakes["gcp-b"]!.url
    const host111 = gw.fakes["111"]!.url

    const sent = [
      await mirror("alert-fast", { endpoint: gcpA }), // agree (by URL)
      await mirror("alert-fast", { endpoint: "gcp-a" }), // agree (by name)
      await mirror("alert-fast", { endpoint: gcpB }), // endpoint
      await mirror("alert-fast", { endpoint: gcpA, model: "gemma3:12b" }), // model
      await mirror("alert-fast", {}), // nothing to compare
      await mirror("alert-fast", { endpoint: "http://unknown-host.internal:11434" }), // legacy-endpoint-unknown
      // A legacy caller: no AwoooP headers but the mirror's; bootstrap rules pick the lane and project.
      await mirror(null, { endpoint: gcpA }),
      // Lanes in shadow mode need no header.
      await mirror("code-review", { endpoint: host111 }, { shadowHeader: false, path: "/api/chat", body: { model: "qwen2.5-coder:7b", messages: [{ role: "user", content: "review" }] } }),
      await mirror("code-review", { endpoint: gcpB }, { shadowHeader: false, path: "/api/chat", body: { model: "qwen2.5-coder:7b", messages: [{ role: "user", content: "review" }], stream: true } }),
      // The legacy path sent a 14B model to protected gcp-a: the gateway would have refused it.
      await mirror("big", { endpoint: gcpA }, { body: { model: "qwen2.5:14b", prompt: "rca" } })
    ]
    for (const s of sent) {
      expect(s.res.status, JSON.stringify(s.body)).toBe(202)
      expect(s.body.shadow).toBe(true)
      expect(s.res.headers.get("x-awooop-trace-id")).toBe(s.traceId)
    }
    expect(sent.map((s) => s.body.agree), JSON.stringify(sent[0]!.body.gateway)).toEqual([true, true, false, false, null, false, true, true, false, false])
    expect(sent[0]!.body.gateway).toMatchObject({ host: "gcp-a", model: "gemma3:4b", attempts: ["gcp-a", "gcp-b", "111"] })
    expect(sent[2]!.body.reasons).toEqual([{ kind: "endpoint", text: "the gateway picks gcp-a, legacy used gcp-b" }])
    expect(sent[9]!.body.gateway).toMatchObject({ host: null, attempts: [] })
    expect((sent[9]!.body.reasons as Array<{ kind: string }>).map((r) => r.kind)).toEqual(["heavy-model-denied"])

    // Not one request reached a host.
    expect(inferencePosts()).toEqual(before)
    for (const fake of Object.values(gw.fakes)) {
      expect(fake.requests.filter((r) => JSON.stringify(r.body ?? "").includes("shadow: why"))).toEqual([])
    }

    // Journaled on the caller's trace, with the legacy caller put on project awoooi.
    const legacyEvents = await gw.run(Effect.flatMap(Journal, (journal) => Effect.zipRight(journal.flush, journal.readTrace(sent[6]!.traceId))))
    expect(legacyEvents).toHaveLength(1)
    expect(legacyEvents[0]).toMatchObject({ type: "ShadowDecided", projectId: "awoooi", lane: "alert-fast" })
    expect(legacyEvents[0]!.streamId).toMatch(/^shadow-/)
    expect(legacyEvents[0]!.data).toMatchObject({ via: "header", legacyCaller: true, agree: true, legacy: { host: "gcp-a", model: "gemma3:4b" } })
    const laneMode = (await gw.query<{ data: { via: string } }>(
      "SELECT data FROM step_journal WHERE trace_id = $1", [sent[7]!.traceId]
    ))[0]!
    expect(laneMode.data.via).toBe("lane")
  })

  it("the shadow report's agreement figures match the requests sent", async () => {
    const res = await fetch(`${gw.url}/awooop/shadow/report`)
    expect(res.status).toBe(200)
    const report = (await res.json()) as { lanes: Array<Record<string, unknown>> }
    expect(report.lanes).toEqual([
      {
        lane: "alert-fast",
        decisions: 7,
        compared: 6,
        agreed: 3,
        disagreed: 3,
        agreement: 0.5,
        disagreementsByReason: { endpoint: 1, model: 1, "legacy-endpoint-unknown": 1 }
      },
      { lane: "big", decisions: 1, compared: 1, agreed: 0, disagreed: 1, agreement: 0, disagreementsByReason: { "heavy-model-denied": 1 } },
      { lane: "code-review", decisions: 2, compared: 2, agreed: 1, disagreed: 1, agreement: 0.5, disagreementsByReason: { endpoint: 1 } }
    ])
    const one = (await (await fetch(`${gw.url}/awooop/shadow/report?lane=code-review&since=1h`)).json()) as { lanes: Array<{ lane: string }> }
    expect(one.lanes.map((l) => l.lane)).toEqual(["code-review"])
    const future = (await (await fetch(`${gw.url}/awooop/shadow/report?since=${new Date(Date.now() + 60_000).toISOString()}`)).json()) as { lanes: unknown[] }
    expect(future.lanes).toEqual([])
    expect((await fetch(`${gw.url}/awooop/shadow/report?since=yesterday`)).status).toBe(400)
    expect((await fetch(`${gw.url}/awooop/shadow/report?lanes=x`)).status).toBe(400)
  })

  it("the real ollama client, mirrored: 202 with the decision, and nothing executed", async () => {
    const before = inferencePosts()
    const ollama = new Ollama({ host: gw.url, headers: { "X-AwoooP-Shadow": "1", "X-AwoooP-Legacy-Endpoint": "gcp-a", "X-AwoooP-Lane": "alert-fast" } })
    const answer = await ollama.generate({ model: "gemma3:4b", prompt: "mirrored" }) as unknown as Record<string, unknown>
    expect(answer).toMatchObject({ shadow: true, agree: true, gateway: { host: "gcp-a" } })
    expect(inferencePosts()).toEqual(before)
  })

  it("a lane in shadow mode never executes through the OpenAI routes either", async () => {
    const before = inferencePosts()
    const openai = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: "unused", maxRetries: 0, defaultHeaders: { "x-awooop-lane": "code-review", "x-awooop-legacy-endpoint": "111" } })
    const answer = await openai.chat.completions.create({ model: "qwen2.5-coder:7b", messages: [{ role: "user", content: "review" }] }) as unknown as Record<string, unknown>
    expect(answer).toMatchObject({ shadow: true, via: "lane", agree: true, gateway: { host: "111" } })
    expect(inferencePosts()).toEqual(before)
  })

  it("an active lane without the header runs as usual; a shadow-mode lane refuses async runs (409)", async () => {
    const generates = () => gw.fakes["gcp-a"]!.requests.filter((r) => r.method === "POST" && r.path === "/api/generate").length
    const before = generates()
    const res = await gw.post("/api/generate", { model: "gemma3:4b", prompt: "real", stream: false }, { "x-awooop-lane": "alert-fast" })
    expect(res.status).toBe(200)
    expect(generates()).toBe(before + 1)
    const run = await gw.post("/awooop/runs", { model: "qwen2.5-coder:7b", prompt: "x" }, { "x-awooop-lane": "code-review" })
    expect(run.status).toBe(409)
    expect(((await run.json()) as { error: string }).error).toContain("shadow mode")
  })
})
