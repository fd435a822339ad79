/**
 * Projections (issue 3): the folds on their own (given events → then state), incremental
 * projection equals a rebuild for random journals (fast-check, real PostgreSQL), re-delivery is
 * harmless, and the projector never skips a transaction that committed after a later one.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it, layer } from "@effect/vitest"
import { Deferred, Effect, Fiber, HashMap } from "effect"
import fc from "fast-check"
import * as Events from "../src/domain/Events.ts"
import type { Change } from "../src/projections/Change.ts"
import * as CostLedger from "../src/projections/CostLedger.ts"
import type { ProjectionEvent } from "../src/projections/Event.ts"
import * as HostState from "../src/projections/HostState.ts"
import * as Metrics from "../src/projections/Metrics.ts"
import { fold } from "../src/projections/Projections.ts"
import { catchUp, catchUpFully, type Checkpoint, lag, liveSchema, readCheckpoint, writeCheckpoint } from "../src/projections/Projector.ts"
import { verifyProjections } from "../src/projections/Rebuild.ts"
import { archive } from "../src/replay/Archive.ts"
import type { PlanStep } from "../src/routing/Plan.ts"
import type { SkipReason } from "../src/run/SkipReason.ts"
import * as RunState from "../src/projections/RunState.ts"
import { insertRows, resetJournal, type Row } from "./support/JournalRows.ts"
import { TestDatabaseLive } from "./support/TestDatabase.ts"

const T0 = Date.parse("2026-05-05T23:59:58.000Z") // runs straddle midnight: two ledger days

/** A row of a type the catalogue does not hold (a later gateway's, say). */
interface Raw {
  readonly type: string
  readonly data: unknown
}

/** The row a writer journals for `event` (or a raw row). */
const rowOf = (event: Events.AnyEvent | Raw): Raw => ("_tag" in event ? Events.toRow(event) : event)

const at = (streamId: string, streamPosition: number, event: Events.AnyEvent | Raw, occurredAt: number): ProjectionEvent => ({
  globalPosition: streamPosition + 1,
  transactionId: "1",
  streamId,
  streamPosition,
  traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
  projectId: "awoooi",
  lane: "alert-fast",
  ...rowOf(event),
  occurredAt
})

const caller = { intent: null, caller: null, legacy: false, traceMinted: false, parentSpanId: null }

const route: ReadonlyArray<PlanStep> = [
  { host: "gcp-a", timeoutMs: 45_000, when: "always" },
  { host: "gcp-b", timeoutMs: 45_000, when: "always" },
  { host: "111", timeoutMs: 60_000, when: "always" }
]

const runStarted = (streamId: string, intent: string | null) =>
  Events.RunStarted.make({ runId: streamId.slice(4), operation: "generate", stream: false, requestedModel: "gemma3:4b", assignedModel: "gemma3:4b", ...caller, intent })

const decided = (lane: string, t: number, skipped: ReadonlyArray<{ readonly host: string; readonly reason: SkipReason }> = [], attempts = route) =>
  Events.RouteDecided.make({
    input: { lane, model: "gemma3:4b", route, hosts: {}, policy: { heavyModelMinParamsB: 14 }, now: t },
    plan: { attempts: attempts.map((r) => ({ host: r.host, timeoutMs: r.timeoutMs, conditional: false })), skipped }
  })

/** What routing/Lane.ts journals for "gcp-a times out, gcp-b answers". */
const incidentRun = (streamId: string, t: number): Array<ProjectionEvent> => [
  at(streamId, 0, runStarted(streamId, "DIAGNOSE"), t),
  at(streamId, 1, decided("alert-fast", t), t),
  at(streamId, 2, Events.AttemptStarted.make({ attempt: 1, host: "gcp-a", timeoutMs: 45_000, slotPool: "reserved" }), t),
  at(streamId, 3, Events.AttemptFailed.make({ attempt: 1, host: "gcp-a", kind: "timeout", status: null, message: "no answer within 45s", durationMs: 45_000, afterFirstChunk: false }), t + 45_000),
  at(streamId, 4, Events.AttemptStarted.make({ attempt: 2, host: "gcp-b", timeoutMs: 45_000, slotPool: "reserved" }), t + 45_000),
  at(streamId, 5, Events.AttemptSucceeded.make({ host: "gcp-b", durationMs: 2_000, firstChunkMs: null }), t + 47_000),
  at(streamId, 6, Events.RunCompleted.make({ endpoint: "gcp-b", providerTier: "ollama", inputTokens: 12, outputTokens: 40, doneReason: "stop", costUsd: 0, durationMs: 47_000 }), t + 47_000)
]

