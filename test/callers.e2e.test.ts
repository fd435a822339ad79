/**
 * Caller identity, end to end (issue 12 item 1): the `callers:` / `anonymous:` config, bearer keys
 * sent by the real `ollama` and `openai` clients, lanes and projects enforced per caller, the paid
 * budget gated per caller, the journal and cost keyed by the caller's name (never its key), and the
 * read API scoped to the caller's own project. Fails on the gateway before callers existed: every
 * request below would have been served, and the anonymous one would have spent money.
 */
import { FetchHttpClient } from "@effect/platform"
import { Effect, Either, LogLevel, Redacted } from "effect"
import { GatewayClient } from "awooop-inference-gateway/client"
import { createHash, randomUUID } from "node:crypto"
import Anthropic from "@anthropic-ai/sdk"
import OpenAI from "openai"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type FakeGemini, startFakeGemini } from "./support/FakeGemini.ts"
import { newTraceId, startTestGateway, type TestGateway, thrown } from "./support/TestGateway.ts"

const GEMINI_KEY = `gem-test-key-${randomUUID()}`
const ADMIN = `admin-${randomUUID()}`
const ALERTS_KEY = `alerts-${randomUUID()}`
/** The key being rotated in: both work during the overlap. */
const ALERTS_NEXT = `alerts-next-${randomUUID()}`
const OTHER_KEY = `other-${randomUUID()}`
const POOR_KEY = `poor-${randomUUID()}`
process.env.AWOOOP_TEST_CALLERS_GEMINI_KEY = GEMINI_KEY
process.env.AWOOOP_ADMIN_TOKEN = ADMIN
const sha = (s: string) => createHash("sha256").update(s).digest("hex")

// Everything the gateway prints, to prove no key reaches a log line.
const printed: Array<string> = []
const originals = { log: console.log, info: console.info, warn: console.warn, error: console.error, debug: console.debug }
for (const level of Object.keys(originals) as Array<keyof typeof originals>) {
  console[level] = (...args: Array<unknown>) => {
    printed.push(args.map((a) => (typeof a === "string" ? a : (() => { try { return JSON.stringify(a) } catch { return String(a) } })())).join(" "))
  }
}

let gemini: FakeGemini
let gw: TestGateway

beforeAll(async () => {
  gemini = await startFakeGemini({ apiKey: GEMINI_KEY })
  gw = await startTestGateway({
    logLevel: LogLevel.All,
    projections: { intervalMs: 50 },
    hosts: { "gcp-a": { slots: 4, protected: true, fake: { mode: "error500" } } },
    lanes: {
      "alert-fast": { model: "gemma3:4b", route: [{ host: "gcp-a", timeout: "1s" }], paidFallback: ["gemini"] },
      "paid-emergency": { paid: ["gemini"] },
      "code-review": { model: "qwen2.5-coder:7b", route: [{ host: "111", timeout: "2s" }] },
      "deep-rca": { model: "qwen2.5:14b", async: true, route: [{ host: "gpu-node", timeout: "2s" }] }
    },
    env: { AWOOOP_KEY_ALERTS: ALERTS_KEY, AWOOOP_KEY_POOR: POOR_KEY },
    extra: {
      providers: { gemini: { kind: "gemini", model: "gemini-2.5-flash", apiKeyEnv: "AWOOOP_TEST_CALLERS_GEMINI_KEY", baseUrl: gemini.url, timeout: "2s", maxOutputTokens: 256 } },
      prices: { "gemini-2.5-flash": { input: 0.30, output: 2.50 } },
      budget: { hardKillUsd: 5, period: "day" },
      callers: {
        "alerts-service": { keyEnv: "AWOOOP_KEY_ALERTS", keySha256: sha(ALERTS_NEXT), project: "awoooi", lanes: ["alert-fast", "paid-emergency"] },
        "other-team": { keySha256: sha(OTHER_KEY), project: "other", lanes: ["code-review", "deep-rca"] },
        // 256 output tokens at $2.50/M cost up to $0.00064: its own cap refuses before the global one.
        "poor-service": { keyEnv: "AWOOOP_KEY_POOR", project: "awoooi", lanes: ["paid-emergency"], budget: { hardKillUsd: 0.0005, period: "day" } }
      },
      anonymous: { project: "awoooi", lanes: ["alert-fast", "code-review"] }
    }
  })
}, 30_000)

