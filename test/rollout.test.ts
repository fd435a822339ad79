/**
 * The pure parts of operating the rollout: lane safety in words, shadow comparison, the async run
 * fold, and the parameter parsers of the operator routes.
 */
import { describe, expect, it } from "vitest"
import { parseUntil } from "../src/http/MaintenanceRoutes.ts"
import { parseReportQuery } from "../src/http/ShadowRoutes.ts"
import { LaneConfig } from "../src/config/GatewayConfig.ts"
import * as Events from "../src/domain/Events.ts"
import { Schema } from "effect"
import { fold } from "../src/operations/async/AsyncRunState.ts"
import { toJsonb } from "../src/operations/async/AsyncRunStore.ts"
import { type HostFacts, laneSafety, listWords } from "../src/operations/Health.ts"
import { type HostView, plan, type PlanStep } from "../src/routing/Plan.ts"
import { compare, legacyHostOf } from "../src/operations/Shadow.ts"

const lane = (raw: Record<string, unknown>) => Schema.decodeUnknownSync(LaneConfig)(raw)

const installed = ["gemma3:4b", "qwen2.5-coder:7b", "qwen2.5:14b"].map((name) => ({ name, parameterSize: null }))
const view = (over: Partial<HostView> = {}): HostView => ({
  protected: false,
  health: "up",
  breaker: { status: "closed", reopensAt: null, probeInFlight: false },
  maintenance: { open: false, until: null },
  installed,
  slots: { total: 2, inUse: 0, freeForLane: 2 },
  ...over
})
const decide = (model: string, route: ReadonlyArray<PlanStep>, hosts: Record<string, HostView>) =>
  plan({ lane: "x", model, route, hosts, policy: { heavyModelMinParamsB: 14 }, now: 0 })
const step = (host: string, when: "always" | "unavailable" = "always"): PlanStep => ({ host, timeoutMs: 1000, when })

const alertFast = lane({
  model: "gemma3:4b",
  keepWarm: ["gcp-a", "gcp-b"],
  route: [{ host: "gcp-a", timeout: "45s" }, { host: "gcp-b", timeout: "45s" }, { host: "111", timeout: "60s" }]
})
const alertRoute = [step("gcp-a"), step("gcp-b"), step("111")]
const codeReview = lane({
  model: "qwen2.5-coder:7b",
  route: [{ host: "111", timeout: "120s" }, { host: "gcp-b", timeout: "90s", when: "unavailable" }]
})
const codeRoute = [step("111"), step("gcp-b", "unavailable")]