const reserved = (reservationId: string, amountUsd: number) =>
  Events.BudgetReserved.make({
    reservationId, provider: "gemini", model: "gemini-2.5-flash", amountUsd, inputTokensEstimate: 100, maxOutputTokens: 256,
    inputUsdPerMillion: 0.3, outputUsdPerMillion: 2.5, capUsd: 5, committedUsd: 0, periodStart: "2026-05-05T00:00:00.000Z"
  })

const settled = (reservationId: string, costUsd: number | null, chargedUsd: number) =>
  Events.BudgetSettled.make({
    reservationId, provider: "gemini", model: "gemini-2.5-flash", reservedUsd: 0.01, costUsd, chargedUsd,
    inputTokens: costUsd === null ? null : 100, outputTokens: costUsd === null ? null : 200, usageKnown: costUsd !== null, note: "answered"
  })

const foldRun = (events: ReadonlyArray<ProjectionEvent>) => events.reduce<RunState.RunState | null>(RunState.evolve, null)!

/** The changes the projector would fold the additive projections over. */
const changesOf = (events: ReadonlyArray<ProjectionEvent>): Array<Change> => {
  const runs = new Map<string, RunState.RunState>()
  const hosts = new Map<string, HostState.HostState>()
  return events.map((event): Change => {
    if (event.streamId.startsWith("run-")) {
      const before = runs.get(event.streamId) ?? null
      const after = RunState.evolve(before, event)
      runs.set(event.streamId, after)
      return { event, run: after === before ? null : { before, after }, host: null }
    }
    const before = hosts.get(event.streamId) ?? null
    const after = HostState.evolve(before, event)
    hosts.set(event.streamId, after)
    return { event, run: null, host: after === before ? null : { before, after } }
  })
}

/** The pure folds (Emmett style) and the projector's batch accumulators must agree. */
const ledgerOf = (events: ReadonlyArray<ProjectionEvent>) => {
  const pure = [...HashMap.values(changesOf(events).reduce(CostLedger.evolve, CostLedger.empty))]
  assert.deepStrictEqual([...fold(events, new Map(), new Map()).ledger], pure)
  return pure
}

const metricsOf = (events: ReadonlyArray<ProjectionEvent>) => {
  const pure = [...HashMap.values(changesOf(events).reduce(Metrics.evolve, Metrics.empty))]
  const sort = (rows: ReadonlyArray<Metrics.MetricRow>) => [...rows].sort((x, y) => JSON.stringify(x) < JSON.stringify(y) ? -1 : 1)
  assert.deepStrictEqual(sort([...fold(events, new Map(), new Map()).metrics]), sort(pure))
  return pure
}