afterAll(async () => {
  Object.assign(console, originals)
  await gw?.close()
  await gemini?.stop()
})

const bearer = (key: string) => ({ authorization: `Bearer ${key}` })
const lane = (name: string, traceId = newTraceId()) => ({ "x-awooop-lane": name, "x-awooop-trace-id": traceId })
const generate = { model: "gemma3:4b", prompt: "why is the alert firing?", stream: false } as const

describe("who may call", () => {
  it("no key on a lane anonymous may not use → 401; a key on a lane it may not use → 403 naming caller and lane; an unknown key → 401", async () => {
    const before = gemini.requests.length
    const anon = await thrown(gw.ollama(lane("paid-emergency")).generate(generate))
    expect(anon.status_code).toBe(401)
    expect(anon.error).toContain("lane paid-emergency needs an API key")

    const wrongLane = await thrown(gw.ollama({ ...lane("code-review"), ...bearer(ALERTS_KEY) }).generate({ ...generate, model: "qwen2.5-coder:7b" }))
    expect(wrongLane.status_code).toBe(403)
    expect(wrongLane.error).toContain("caller alerts-service may not use lane code-review")

    const unknown = await thrown(gw.ollama({ ...lane("alert-fast"), ...bearer("made-up-key") }).generate(generate))
    expect(unknown.status_code).toBe(401)
    expect(unknown.error).toContain("unknown API key")

    // The OpenAI surface takes the same key from the SDK's apiKey.
    const openai = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: OTHER_KEY, maxRetries: 0, defaultHeaders: lane("paid-emergency") })
    const refused = await openai.chat.completions.create({ model: "gemma3:4b", messages: [{ role: "user", content: "hi" }] }).catch((e: unknown) => e)
    expect(refused).toBeInstanceOf(OpenAI.PermissionDeniedError)
    expect((refused as Error).message).toContain("caller other-team may not use lane paid-emergency")
    // Nothing was spent on any refusal.
    expect(gemini.requests.length).toBe(before)
  })

  it("the typed client sends its apiKey; without one, the refusal is the tagged Unauthorized", async () => {
    const call = (apiKey: string | undefined) =>
      Effect.runPromise(Effect.flatMap(GatewayClient, (c) => c.generate({ model: "qwen2.5-coder:7b", prompt: "review" }, { lane: "code-review" })).pipe(
        Effect.provide(GatewayClient.layer({ baseUrl: gw.url, ...(apiKey === undefined ? {} : { apiKey: Redacted.make(apiKey) }) })),
        Effect.provide(FetchHttpClient.layer),
        Effect.either
      ))
    const ok = await call(OTHER_KEY)
    expect(Either.isRight(ok) && ok.right.response).toContain("hello")
    const refused = await call("made-up-key")
    expect(Either.isLeft(refused) && refused.left._tag).toBe("Unauthorized")
  })

  it("the anthropic client's apiKey (x-api-key) identifies the caller on /v1/messages", async () => {
    const client = (apiKey: string) => new Anthropic({ baseURL: gw.url, apiKey, maxRetries: 0, defaultHeaders: lane("code-review") })
    const ok = await client(OTHER_KEY).messages.create({ model: "qwen2.5-coder:7b", max_tokens: 64, messages: [{ role: "user", content: "review" }] })
    expect(ok.content[0]?.type).toBe("text")
    const refused = await client("made-up-key").messages.create({ model: "qwen2.5-coder:7b", max_tokens: 64, messages: [{ role: "user", content: "review" }] }).catch((e: unknown) => e)
    expect(refused).toBeInstanceOf(Anthropic.AuthenticationError)
  })

  it("an X-AwoooP-Project-ID other than the key's project → 403", async () => {
    const r = await gw.post("/api/generate", generate, { ...lane("alert-fast"), ...bearer(ALERTS_KEY), "x-awooop-project-id": "someone-else" })
    expect(r.status).toBe(403)
    expect(((await r.json()) as { error: string }).error).toBe("caller alerts-service belongs to project awoooi, not someone-else (X-AwoooP-Project-ID)")
  })

  it("a known caller spends on its lanes (both keys of a rotation work); the journal names the caller, never the key", async () => {
    const openai = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: ALERTS_KEY, maxRetries: 0 })
    const traceId = newTraceId()
    const answer = await openai.chat.completions.create(
      { model: "gemma3:4b", messages: [{ role: "user", content: "status?" }] },
      { headers: lane("alert-fast", traceId) }
    )
    expect(answer.choices[0]?.message.content).toBe("[gemini] hello from gemini")
    const events = await gw.runEvents(traceId)
    expect(events.find((e) => e.type === "RunStarted")?.data).toMatchObject({ caller: "alerts-service" })
    expect(events.find((e) => e.type === "RunCompleted")?.data).toMatchObject({ providerTier: "paid" })

    const next = await gw.ollama({ ...lane("paid-emergency"), ...bearer(ALERTS_NEXT) }).generate(generate)
    expect(next.response).toBe("[gemini] hello from gemini")

    const leaked = await gw.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM step_journal WHERE data::text LIKE $1 OR data::text LIKE $2`,
      [`%${ALERTS_KEY}%`, `%${ALERTS_NEXT}%`]
    )
    expect(leaked[0]!.n).toBe(0)
    const ledger = await gw.query<{ caller: string }>(`SELECT DISTINCT caller FROM budget_ledger WHERE caller IS NOT NULL ORDER BY caller`)
    expect(ledger.map((r) => r.caller)).toContain("alerts-service")
    for (const line of printed) for (const key of [ALERTS_KEY, ALERTS_NEXT, OTHER_KEY, POOR_KEY, ADMIN]) expect(line).not.toContain(key)
  })

  it("anonymous never spends money: the paid fallback is skipped with a reason, nothing reaches the provider", async () => {
    const before = gemini.requests.length
    const traceId = newTraceId()
    const r = await gw.post("/api/generate", generate, lane("alert-fast", traceId))
    expect(r.status).toBe(503)
    const events = await gw.runEvents(traceId)
    expect(events.find((e) => e.type === "RunStarted")?.data).toMatchObject({ caller: "anonymous" })
    expect(events.find((e) => e.type === "PaidFallbackSkipped")?.data).toMatchObject({
      reason: "caller anonymous may not spend money on paid providers (paidFallback: false)"
    })
    expect(events.map((e) => e.type)).not.toContain("BudgetReserved")
    expect(events.at(-1)?.type).toBe("RunFailed")
    expect(gemini.requests.length).toBe(before)
  })

  it("a caller's own budget refuses inside the global one, and the refusal shows no spend figures", async () => {
    const before = gemini.requests.length
    const traceId = newTraceId()
    const r = await gw.post("/api/generate", generate, { ...lane("paid-emergency", traceId), ...bearer(POOR_KEY) })
    expect(r.status).toBe(503)
    const body = (await r.json()) as { error: string }
    expect(body.error).toContain("caller poor-service's budget per day would be exceeded")
    expect(body.error).not.toMatch(/\$\d|0\.000/)
    // The header's tagged error carries the same figure-free reason.
    expect(Buffer.from(r.headers.get("x-awooop-error") ?? "", "base64url").toString()).not.toMatch(/\$\d/)
    const events = await gw.runEvents(traceId)
    // The operator reads the figures in the journal.
    expect(String((events.find((e) => e.type === "BudgetDenied")?.data as { reason?: unknown } | undefined)?.reason)).toContain("$0.0005")
    expect(gemini.requests.length).toBe(before)
  })
})

describe("the read API answers for the caller's own project", () => {
  it("runs, traces and cost: another project's are not found; the admin token sees all; cost groups by caller", async () => {
    const traceId = newTraceId()
    const r = await gw.post("/api/generate", generate, { ...lane("paid-emergency", traceId), ...bearer(ALERTS_KEY) })
    expect(r.status).toBe(200)
    const runId = r.headers.get("x-awooop-run-id")!
    const get = (path: string, key?: string) => fetch(`${gw.url}${path}`, { headers: key === undefined ? {} : bearer(key) })

    expect((await get(`/awooop/runs/${runId}`, ALERTS_KEY)).status).toBe(200)
    expect((await get(`/awooop/runs/${runId}`, OTHER_KEY)).status).toBe(404)
    const asAdmin = await get(`/awooop/runs/${runId}`, ADMIN)
    expect(asAdmin.status).toBe(200)
    expect(((await asAdmin.json()) as { caller: string }).caller).toBe("alerts-service")
    expect((await get(`/awooop/runs/${runId}`, "made-up-key")).status).toBe(401)
    expect((await get(`/awooop/traces/${traceId}`, OTHER_KEY)).status).toBe(404)
    expect((await get(`/awooop/traces/${traceId}`, ALERTS_KEY)).status).toBe(200)

    type Cost = { rows: Array<{ caller?: string; project?: string; requests: number }> }
    let rows: Cost["rows"] = []
    const deadline = Date.now() + 10_000
    // The projector trails the journal: wait for both callers' runs to be folded in.
    while (Date.now() < deadline && !(rows.some((x) => x.caller === "alerts-service") && rows.some((x) => x.caller === "anonymous"))) {
      rows = ((await (await get("/awooop/cost?groupBy=project,caller", ADMIN)).json()) as Cost).rows
      await new Promise((res) => setTimeout(res, 100))
    }
    expect(rows.find((x) => x.caller === "alerts-service")).toMatchObject({ project: "awoooi" })
    expect(rows.find((x) => x.caller === "anonymous")).toMatchObject({ project: "awoooi" })
    const theirs = ((await (await get("/awooop/cost?groupBy=project,caller", OTHER_KEY)).json()) as Cost).rows
    expect(theirs.every((x) => x.project === "other")).toBe(true)
  })

  it("the console shows every project, so with callers configured each page needs the admin sign-in", async () => {
    const pages = ["/console/", "/console/runs", "/console/runs/rows", "/console/cost", "/console/api/cost", "/console/shadow", "/console/board/fragment"]
    for (const path of pages) {
      const anonymous = await fetch(`${gw.url}${path}`)
      expect(anonymous.status, path).toBe(401)
      expect(await anonymous.text(), path).toContain("needs the admin sign-in")
      // A caller's key is not the admin's: the console is not a read route scoped to a project.
      expect((await fetch(`${gw.url}${path}`, { headers: bearer(ALERTS_KEY) })).status, path).toBe(401)
    }
    const origin = new URL(gw.url).origin
    const login = await fetch(`${gw.url}/console/login`, {
      method: "POST",
      redirect: "manual",
      headers: { "content-type": "application/x-www-form-urlencoded", origin },
      body: new URLSearchParams({ token: ADMIN }).toString()
    })
    expect(login.status).toBe(303)
    const cookie = login.headers.get("set-cookie")!.split(";")[0]!
    for (const path of pages) expect((await fetch(`${gw.url}${path}`, { headers: { cookie } })).status, path).toBe(200)
  })

  it("cancelling another project's async run: not found; its own caller cancels it", async () => {
    gw.fakes["gpu-node"]!.setMode("hang")
    try {
      const submitted = await gw.post("/awooop/runs", { model: "qwen2.5:14b", prompt: "deep dive" }, { ...lane("deep-rca"), ...bearer(OTHER_KEY) })
      expect(submitted.status).toBe(202)
      const { runId } = (await submitted.json()) as { runId: string }
      const cancel = (key: string) => fetch(`${gw.url}/awooop/runs/${runId}`, { method: "DELETE", headers: bearer(key) })
      expect((await cancel(ALERTS_KEY)).status).toBe(404)
      expect((await fetch(`${gw.url}/awooop/runs/${runId}`, { headers: bearer(ALERTS_KEY) })).status).toBe(404)
      expect((await cancel(OTHER_KEY)).status).toBe(200)
    } finally {
      gw.fakes["gpu-node"]!.setMode("ok")
    }
  })
})
