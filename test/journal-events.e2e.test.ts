/**
 * What a run leaves in the step journal, read back from the database: the exact event sequence of a
 * success and of a failover, consecutive stream positions, the plan input in RouteDecided (so replay
 * can run plan() again), and the same on the embedded PGlite store.
 */
import { rm } from "node:fs/promises"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { StoredEvent } from "../src/journal/Journal.ts"
import { plan, type Plan, type PlanInput } from "../src/routing/Plan.ts"
import { fakeTokenCount } from "./support/FakeOllama.ts"
import { pgliteDataDir } from "./support/PgliteDataDir.ts"
import { collect, newTraceId, startTestDatabase, startTestGateway, type TestDatabaseHandle, type TestGateway, typesOf } from "./support/TestGateway.ts"

const dataOf = (e: StoredEvent | undefined) => (e?.data ?? {}) as Record<string, unknown>

const generate = async (gw: TestGateway, prompt: string, extra: Record<string, string> = {}) => {
  const traceId = newTraceId()
  const res = await gw.post("/api/generate", { model: "gemma3:4b", prompt, stream: false }, { "x-awooop-lane": "alert-fast", "x-awooop-trace-id": traceId, ...extra })
  await res.arrayBuffer()
  return { res, traceId, runId: res.headers.get("x-awooop-run-id") }
}

/** The events of one trace: a single run stream, checked for consecutive positions. */
const oneRun = (events: ReadonlyArray<StoredEvent>) => {
  const streams = new Set(events.map((e) => e.streamId))
  expect(streams.size).toBe(1)
  expect(events.map((e) => e.streamPosition)).toEqual(events.map((_, i) => i))
  return events
}