describe("RunState.evolve (given events, then state)", () => {
  it("an Ollama fallback: gcp-a times out, gcp-b answers", () => {
    const run = foldRun(incidentRun("run-00000000-0000-4000-8000-000000000001", T0))
    assert.strictEqual(run.status, "completed")
    assert.strictEqual(run.endpoint, "gcp-b")
    assert.strictEqual(run.provider, "ollama")
    assert.strictEqual(run.model, "gemma3:4b")
    assert.strictEqual(run.attempts, 2)
    assert.strictEqual(run.intent, "DIAGNOSE")
    assert.strictEqual(run.inputTokens, 12)
    assert.strictEqual(run.outputTokens, 40)
    assert.strictEqual(run.costUsd, 0)
    assert.strictEqual(run.durationMs, 47_000)
    assert.strictEqual(run.fallbackReason, "gcp-a timeout after 45.0s")
    assert.deepStrictEqual(run.route, ["gcp-a", "gcp-b", "111"])
  })

  it("a re-delivered event returns the very same state; unknown types and late terminals change nothing else", () => {
    const events = incidentRun("run-00000000-0000-4000-8000-000000000002", T0)
    const run = foldRun(events)
    assert.strictEqual(RunState.evolve(run, events[3]!), run)
    const later = RunState.evolve(run, at(run.streamId, 7, { type: "SomethingFromIssue9", data: { whatever: [1, 2] } }, T0 + 50_000))
    assert.deepStrictEqual({ ...later, lastPosition: run.lastPosition, lastEventAt: run.lastEventAt }, run)
    const failedLate = RunState.evolve(later, at(run.streamId, 8, Events.RunFailed.make({ status: 499, error: "ClientAborted", message: "gone", durationMs: 51_000 }), T0 + 51_000))
    assert.strictEqual(failedLate.status, "completed")
    assert.strictEqual(failedLate.error, null)
  })

  it("a paid fallback: provider, model, cost and the recorded reason; a settlement without usage makes cost unknown", () => {
    const s = "run-00000000-0000-4000-8000-000000000003"
    const reason = "all Ollama endpoints failed: gcp-a timeout, gcp-b circuit open, 111 refused"
    const base = incidentRun(s, T0).slice(0, 4)
    const paid = [
      ...base,
      at(s, 4, Events.PaidFallbackRequested.make({ reason, providers: ["gemini", "claude"], direct: false }), T0 + 45_001),
      at(s, 5, reserved("r1", 0.01), T0 + 45_002),
      at(s, 6, Events.AttemptStarted.make({ attempt: 2, host: "gemini", provider: "gemini", tier: "paid", model: "gemini-2.5-flash", timeoutMs: 30_000, reservationId: "r1" }), T0 + 45_002),
      at(s, 7, Events.AttemptSucceeded.make({ host: "gemini", provider: "gemini", tier: "paid", durationMs: 900, firstChunkMs: null }), T0 + 45_902),
      at(s, 8, Events.RunCompleted.make({ endpoint: "gemini", providerTier: "paid", model: "gemini-2.5-flash", inputTokens: 100, outputTokens: 200, doneReason: "stop", costUsd: 0.00053, fallbackReason: reason, reservationId: "r1", durationMs: 45_902 }), T0 + 45_902),
      at(s, 9, settled("r1", 0.00053, 0.00053), T0 + 45_903)
    ]
    const run = foldRun(paid)
    assert.strictEqual(run.provider, "gemini")
    assert.strictEqual(run.providerTier, "paid")
    assert.strictEqual(run.model, "gemini-2.5-flash")
    assert.strictEqual(run.costUsd, 0.00053)
    assert.strictEqual(run.fallbackReason, reason)
    const row = CostLedger.contribution(run)!
    assert.deepStrictEqual([row.day, row.provider, row.model, row.costPicoUsd], ["2026-05-06", "gemini", "gemini-2.5-flash", 530_000_000n])

    const unknown = foldRun([
      ...paid.slice(0, 8),
      at(s, 8, Events.RunFailed.make({ status: 502, error: "StreamBroken", message: "gemini broke mid-stream", durationMs: 46_000 }), T0 + 46_000),
      at(s, 9, settled("r1", null, 0.01), T0 + 46_001)
    ])
    assert.strictEqual(unknown.status, "failed")
    assert.strictEqual(unknown.costUsd, null)
    assert.strictEqual(CostLedger.contribution(unknown)!.unknownCost, 1)
  })

  it("a settlement after RunCompleted corrects the ledger instead of counting the run twice", () => {
    const s = "run-00000000-0000-4000-8000-000000000004"
    const events = [
      ...incidentRun(s, T0).slice(0, 6),
      at(s, 6, Events.RunCompleted.make({ endpoint: "gemini", providerTier: "paid", inputTokens: 1, outputTokens: 1, doneReason: "stop", costUsd: null, durationMs: 10 }), T0 + 10),
      at(s, 7, settled("r2", 0.25, 0.25), T0 + 11)
    ]
    const rows = ledgerOf(events)
    assert.strictEqual(rows.length, 1)
    assert.deepStrictEqual([rows[0]!.requests, rows[0]!.unknownCost, rows[0]!.costPicoUsd], [1, 0, 250_000_000_000n])
  })
})