describe("lane safety, in words", () => {
  const up = (resident: Array<string> = []): HostFacts => ({ status: "up", resident })
  const down: HostFacts = { status: "down", resident: [] }

  it("the runbook's examples", () => {
    const ok = laneSafety("alert-fast", alertFast, decide("gemma3:4b", alertRoute, { "gcp-a": view(), "gcp-b": view(), "111": view() }), {
      "gcp-a": up(["gemma3:4b"]), "gcp-b": up(["gemma3:4b"]), "111": up()
    })
    expect(ok.summary).toBe("alert-fast: safe — gemma3:4b resident on gcp-a and gcp-b")
    expect(ok.safe).toBe(true)

    const open = { status: "open" as const, reopensAt: 30_000, probeInFlight: false }
    const bad = laneSafety("code-review", codeReview, decide("qwen2.5-coder:7b", codeRoute, { "111": view({ health: "down" }), "gcp-b": view({ breaker: open }) }), {
      "111": down, "gcp-b": up()
    })
    expect(bad.summary).toBe("code-review: unsafe — 111 down, gcp-b circuit open")
    expect(bad.safe).toBe(false)
  })

  it("a keep-warm lane is unsafe while its model is resident on none of its keep-warm hosts", () => {
    const cold = laneSafety("alert-fast", alertFast, decide("gemma3:4b", alertRoute, { "gcp-a": view(), "gcp-b": view(), "111": view() }), {
      "gcp-a": up(["qwen2.5:14b"]), "gcp-b": up(), "111": up()
    })
    expect(cold.safe).toBe(false)
    expect(cold.summary).toBe("alert-fast: unsafe — gemma3:4b not resident on gcp-a or gcp-b (keep-warm reloads it); gcp-a, gcp-b and 111 would load it cold")
    const half = laneSafety("alert-fast", alertFast, decide("gemma3:4b", alertRoute, { "gcp-a": view(), "gcp-b": view(), "111": view() }), {
      "gcp-a": up([]), "gcp-b": up(["gemma3:4b"]), "111": up()
    })
    expect(half.summary).toBe("alert-fast: safe — gemma3:4b resident on gcp-b; not resident on gcp-a (keep-warm reloads it)")
  })

  it("a heavy model on protected hosts is refused by rule; not-yet-polled hosts are not called safe; shadow mode is said", () => {
    const heavy = lane({ model: "qwen2.5:14b", route: [{ host: "gcp-a", timeout: "1s" }] })
    const denied = laneSafety("big", heavy, decide("qwen2.5:14b", [step("gcp-a")], { "gcp-a": view({ protected: true }) }), { "gcp-a": up() })
    expect(denied.summary).toBe("big: unsafe — gcp-a denies 14B models (protected host, no maintenance window)")

    const unknown = laneSafety("code-review", codeReview, decide("qwen2.5-coder:7b", codeRoute, { "111": view({ health: "unknown", installed: null }), "gcp-b": view() }), {
      "111": { status: "unknown", resident: null }, "gcp-b": up()
    })
    expect(unknown.summary).toBe("code-review: unsafe — 111 not polled yet")

    const shadow = lane({ model: "qwen2.5-coder:7b", mode: "shadow", route: [{ host: "111", timeout: "1s" }] })
    const s = laneSafety("code-review", shadow, decide("qwen2.5-coder:7b", [step("111")], { "111": view() }), { "111": up(["qwen2.5-coder:7b"]) })
    expect(s.summary).toBe("code-review: safe — qwen2.5-coder:7b resident on 111 (shadow mode: decisions are journaled, nothing is executed)")
  })

  it("a paid lane is safe only while the hard kill is not tripped and the ledger answers", () => {
    const paid = lane({ paid: ["gemini", "claude"] })
    expect(laneSafety("paid-emergency", paid, null, {}, { hardKillTripped: false }).summary)
      .toBe("paid-emergency: safe — paid providers gemini and claude behind the budget (hard kill not tripped)")
    expect(laneSafety("paid-emergency", paid, null, {}, { hardKillTripped: true }).safe).toBe(false)
    expect(laneSafety("paid-emergency", paid, null, {}, { hardKillTripped: null }).summary).toContain("unreachable (fail closed)")
  })

  it("a paid provider without its key is unavailable: a paid lane with none left is unsafe, with one left it is safe and says which is missing", () => {
    const paidLane = lane({ paid: ["gemini", "claude"] })
    const gone = { available: false, reason: "GEMINI_API_KEY is not set" }
    const none = laneSafety("paid-emergency", paidLane, null, {}, {
      hardKillTripped: false,
      providers: { gemini: gone, claude: { available: false, reason: "ANTHROPIC_API_KEY is not set" } }
    })
    expect(none.safe).toBe(false)
    expect(none.summary).toBe("paid-emergency: unsafe — no paid provider available: gemini unavailable (GEMINI_API_KEY is not set), claude unavailable (ANTHROPIC_API_KEY is not set)")
    const one = laneSafety("paid-emergency", paidLane, null, {}, { hardKillTripped: false, providers: { gemini: gone, claude: { available: true, reason: null } } })
    expect(one.safe).toBe(true)
    expect(one.summary).toBe("paid-emergency: safe — paid providers claude behind the budget (hard kill not tripped); gemini unavailable (GEMINI_API_KEY is not set)")
    // A lane whose paid fallback has no key left says so, and is judged by its Ollama route as before.
    const withFallback = lane({ model: "gemma3:4b", route: [{ host: "gcp-a", timeout: "45s" }], paidFallback: ["gemini"] })
    const downRoute = laneSafety("alert-fast", withFallback, decide("gemma3:4b", [step("gcp-a")], { "gcp-a": view({ health: "down" }) }), { "gcp-a": down }, {
      hardKillTripped: false,
      providers: { gemini: gone }
    })
    expect(downRoute.safe).toBe(false)
    expect(downRoute.reasons).toContain("paid fallback gemini unavailable (GEMINI_API_KEY is not set)")
    expect(downRoute.summary).not.toContain("would be asked")
  })

  it("an async lane is unsafe while the run store cannot take runs", () => {
    const rca = lane({ model: "qwen2.5:14b", async: true, route: [{ host: "111", timeout: "1s" }] })
    const decision = decide("qwen2.5:14b", [step("111")], { "111": view() })
    expect(laneSafety("deep-rca", rca, decision, { "111": up(["qwen2.5:14b"]) }).safe).toBe(true)
    const down = laneSafety("deep-rca", rca, decision, { "111": up(["qwen2.5:14b"]) }, { hardKillTripped: null }, "the journal cannot commit to PostgreSQL")
    expect(down.safe).toBe(false)
    expect(down.summary).toBe("deep-rca: unsafe — async runs: the journal cannot commit to PostgreSQL")
    // A synchronous lane does not depend on the run store.
    expect(laneSafety("alert-fast", alertFast, decide("gemma3:4b", alertRoute, { "gcp-a": view(), "gcp-b": view(), "111": view() }), {
      "gcp-a": up(["gemma3:4b"]), "gcp-b": up(["gemma3:4b"]), "111": up()
    }, { hardKillTripped: null }, "the journal cannot commit to PostgreSQL").safe).toBe(true)
  })

  it("lists read like English", () => {
    expect(listWords(["a"])).toBe("a")
    expect(listWords(["a", "b"])).toBe("a and b")
    expect(listWords(["a", "b", "c"], "or")).toBe("a, b or c")
  })
})