describe("step journal on PostgreSQL", () => {
  let db: TestDatabaseHandle
  let gw: TestGateway
  beforeAll(async () => {
    db = await startTestDatabase()
    gw = await startTestGateway({ database: db, breaker: { consecutiveTimeouts: 2, cooldown: "30s" } })
  })
  afterAll(async () => {
    await gw?.close()
    await db?.close()
  })

  it("a success: RunStarted → RouteDecided → AttemptStarted → AttemptSucceeded → RunCompleted (tokens)", async () => {
    const prompt = "why is the alert firing on db-7?"
    const { res, traceId, runId } = await generate(gw, prompt, { "x-awooop-project-id": "awoooi", "x-awooop-intent": "DIAGNOSE" })
    expect(res.status).toBe(200)
    const events = oneRun(await gw.runEvents(traceId))
    expect(typesOf(events)).toEqual(["RunStarted", "RouteDecided", "AttemptStarted", "AttemptSucceeded", "RunCompleted"])
    expect(events[0]!.streamId).toBe(`run-${runId}`)
    for (const e of events) expect(e).toMatchObject({ traceId, projectId: "awoooi", lane: "alert-fast" })

    expect(dataOf(events[0])).toMatchObject({ runId, operation: "generate", stream: false, requestedModel: "gemma3:4b", assignedModel: "gemma3:4b", intent: "DIAGNOSE" })
    expect(dataOf(events[0])).not.toHaveProperty("prompt") // prompts are not journaled by default
    expect(dataOf(events[2])).toMatchObject({ attempt: 1, host: "gcp-a", timeoutMs: 300, slotPool: "reserved" })
    expect(dataOf(events[3])).toMatchObject({ host: "gcp-a" })
    expect(dataOf(events[4])).toMatchObject({
      endpoint: "gcp-a",
      providerTier: "ollama",
      inputTokens: fakeTokenCount(prompt),
      outputTokens: 3,
      doneReason: "stop",
      costUsd: 0
    })
    expect(typeof dataOf(events[4]).durationMs).toBe("number")
    for (let i = 1; i < events.length; i++) expect(events[i]!.occurredAt).toBeGreaterThanOrEqual(events[i - 1]!.occurredAt)
  })

  it("RouteDecided holds the whole plan input: replaying plan() on it gives the recorded plan", async () => {
    const { traceId } = await generate(gw, "replay me")
    const decided = (await gw.runEvents(traceId)).find((e) => e.type === "RouteDecided")!
    const { input, plan: recorded } = decided.data as { input: PlanInput; plan: Plan }
    expect(input.lane).toBe("alert-fast")
    expect(input.model).toBe("gemma3:4b")
    expect(input.route).toEqual([
      { host: "gcp-a", timeoutMs: 300, when: "always" },
      { host: "gcp-b", timeoutMs: 300, when: "always" },
      { host: "111", timeoutMs: 300, when: "always" }
    ])
    expect(input.policy).toEqual({ heavyModelMinParamsB: 14 })
    expect(typeof input.now).toBe("number")
    // The host/breaker/slot snapshot it was decided on.
    expect(Object.keys(input.hosts).sort()).toEqual(["111", "gcp-a", "gcp-b"])
    expect(input.hosts["gcp-a"]).toMatchObject({
      protected: true,
      health: "up",
      breaker: { status: "closed", reopensAt: null, probeInFlight: false },
      maintenance: { open: false, until: null },
      slots: { total: 4, inUse: 0, freeForLane: 4 }
    })
    expect(input.hosts["gcp-a"]!.installed).toContainEqual({ name: "gemma3:4b", parameterSize: "4.3B" })
    expect(plan(input)).toEqual(recorded)
    expect(recorded.attempts.map((a) => a.host)).toEqual(["gcp-a", "gcp-b", "111"])
  })

  it("a streaming success has the same sequence, with the time to first chunk", async () => {
    const traceId = newTraceId()
    const parts = await collect(await gw.ollama({ "x-awooop-lane": "alert-fast", "x-awooop-trace-id": traceId }).generate({ model: "gemma3:4b", prompt: "stream it", stream: true }))
    expect(parts.at(-1)?.done).toBe(true)
    const events = oneRun(await gw.runEvents(traceId))
    expect(typesOf(events)).toEqual(["RunStarted", "RouteDecided", "AttemptStarted", "AttemptSucceeded", "RunCompleted"])
    expect(dataOf(events[0])).toMatchObject({ stream: true })
    expect(typeof dataOf(events[3]).firstChunkMs).toBe("number")
    expect(dataOf(events[4])).toMatchObject({ endpoint: "gcp-a", outputTokens: 3, inputTokens: fakeTokenCount("stream it") })
  })

  it("a failover: the failed attempt with its reason and duration, then the next host", async () => {
    gw.fakes["gcp-a"]!.setMode("error500")
    const { res, traceId } = await generate(gw, "fail over")
    gw.fakes["gcp-a"]!.setMode("ok")
    expect(res.status).toBe(200)
    const events = oneRun(await gw.runEvents(traceId))
    expect(typesOf(events)).toEqual(["RunStarted", "RouteDecided", "AttemptStarted", "AttemptFailed", "AttemptStarted", "AttemptSucceeded", "RunCompleted"])
    expect(dataOf(events[2])).toMatchObject({ attempt: 1, host: "gcp-a" })
    expect(dataOf(events[3])).toMatchObject({ attempt: 1, host: "gcp-a", kind: "server-error", status: 500, afterFirstChunk: false })
    expect(dataOf(events[3]).message).toContain("runner crashed")
    expect(typeof dataOf(events[3]).durationMs).toBe("number")
    expect(dataOf(events[4])).toMatchObject({ attempt: 2, host: "gcp-b" })
    expect(dataOf(events[6])).toMatchObject({ endpoint: "gcp-b" })
  })

  it("timeouts: each AttemptFailed says timeout; the breaker opening lands on the host's stream", async () => {
    gw.fakes["gcp-a"]!.setMode("hang")
    const first = await generate(gw, "slow 1")
    const second = await generate(gw, "slow 2")
    gw.fakes["gcp-a"]!.setMode("ok")
    for (const { traceId } of [first, second]) {
      const events = oneRun(await gw.runEvents(traceId))
      expect(typesOf(events)).toEqual(["RunStarted", "RouteDecided", "AttemptStarted", "AttemptFailed", "AttemptStarted", "AttemptSucceeded", "RunCompleted"])
      const failed = dataOf(events[3])
      expect(failed).toMatchObject({ host: "gcp-a", kind: "timeout" })
      expect(failed.durationMs as number).toBeGreaterThanOrEqual(295)
    }
    const host = await gw.streamEvents("host-gcp-a")
    expect(host.map((e) => e.streamPosition)).toEqual(host.map((_, i) => i))
    const opened = host.filter((e) => e.type === "BreakerOpened")
    expect(opened).toHaveLength(1)
    expect(opened[0]).toMatchObject({ traceId: null, lane: null })
    expect(dataOf(opened[0])).toMatchObject({ host: "gcp-a", consecutiveTimeouts: 2 })

    // The next run records the open breaker in its snapshot and skips the host.
    const third = await generate(gw, "after")
    const events = oneRun(await gw.runEvents(third.traceId))
    expect(typesOf(events)).toEqual(["RunStarted", "RouteDecided", "AttemptStarted", "AttemptSucceeded", "RunCompleted"])
    const decided = events[1]!.data as { input: PlanInput; plan: Plan }
    expect(decided.input.hosts["gcp-a"]!.breaker.status).toBe("open")
    expect(decided.plan.skipped).toEqual([{ host: "gcp-a", reason: { kind: "circuit-open", until: expect.any(Number) } }])
    expect(plan(decided.input)).toEqual(decided.plan)
  })

  it("rows carry the writing transaction id, and global positions grow", async () => {
    const { traceId } = await generate(gw, "columns")
    await gw.runEvents(traceId)
    const rows = await gw.query<{ global_position: string; transaction_id: string; stream_position: number; type: string }>(
      "SELECT global_position::text, transaction_id::text, stream_position, type FROM step_journal WHERE trace_id = $1 ORDER BY global_position",
      [traceId]
    )
    expect(rows.map((r) => r.type)).toEqual(["RunStarted", "RouteDecided", "AttemptStarted", "AttemptSucceeded", "RunCompleted"])
    expect(rows.every((r) => /^\d+$/.test(r.transaction_id))).toBe(true)
    const positions = rows.map((r) => BigInt(r.global_position))
    for (let i = 1; i < positions.length; i++) expect(positions[i]! > positions[i - 1]!).toBe(true)
  })

  it("refusals are journaled too: the async-only lane → RunStarted, RunFailed(409)", async () => {
    const traceId = newTraceId()
    // A generate/chat there becomes an async run (202); an embed still cannot.
    const res = await gw.post("/api/embed", { model: "qwen2.5:14b", input: "x" }, { "x-awooop-lane": "deep-rca", "x-awooop-trace-id": traceId })
    expect(res.status).toBe(409)
    const events = oneRun(await gw.runEvents(traceId))
    expect(typesOf(events)).toEqual(["RunStarted", "RunFailed"])
    expect(dataOf(events[1])).toMatchObject({ status: 409, error: "AsyncOnlyLane" })
  })

  it("a restarted gateway continues the host streams where they ended (no event lost to a position clash)", async () => {
    const before = await gw.streamEvents("host-gcp-a")
    await gw.close()
    const again = await startTestGateway({ database: db })
    try {
      await generate(again, "after restart")
      const host = await again.streamEvents("host-gcp-a")
      expect(host.map((e) => e.streamPosition)).toEqual(host.map((_, i) => i))
      expect(host.length).toBeGreaterThan(before.length)
      expect(host.slice(before.length).map((e) => e.type)).toContain("HostUp")
    } finally {
      await again.close()
    }
  })
})

describe("step journal on the embedded PGlite store", () => {
  let dir: string
  beforeAll(async () => {
    dir = await pgliteDataDir()
  })
  afterAll(() => rm(dir, { recursive: true, force: true }))

  it("a run is journaled there the same way", async () => {
    const gw = await startTestGateway({ database: { embedded: dir } })
    try {
      const { res, traceId } = await generate(gw, "embedded")
      expect(res.status).toBe(200)
      const events = oneRun(await gw.runEvents(traceId))
      expect(typesOf(events)).toEqual(["RunStarted", "RouteDecided", "AttemptStarted", "AttemptSucceeded", "RunCompleted"])
      expect(dataOf(events[4])).toMatchObject({ endpoint: "gcp-a", inputTokens: fakeTokenCount("embedded"), outputTokens: 3 })
      const rows = await gw.query<{ n: number }>("SELECT count(*)::int AS n FROM step_journal WHERE trace_id = $1", [traceId])
      expect(rows[0]!.n).toBe(5)
    } finally {
      await gw.close()
    }
  }, 60_000)
})