describe("HostState.evolve", () => {
  it("follows health, breaker, residency and maintenance; ignores unknown events", () => {
    const h = "host-gcp-a"
    const events = [
      at(h, 0, Events.HostUp.make({ host: "gcp-a", latencyMs: 3 }), T0),
      at(h, 1, Events.ResidencyChanged.make({ host: "gcp-a", resident: ["gemma3:4b"], loaded: ["gemma3:4b"], evicted: [] }), T0),
      at(h, 2, Events.BreakerOpened.make({ host: "gcp-a", at: T0 + 5, consecutiveTimeouts: 2, until: T0 + 30_005, reason: "2 consecutive timeouts" }), T0 + 5),
      at(h, 3, Events.KeepWarmFailed.make({ host: "gcp-a", lane: "alert-fast", model: "gemma3:4b", reason: "start", kind: "timeout", status: null, message: "no answer", durationMs: 5 }), T0 + 6)
    ]
    const state = events.reduce<HostState.HostState | null>(HostState.evolve, null)!
    assert.deepStrictEqual(
      [state.host, state.health, state.breaker, state.breakerUntil, state.resident, state.lastPosition],
      ["gcp-a", "up", "open", T0 + 30_005, ["gemma3:4b"], 3]
    )
    const closed = HostState.evolve(state, at(h, 4, Events.BreakerClosed.make({ host: "gcp-a", at: T0 + 40_000 }), T0 + 40_000))
    assert.strictEqual(closed.breaker, "closed")
    assert.strictEqual(closed.breakerUntil, null)
  })
})

describe("Metrics.evolve", () => {
  it("counts attempts, durations in the GenAI buckets, fallbacks and breaker transitions", () => {
    const run = incidentRun("run-00000000-0000-4000-8000-000000000005", T0)
    const host = at("host-gcp-a", 0, Events.BreakerOpened.make({ host: "gcp-a", at: T0 + 45_000, consecutiveTimeouts: 2, until: T0 + 75_000, reason: "2 consecutive timeouts" }), T0 + 45_000)
    const metrics = metricsOf([...run, host])
    const get = (name: string, endpoint: string, outcome: string) =>
      metrics.find((m) => m.name === name && m.endpoint === endpoint && m.outcome === outcome)
    assert.strictEqual(get("attempt_duration_ms", "gcp-a", "timeout")?.count, 1)
    assert.strictEqual(get("attempt_duration_ms", "gcp-b", "success")?.sum, 2_000)
    const duration = get("run_duration_ms", "gcp-b", "success")!
    assert.strictEqual(duration.buckets.length, Metrics.durationBoundsMs.length + 1)
    // 47 s lands in the (40.96 s, 81.92 s] bucket
    assert.strictEqual(duration.buckets[Metrics.durationBoundsMs.indexOf(81_920)], 1)
    assert.strictEqual(get("fallback", "gcp-b", "timeout")?.count, 1)
    assert.strictEqual(get("breaker_transition", "gcp-a", "BreakerOpened")?.count, 1)
  })
})

// ---------------------------------------------------------------------------------------------
// Random journals
// ---------------------------------------------------------------------------------------------

const hosts = ["gcp-a", "gcp-b", "111"] as const

const arbSkipReason: fc.Arbitrary<SkipReason> = fc.oneof(
  fc.record({ kind: fc.constant("circuit-open" as const), until: fc.option(fc.integer({ min: 0, max: 1e6 }).map((n) => T0 + n)) }),
  fc.constant({ kind: "host-down" as const }),
  fc.constant({ kind: "heavy-model-denied" as const, sizeB: 14.8, minParamsB: 14 }),
  fc.constant({ kind: "only-when-unavailable" as const })
)

type Step = Events.AnyEvent | Raw