describe("shadow comparison", () => {
  const hosts = { "gcp-a": { url: "http://gcp.internal:11435" }, "gcp-b": { url: "http://gcp.internal:11436" }, "111": { url: "http://host-111.internal:11434/" } }
  const alertPlan = decide("gemma3:4b", alertRoute, { "gcp-a": view(), "gcp-b": view(), "111": view() })

  it("a legacy endpoint is matched by host name or by host and port of its URL", () => {
    expect(legacyHostOf("gcp-b", hosts)).toBe("gcp-b")
    expect(legacyHostOf("http://gcp.internal:11436", hosts)).toBe("gcp-b")
    expect(legacyHostOf("host-111.internal:11434", hosts)).toBe("111")
    expect(legacyHostOf("http://host-111.internal:11434/api/generate", hosts)).toBe("111")
    expect(legacyHostOf("http://unknown-host.internal:11434", hosts)).toBeNull()
    expect(legacyHostOf("::not a url::", hosts)).toBeNull()
  })

  it("agreement needs the same first host and the same model; each difference is a reason", () => {
    expect(compare("alert-fast", "gemma3:4b", alertPlan, { endpoint: "http://gcp.internal:11435", model: "gemma3:4b" }, hosts)).toMatchObject({ agree: true, reasons: [] })
    expect(compare("alert-fast", "gemma3:4b", alertPlan, { endpoint: null, model: "gemma3:4b" }, hosts)).toMatchObject({ agree: null })
    const both = compare("alert-fast", "gemma3:4b", alertPlan, { endpoint: "gcp-b", model: "gemma3:12b" }, hosts)
    expect(both.agree).toBe(false)
    expect(both.reasons.map((r) => r.kind)).toEqual(["endpoint", "model"])
    const refused = compare("big", "qwen2.5:14b", decide("qwen2.5:14b", [step("gcp-a")], { "gcp-a": view({ protected: true }) }), { endpoint: "gcp-a", model: null }, hosts)
    expect(refused).toMatchObject({ agree: false, gateway: { host: null }, reasons: [{ kind: "heavy-model-denied" }] })
  })

  it("a paid lane's choice is its first provider", () => {
    expect(compare("paid-emergency", null, null, { endpoint: "gemini", model: null }, hosts, ["gemini", "claude"]))
      .toMatchObject({ agree: true, gateway: { host: "gemini", attempts: ["gemini", "claude"] } })
    expect(compare("paid-emergency", null, null, { endpoint: "claude", model: null }, hosts, ["gemini", "claude"]).reasons)
      .toEqual([{ kind: "endpoint", text: "the gateway picks gemini, legacy used claude" }])
  })
})