/** One step of a run after RouteDecided; includes types no projection knows. */
const arbRunStep: fc.Arbitrary<Step> = fc.oneof(
  fc.constantFrom(...hosts).map((host): Step => Events.AttemptStarted.make({ attempt: 1, host, timeoutMs: 300 })),
  fc.tuple(fc.constantFrom(...hosts), fc.constantFrom("timeout", "refused", "busy", "server-error"), fc.integer({ min: 0, max: 90_000 }))
    .map(([host, kind, durationMs]): Step => Events.AttemptFailed.make({ attempt: 1, host, kind, durationMs, message: "x" })),
  fc.tuple(fc.constantFrom(...hosts), fc.constantFrom("circuit-open", "only-when-unavailable"))
    .map(([host, reason]): Step => Events.HostSkipped.make({ host, reason })),
  fc.tuple(fc.constantFrom(...hosts), fc.integer({ min: 0, max: 200_000 }))
    .map(([host, durationMs]): Step => Events.AttemptSucceeded.make({ host, durationMs, firstChunkMs: null })),
  fc.string({ maxLength: 12 }).map((reason): Step => Events.PaidFallbackRequested.make({ reason, providers: ["gemini"], direct: false })),
  fc.option(fc.double({ min: 0, max: 3, noNaN: true })).map((costUsd): Step => settled("r", costUsd, costUsd ?? 0.01)),
  fc.record({ x: fc.integer() }).map((d): Step => Events.PaidProviderSkipped.make({ provider: "claude", reason: String(d.x) })),
  fc.anything({ maxDepth: 1 }).map((data): Step => ({ type: "FromALaterIssue", data }))
)

const arbTerminal: fc.Arbitrary<Step> = fc.oneof(
  fc.record({
    endpoint: fc.constantFrom("gcp-a", "gcp-b", "111", "gemini"),
    providerTier: fc.constantFrom("ollama", "paid"),
    inputTokens: fc.option(fc.integer({ min: 0, max: 100_000 })),
    outputTokens: fc.option(fc.integer({ min: 0, max: 100_000 })),
    costUsd: fc.option(fc.double({ min: 0, max: 2, noNaN: true })),
    durationMs: fc.integer({ min: 0, max: 200_000 })
  }).map((d): Step => Events.RunCompleted.make({ ...d, doneReason: "stop" })),
  fc.record({
    status: fc.constantFrom(503, 504, 499, 502),
    error: fc.constantFrom("AllHostsUnavailable", "AllAttemptsTimedOut", "ClientAborted", "StreamBroken"),
    message: fc.string({ maxLength: 20 }),
    durationMs: fc.integer({ min: 0, max: 200_000 })
  }).map((d): Step => Events.RunFailed.make(d))
)

interface Script {
  readonly streamId: string
  readonly steps: ReadonlyArray<{ readonly type: string; readonly data: unknown; readonly dt: number }>
  readonly meta: { readonly lane: string; readonly project: string; readonly trace: string }
}

const arbRun = (i: number): fc.Arbitrary<Script> =>
  fc.record({
    lane: fc.constantFrom("alert-fast", "code-review"),
    project: fc.constantFrom("awoooi", "billing"),
    skipped: fc.array(fc.tuple(fc.constantFrom(...hosts), arbSkipReason), { maxLength: 2 }),
    steps: fc.array(arbRunStep, { maxLength: 5 }),
    terminal: fc.option(arbTerminal, { freq: 4 }),
    late: fc.array(fc.oneof(arbRunStep, arbTerminal), { maxLength: 2 }),
    dts: fc.array(fc.integer({ min: 0, max: 3_000 }), { minLength: 12, maxLength: 12 })
  }).map((r) => {
    const streamId = `run-00000000-0000-4000-8000-${String(i).padStart(12, "0")}`
    const steps: Array<Step> = [
      runStarted(streamId, null),
      decided(r.lane, T0, r.skipped.map(([host, reason]) => ({ host, reason })), []),
      ...r.steps,
      ...(r.terminal === null ? [] : [r.terminal]),
      ...r.late
    ]
    return {
      streamId,
      steps: steps.map((step, k) => ({ ...rowOf(step), dt: r.dts[k % r.dts.length]! })),
      meta: { lane: r.lane, project: r.project, trace: `trace-${i % 3}` }
    }
  })

const arbHostStep = (host: string): fc.Arbitrary<Step> => fc.oneof(
  fc.constant<Step>(Events.HostUp.make({ host, latencyMs: 2 })),
  fc.constant<Step>(Events.HostDown.make({ host, error: "connection refused" })),
  fc.integer({ min: 0, max: 60_000 }).map((n): Step => Events.BreakerOpened.make({ host, consecutiveTimeouts: 2, at: T0 + n, until: T0 + n + 30_000, reason: "timeouts" })),
  fc.constant<Step>(Events.BreakerHalfOpened.make({ host, at: T0 })),
  fc.constant<Step>(Events.BreakerClosed.make({ host, at: T0 })),
  fc.array(fc.constantFrom("gemma3:4b", "qwen2.5:14b"), { maxLength: 2 })
    .map((resident): Step => Events.ResidencyChanged.make({ host, resident, loaded: resident, evicted: [] })),
  fc.constant<Step>(Events.MaintenanceOpened.make({ host, open: true, reason: "upgrade", until: T0 + 3_600_000 })),
  fc.constant<Step>(Events.MaintenanceClosed.make({ host, reason: "done", expired: false, openReason: "upgrade", until: T0 + 3_600_000 })),
  fc.constant<Step>({ type: "FromALaterIssue", data: { host, x: 1 } })
)

const arbHost = (host: string): fc.Arbitrary<Script> =>
  fc.array(fc.tuple(arbHostStep(host), fc.integer({ min: 0, max: 5_000 })), { maxLength: 6 }).map((steps) => ({
    streamId: `host-${host}`,
    steps: steps.map(([step, dt]) => ({ ...rowOf(step), dt })),
    meta: { lane: "", project: "", trace: "" }
  }))

interface Scenario {
  readonly scripts: ReadonlyArray<Script>
  /** Random choices: which stream writes next, where transactions end, when the projector runs and how much it takes. */
  readonly picks: ReadonlyArray<number>
}

const arbScenario: fc.Arbitrary<Scenario> = fc.integer({ min: 1, max: 6 }).chain((runs) =>
  fc.record({
    scripts: fc.tuple(
      fc.tuple(...Array.from({ length: runs }, (_, i) => arbRun(i))),
      fc.tuple(...hosts.map(arbHost))
    ).map(([r, h]) => [...r, ...h]),
    picks: fc.array(fc.nat(), { minLength: 120, maxLength: 120 })
  })
)

/** Interleaves the streams (each in its own order) and cuts the result into transactions. */
const plan = (scenario: Scenario) => {
  const queues = scenario.scripts.map((s) => ({ script: s, next: 0, time: T0 }))
  const rows: Array<Row> = []
  let k = 0
  const pick = () => scenario.picks[k++ % scenario.picks.length]!
  for (;;) {
    const open = queues.filter((q) => q.next < q.script.steps.length)
    if (open.length === 0) break
    const q = open[pick() % open.length]!
    const step = q.script.steps[q.next]!
    q.time += step.dt
    rows.push({
      streamId: q.script.streamId,
      streamPosition: q.next,
      type: step.type,
      data: step.data,
      occurredAt: q.time,
      traceId: q.script.meta.trace || null,
      projectId: q.script.meta.project || null,
      lane: q.script.meta.lane || null
    })
    q.next++
  }
  const transactions: Array<{ rows: Array<Row>; projectAfter: number | null }> = []
  for (let i = 0; i < rows.length;) {
    const size = 1 + (pick() % 6)
    const projectAfter = pick() % 3 === 0 ? null : 1 + (pick() % 7)
    transactions.push({ rows: rows.slice(i, i + size), projectAfter })
    i += size
  }
  return transactions
}

const live = (batchSize: number) => ({ schema: liveSchema, source: "journal" as const, batchSize })

/** Every projection table, whole, in a stable order (for before/after comparisons). */
const snapshot = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const tables = ["run_state", "host_state", "cost_ledger", "metrics"]
  const out: Record<string, unknown> = {}
  for (const t of tables) out[t] = yield* sql.unsafe(`SELECT * FROM ${t} ORDER BY 1, 2, 3, 4`)
  return JSON.stringify(out)
})