describe("async run state from its journal stream", () => {
  const at = (i: number) => 1_000 + i
  const ev = (event: Events.AnyEvent) => ({ ...Events.toRow(event), occurredAt: 0 })
  const events = (...es: Array<ReturnType<typeof ev>>) => es.map((e, i) => ({ ...e, occurredAt: at(i) }))
  const caller = { intent: null, caller: null, legacy: false, traceMinted: false, parentSpanId: null }
  const started = (async: boolean) =>
    ev(Events.RunStarted.make({ runId: "r", ...(async ? { async: true } : {}), operation: "generate", stream: false, requestedModel: "m", assignedModel: "m", ...caller }))
  const dequeued = ev(Events.RunDequeued.make({ attemptsSoFar: 0 }))
  const attempt = (n: number, host: string) => ev(Events.AttemptStarted.make({ attempt: n, host, timeoutMs: 2_000 }))
  const completed = ev(Events.RunCompleted.make({ endpoint: "gpu-node", providerTier: "ollama", inputTokens: 1, outputTokens: 1, doneReason: "stop", costUsd: 0, durationMs: 9 }))
  const failed = (status: number, error: string, message: string) => ev(Events.RunFailed.make({ status, error, message, durationMs: 1 }))
  const reserved = (reservationId: string) =>
    ev(Events.BudgetReserved.make({
      reservationId, provider: "gemini", model: "gemini-2.5-flash", amountUsd: 0.01, inputTokensEstimate: 1, maxOutputTokens: 256,
      inputUsdPerMillion: 0.3, outputUsdPerMillion: 2.5, capUsd: 5, committedUsd: 0, periodStart: "2026-05-05T00:00:00.000Z"
    }))

  it("queued → running → succeeded, attempts counted across a restart", () => {
    const s = fold(events(
      started(true),
      dequeued,
      attempt(1, "111"),
      ev(Events.RunRequeued.make({ attemptsSoFar: 1, was: "running", reason: "restart" })),
      dequeued,
      attempt(2, "111"),
      ev(Events.AttemptFailed.make({ attempt: 2, host: "111", kind: "timeout", message: "x" })),
      attempt(3, "gpu-node"),
      ev(Events.AttemptSucceeded.make({ host: "gpu-node", durationMs: 5, firstChunkMs: null })),
      completed
    ))!
    expect(s.status).toBe("succeeded")
    expect(s.attempts).toBe(3)
    expect(s.pickups).toBe(2)
    expect(s.attemptLog.map((a) => [a.attempt, a.host, a.outcome])).toEqual([[1, "111", "interrupted"], [2, "111", "failed"], [3, "gpu-node", "succeeded"]])
    expect(s.finishedAt).toBe(at(9))
  })

  it("statuses at each point; a cancel is RunFailed(RunCancelled); a synchronous run is not an async run", () => {
    expect(fold(events(started(true)))!.status).toBe("queued")
    expect(fold(events(started(true), dequeued))!.status).toBe("running")
    expect(fold(events(started(true), dequeued, ev(Events.RunSuspended.make({ reason: "stop" }))))!.status).toBe("queued")
    expect(fold(events(started(true), failed(499, "RunCancelled", "x")))!.status).toBe("cancelled")
    expect(fold(events(started(true), failed(503, "AllHostsUnavailable", "y")))).toMatchObject({ status: "failed", error: { status: 503, code: "AllHostsUnavailable" } })
    expect(fold(events(started(false)))).toBeNull()
    // Events after the end change nothing.
    expect(fold(events(started(true), completed, failed(500, "Late", "z")))!.status).toBe("succeeded")
  })

  it("paid calls: settled and still-open reservations are known, released ones are not", () => {
    const s = fold(events(
      started(true),
      reserved("r1"),
      ev(Events.BudgetReleased.make({ reservationId: "r1", provider: "gemini", reservedUsd: 0.01, reason: "x" })),
      reserved("r2"),
      ev(Events.BudgetSettled.make({
        reservationId: "r2", provider: "gemini", model: "gemini-2.5-flash", reservedUsd: 0.01, costUsd: 0.001, chargedUsd: 0.001,
        inputTokens: 1, outputTokens: 1, usageKnown: true, note: "answered"
      })),
      reserved("r3")
    ))!
    expect(s.paidSettled).toEqual(["r2"])
    expect(s.paidOpen).toEqual(["r3"])
  })
})

describe("the run store's JSON", () => {
  it("NUL and lone surrogates (which jsonb refuses) become U+FFFD; an escaped backslash stays text", () => {
    expect(JSON.parse(toJsonb({ p: "a\u0000b\ud800c" }))).toEqual({ p: "a\ufffdb\ufffdc" })
    expect(JSON.parse(toJsonb({ p: "literal \\u0000" }))).toEqual({ p: "literal \\u0000" })
  })
})

describe("operator route parameters", () => {
  const now = Date.parse("2026-05-05T12:00:00Z")
  it("maintenance until: an ISO time with a zone, in the future, within 30 days", () => {
    expect(parseUntil("2026-05-05T18:00:00Z", now)).toBe(Date.parse("2026-05-05T18:00:00Z"))
    expect(parseUntil("2026-05-05T20:00:00+02:00", now)).toBe(Date.parse("2026-05-05T18:00:00Z"))
    expect(parseUntil(undefined, now)).toContain("until is required")
    expect(parseUntil("2026-05-05T18:00:00", now)).toContain("ISO time with a zone")
    expect(parseUntil("2026-05-05T11:00:00Z", now)).toContain("not in the future")
    expect(parseUntil("2026-07-05T11:00:00Z", now)).toContain("more than 30 days")
  })
  it("shadow report: lane and since (ISO or a duration back), nothing else", () => {
    expect(parseReportQuery({}, now)).toEqual({ lane: null, since: now - 24 * 3_600_000 })
    expect(parseReportQuery({ lane: "alert-fast", since: "30m" }, now)).toEqual({ lane: "alert-fast", since: now - 1_800_000 })
    expect(parseReportQuery({ since: "2026-05-05T00:00:00Z" }, now)).toEqual({ lane: null, since: Date.parse("2026-05-05T00:00:00Z") })
    expect(parseReportQuery({ since: "soon" }, now)).toContain("since must be")
    expect(parseReportQuery({ lane: ["a", "b"] }, now)).toContain("once")
    expect(parseReportQuery({ from: "x" }, now)).toContain("unknown parameter")
  })
})