layer(TestDatabaseLive, { excludeTestServices: true })("projector on PostgreSQL", (it) => {
  it.effect("property: projecting incrementally (any transactions, any batch sizes, re-delivery) equals a rebuild", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const context = yield* Effect.context<SqlClient.SqlClient>()
      const check = (scenario: Scenario) =>
        Effect.gen(function*() {
          const t0 = Date.now()
          yield* resetJournal
          for (const tx of plan(scenario)) {
            yield* insertRows(tx.rows)
            if (tx.projectAfter !== null) yield* catchUp(sql, live(tx.projectAfter))
          }
          assert.strictEqual((yield* catchUpFully(sql, live(3))).behind, 0)
          const projected = yield* snapshot

          // Re-delivery: move the checkpoint back to the start and project everything again.
          yield* writeCheckpoint(sql, liveSchema, "projections", { transactionId: "0", globalPosition: 0 }, 0)
          yield* catchUpFully(sql, live(4))
          const again = yield* snapshot
          if (again !== projected) {
            const [x, y] = [JSON.parse(projected), JSON.parse(again)] as Array<Record<string, Array<unknown>>>
            const table = Object.keys(x).find((t) => JSON.stringify(x[t]) !== JSON.stringify(y[t]))!
            const rows = (r: Array<unknown>) => r.map((v) => JSON.stringify(v))
            assert.deepStrictEqual(rows(y[table]!), rows(x[table]!), `re-delivered events changed ${table}`)
          }

          const verified = yield* verifyProjections(sql, { batchSize: 1 + (scenario.picks[0]! % 50) })
          const runs = scenario.scripts.filter((s) => s.streamId.startsWith("run-") && s.steps.length > 0).length
          const rows = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM run_state`
          assert.strictEqual(rows[0]!.n, runs)
          assert.isTrue(verified.ok, JSON.stringify(verified.diffs))
          if (process.env.PROP_DEBUG) console.log(`scenario: ${plan(scenario).length} tx, ${Date.now() - t0} ms`)
        })
      yield* Effect.promise(() =>
        fc.assert(
          fc.asyncProperty(arbScenario, (scenario) =>
            Effect.runPromise(check(scenario).pipe(
              // A SqlError's message says little: put the database's own in the failure.
              Effect.mapError((e) => new Error(`${e.message}: ${String(e.cause)}`)),
              Effect.provide(context)
            ))),
          { numRuns: Number(process.env.PROP_RUNS ?? 25), endOnFailure: process.env.PROP_NOSHRINK === "1" }
        )
      )
    }), 120_000)

  it.effect("a RouteDecided read back from the journal (hosts' views left in the database) still gives the run its route and skips", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* resetJournal
      const streamId = "run-00000000-0000-4000-8000-0000000000d1"
      const skipped = [{ host: "111", reason: { kind: "circuit-open" as const, until: null } }]
      yield* insertRows([
        at(streamId, 0, runStarted(streamId, null), T0),
        at(streamId, 1, decided("alert-fast", T0, skipped, route.slice(0, 2)), T0)
      ])
      yield* catchUpFully(sql, live(10))
      const rows = yield* sql<{ route: unknown; misses: unknown }>`SELECT route, misses FROM run_state WHERE stream_id = ${streamId}`
      assert.deepStrictEqual(rows[0]!.route, ["gcp-a", "gcp-b", "111"])
      assert.include(JSON.stringify(rows[0]!.misses), "111")
    }))

  it.effect("projectors racing on one database (gateway replicas) serialise on the checkpoint: nothing counted twice", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* resetJournal
      const runs = Array.from({ length: 40 }, (_, i) => incidentRun(`run-00000000-0000-4000-8000-${String(900 + i).padStart(12, "0")}`, T0 + i * 1_000))
      // Interleaved, in several transactions.
      const rows = runs[0]!.flatMap((_, pos) => runs.map((r) => r[pos]!))
      for (let i = 0; i < rows.length; i += 37) yield* insertRows(rows.slice(i, i + 37))
      const racers = [3, 5, 7, 11].map((batchSize, i) => catchUp(sql, { ...live(batchSize), skipLocked: i % 2 === 0 }))
      yield* Effect.all(racers, { concurrency: "unbounded" })
      assert.strictEqual((yield* catchUpFully(sql, live(13))).behind, 0)
      const [ledger] = yield* sql<{ requests: number }>`SELECT sum(requests)::int AS requests FROM cost_ledger`
      assert.strictEqual(ledger!.requests, 40)
      assert.isTrue((yield* verifyProjections(sql)).ok)
    }), 30_000)

  it.effect("archive refuses while old events are not projected, then moves all but each stream's last event", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* resetJournal
      const a = incidentRun("run-00000000-0000-4000-8000-0000000000a1", T0)
      const b = incidentRun("run-00000000-0000-4000-8000-0000000000b2", T0 + 60_000)
      yield* insertRows([...a, ...b].map((e) => ({ ...e })))
      const refused = yield* archive(sql, new Date(T0 + 3_600_000)).pipe(Effect.flip)
      assert.strictEqual(refused._tag, "ArchiveRefused")
      assert.include(refused.message, "14 event(s) older than")
      assert.strictEqual((yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM step_journal_archive`)[0]!.n, 0)

      assert.strictEqual((yield* catchUpFully(sql, live(5))).behind, 0)
      const projected = yield* snapshot
      const dry = yield* archive(sql, new Date(T0 + 3_600_000), { dryRun: true })
      assert.deepStrictEqual([dry.moved, dry.kept, dry.dryRun], [12, 2, true])
      const moved = yield* archive(sql, new Date(T0 + 3_600_000))
      assert.deepStrictEqual([moved.moved, moved.kept], [12, 2])
      const left = yield* sql<{ streamId: string; pos: number }>`
        SELECT stream_id AS "streamId", stream_position AS pos FROM step_journal ORDER BY stream_id`
      assert.deepStrictEqual(left.map((r) => [r.streamId, r.pos]), [[a[0]!.streamId, 6], [b[0]!.streamId, 6]])
      // Projections untouched, and a rebuild (journal + archive) still equals them.
      assert.strictEqual(yield* snapshot, projected)
      assert.isTrue((yield* verifyProjections(sql, { batchSize: 4 })).ok)
      // A re-delivery from the start (the archive is not re-read by the live projector) changes nothing either.
      yield* writeCheckpoint(sql, liveSchema, "projections", { transactionId: "0", globalPosition: 0 }, 0)
      yield* catchUpFully(sql, live(5))
      assert.strictEqual(yield* snapshot, projected)
    }), 30_000)

  it.effect("a transaction that inserted first but committed last is projected, not skipped", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* resetJournal
      const started = (streamId: string, t: number): Row => ({
        streamId,
        streamPosition: 0,
        ...rowOf(runStarted(streamId, null)),
        occurredAt: t,
        traceId: "late-commit",
        projectId: "awoooi",
        lane: "alert-fast"
      })
      const early = "run-00000000-0000-4000-8000-00000000000e"
      const late = "run-00000000-0000-4000-8000-00000000000f"
      const inserted = yield* Deferred.make<void>()
      const commit = yield* Deferred.make<void>()
      // T1: begins and inserts (takes the lower global_position and transaction id), commits only later.
      const t1 = yield* sql.withTransaction(
        insertRows([started(early, T0)]).pipe(
          Effect.zipRight(Deferred.succeed(inserted, undefined)),
          Effect.zipRight(Deferred.await(commit))
        )
      ).pipe(Effect.fork)
      yield* Deferred.await(inserted)
      // T2: inserts and commits while T1 is still open.
      yield* sql.withTransaction(insertRows([started(late, T0 + 1)]))
      const first = yield* catchUp(sql, live(100))
      const projected = () => sql<{ streamId: string }>`SELECT stream_id AS "streamId" FROM run_state ORDER BY stream_id`
      // T2 committed, but it is above the horizon while T1 runs: nothing may be projected past T1's event.
      assert.strictEqual(first.events, 0)
      assert.deepStrictEqual(yield* projected(), [])
      assert.strictEqual((yield* lag(sql)).eventsBehind, 1)

      yield* Deferred.succeed(commit, undefined)
      yield* Fiber.join(t1)
      // T1's event took the lower global position: a reader going by position alone would have skipped it.
      const positions = yield* sql<{ streamId: string; gp: number }>`
        SELECT stream_id AS "streamId", global_position::float8 AS gp FROM step_journal ORDER BY global_position`
      assert.deepStrictEqual(positions.map((p) => p.streamId), [early, late])
      // Other sessions on the server may hold the horizon back for a moment: catchUpFully waits for them.
      assert.strictEqual((yield* catchUpFully(sql, live(100))).behind, 0)
      const seen = yield* projected()
      assert.deepStrictEqual(seen.map((r) => r.streamId), [early, late])
      const checkpoint = (yield* readCheckpoint(sql, liveSchema)) as Checkpoint
      // Ordered by transaction id: T1's event first, then T2's; the checkpoint is T2's event.
      assert.strictEqual(checkpoint.globalPosition, positions.find((p) => p.streamId === late)!.gp)
      assert.strictEqual((yield* lag(sql)).eventsBehind, 0)
    }), 30_000)
})
