/**
 * Async runs (the runbook's deep-rca lane), in process: submit, poll to success, follow the lane's
 * route, cancel, the workers' own concurrency, and a graceful restart that resumes a run.
 * (test/async-runs-restart.e2e.test.ts kills a real gateway process mid-run.)
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Events from "../src/domain/Events.ts"
import {
  newTraceId,
  startTestDatabase,
  startTestGateway,
  type TestDatabaseHandle,
  type TestGateway,
  typesOf
} from "./support/TestGateway.ts"

let db: TestDatabaseHandle
beforeAll(async () => {
  db = await startTestDatabase()
})
afterAll(() => db?.close())

interface RunView {
  runId: string
  lane: string
  status: string
  attempts: number
  attemptLog: Array<{ attempt: number; host: string; outcome: string; kind: string | null }>
  error: { status: number; code: string; message: string } | null
  result: Record<string, unknown> | null
  statusUrl: string
}

const until = async <T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 10_000): Promise<T> => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (value !== undefined && value !== false) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

const getRun = async (gw: TestGateway, runId: string): Promise<RunView> => {
  const res = await fetch(`${gw.url}/awooop/runs/${runId}`)
  expect(res.status).toBe(200)
  return (await res.json()) as RunView
}

const waitFor = (gw: TestGateway, runId: string, status: string, timeoutMs?: number) =>
  until(`run ${runId} ${status}`, async () => {
    const run = await getRun(gw, runId)
    return run.status === status ? run : undefined
  }, timeoutMs)

const submitGenerate = async (gw: TestGateway, prompt = "what broke at 03:12?") => {
  const traceId = newTraceId()
  const res = await gw.post("/api/generate", { model: "qwen2.5:14b", prompt, stream: false }, { "x-awooop-lane": "deep-rca", "x-awooop-trace-id": traceId })
  expect(res.status).toBe(202)
  const body = (await res.json()) as { runId: string; status: string; statusUrl: string; lane: string; traceId: string }
  return { res, body, traceId }
}

const del = (gw: TestGateway, runId: string) => fetch(`${gw.url}/awooop/runs/${runId}`, { method: "DELETE" })

describe("async runs on deep-rca", () => {
  let gw: TestGateway
  beforeAll(async () => {
    gw = await startTestGateway({ database: db })
  })
  afterAll(() => gw?.close())
  const reset = () => {
    for (const f of Object.values(gw.fakes)) {
      f.setMode("ok", { delayMs: 50, chunks: 3 })
      f.reset()
    }
  }

  it("a synchronous generate answers 202 with a run id and status URL; polling shows it succeed with the Ollama-shaped result", async () => {
    reset()
    const { res, body, traceId } = await submitGenerate(gw)
    expect(body).toMatchObject({ status: "queued", lane: "deep-rca", traceId, statusUrl: `/awooop/runs/${body.runId}` })
    expect(res.headers.get("location")).toBe(body.statusUrl)
    expect(res.headers.get("x-awooop-run-id")).toBe(body.runId)

    const done = await waitFor(gw, body.runId, "succeeded")
    expect(done.attempts).toBe(1)
    expect(done.attemptLog).toMatchObject([{ attempt: 1, host: "111", outcome: "succeeded" }])
    expect(done.result).toMatchObject({ model: "qwen2.5:14b", response: "[111] hello world", done: true, done_reason: "stop" })
    expect(done.error).toBeNull()
    // Executed once, non-streaming, with the lane's model.
    const sent = gw.fakes["111"]!.requests.filter((r) => r.path === "/api/generate")
    expect(sent.map((r) => r.body)).toMatchObject([{ model: "qwen2.5:14b", stream: false, prompt: "what broke at 03:12?" }])

    const events = await gw.runEvents(traceId)
    expect(typesOf(events)).toEqual(["RunStarted", "RunDequeued", "RouteDecided", "AttemptStarted", "AttemptSucceeded", "RunCompleted"])
    expect(events[0]!.data).toMatchObject({ async: true, via: "inference", operation: "generate" })
    // The prompt stays out of the journal (server.journalPrompts is off).
    expect(JSON.stringify(events.map((e) => e.data))).not.toContain("what broke")
    // …and out of the run store once the run has ended; the result stays. The row is finished after
    // the journal has the run's end (AsyncRuns.ts finishRow), so the status can say "succeeded" first.
    const row = await until("the run's row finished", async () => {
      const [r] = await gw.query<{ request: unknown; result: unknown; finished_at: Date | null }>(
        "SELECT request, result, finished_at FROM async_runs WHERE run_id = $1", [body.runId]
      )
      return r?.finished_at === null ? undefined : r
    })
    expect(row).toMatchObject({ request: null, result: { response: "[111] hello world" } })
  })

  it("POST /awooop/runs submits explicitly (chat); bad bodies are 400", async () => {
    reset()
    const res = await gw.post("/awooop/runs", { operation: "chat", model: "qwen2.5:14b", messages: [{ role: "user", content: "root cause?" }] }, { "x-awooop-lane": "deep-rca" })
    expect(res.status).toBe(202)
    const { runId } = (await res.json()) as { runId: string }
    const done = await waitFor(gw, runId, "succeeded")
    expect(done.result).toMatchObject({ message: { role: "assistant", content: "[111] hello world" }, done: true })

    expect((await gw.post("/awooop/runs", { operation: "embed", model: "bge-m3", input: "x" }, { "x-awooop-lane": "deep-rca" })).status).toBe(400)
    expect((await gw.post("/awooop/runs", { prompt: "no model" }, { "x-awooop-lane": "deep-rca" })).status).toBe(400)
    expect((await gw.post("/awooop/runs", { model: "x", prompt: "y" }, { "x-awooop-lane": "nope" })).status).toBe(400)
    expect((await fetch(`${gw.url}/awooop/runs/not-a-uuid`)).status).toBe(400)
    expect((await fetch(`${gw.url}/awooop/runs/${crypto.randomUUID()}`, { method: "DELETE" })).status).toBe(404)
  })

  it("a run follows the lane's route: 111 failing, gpu-node answers; the attempts say so", async () => {
    reset()
    gw.fakes["111"]!.setMode("error500")
    const { body } = await submitGenerate(gw)
    const done = await waitFor(gw, body.runId, "succeeded")
    expect(done.attempts).toBe(2)
    expect(done.attemptLog).toMatchObject([
      { attempt: 1, host: "111", outcome: "failed", kind: "server-error" },
      { attempt: 2, host: "gpu-node", outcome: "succeeded" }
    ])
    expect(done.result).toMatchObject({ response: "[gpu-node] hello world" })
  })

  it("a run whose every host fails ends failed, with the lane's error", async () => {
    reset()
    gw.fakes["111"]!.setMode("error500")
    gw.fakes["gpu-node"]!.setMode("error500")
    const { body } = await submitGenerate(gw)
    const done = await waitFor(gw, body.runId, "failed")
    expect(done.error).toMatchObject({ status: 503, code: "AllHostsUnavailable" })
    expect(done.result).toBeNull()
  })

  it("DELETE cancels a running run (its host request is dropped) and a queued one; a finished run is 409", async () => {
    reset()
    gw.fakes["111"]!.setMode("hang")
    gw.fakes["gpu-node"]!.setMode("hang")
    const running = await submitGenerate(gw, "hangs")
    await waitFor(gw, running.body.runId, "running")
    await until("the host has it", async () => gw.fakes["111"]!.inFlight() === 1)

    const cancelled = await del(gw, running.body.runId)
    expect(cancelled.status).toBe(200)
    expect(await cancelled.json()).toMatchObject({ status: "cancelled", error: { code: "RunCancelled" } })
    await until("the host request is dropped", async () => gw.fakes["111"]!.inFlight() === 0)
    expect((await del(gw, running.body.runId)).status).toBe(409)
    expect((await getRun(gw, running.body.runId)).status).toBe("cancelled")

    const events = await gw.runEvents(running.traceId)
    expect(typesOf(events).slice(-1)).toEqual(["RunFailed"])
    expect(events.at(-1)!.data).toMatchObject({ status: 499, error: "RunCancelled" })
  })
})

describe("async runs: the workers' own concurrency", () => {
  let gw: TestGateway
  beforeAll(async () => {
    gw = await startTestGateway({ database: db, extra: { asyncRuns: { workers: 1 } } })
  })
  afterAll(() => gw?.close())

  it("with one worker, runs execute one at a time although the host has two slots; a queued run can be cancelled", async () => {
    const host = gw.fakes["111"]!
    host.setMode("slow", { delayMs: 300 })
    host.reset()
    const runs = [await submitGenerate(gw, "a"), await submitGenerate(gw, "b"), await submitGenerate(gw, "c")]
    // The third is still queued behind the first two: cancel it.
    const third = await getRun(gw, runs[2]!.body.runId)
    expect(third.status).toBe("queued")
    const cancelled = await del(gw, runs[2]!.body.runId)
    expect(cancelled.status).toBe(200)
    expect(await cancelled.json()).toMatchObject({ status: "cancelled", attempts: 0 })

    for (const r of runs.slice(0, 2)) await waitFor(gw, r.body.runId, "succeeded")
    expect(host.maxInFlight()).toBe(1)
    expect(host.requests.filter((r) => r.path === "/api/generate").map((r) => (r.body as { prompt: string }).prompt)).toEqual(["a", "b"])
  })
})

describe("async runs: a graceful restart resumes a running run", () => {
  it("the run is suspended at shutdown, requeued at start with its attempt count, and finishes once", async () => {
    const first = await startTestGateway({ database: db })
    first.fakes["111"]!.setMode("hang")
    first.fakes["gpu-node"]!.setMode("hang")
    const { body, traceId } = await submitGenerate(first)
    await until("attempt 1 on 111", async () => (await getRun(first, body.runId)).attempts === 1)
    await first.close()

    const second = await startTestGateway({ database: db })
    try {
      const done = await waitFor(second, body.runId, "succeeded")
      expect(done.attempts).toBe(2)
      expect(done.attemptLog).toMatchObject([
        { attempt: 1, host: "111", outcome: "interrupted" },
        { attempt: 2, host: "111", outcome: "succeeded" }
      ])
      const events = await second.runEvents(traceId)
      expect(typesOf(events)).toEqual([
        "RunStarted", "RunDequeued", "RouteDecided", "AttemptStarted", "RunSuspended",
        "RunRequeued", "RunDequeued", "RouteDecided", "AttemptStarted", "AttemptSucceeded", "RunCompleted"
      ])
      expect(events[5]!.data).toMatchObject({ attemptsSoFar: 1, was: "queued" })
      expect(events.map((e) => e.streamPosition)).toEqual(events.map((_, i) => i))
    } finally {
      await second.close()
    }
  })
})

describe("async runs: recovery from the journal (given its events, when a gateway starts)", () => {
  it("a paid call settled before the stop is never repeated; a stored answer whose RunCompleted was lost is completed, not re-run", async () => {
    const seeder = await startTestGateway({ database: db })
    const paidRun = crypto.randomUUID()
    const storedRun = crypto.randomUUID()
    const traceId = newTraceId()
    const caller = { projectId: "awoooi", traceId, parentSpanId: null, lane: "deep-rca", intent: null, legacy: false, traceMinted: false }
    const facts = { intent: null, caller: null, legacy: false, traceMinted: false, parentSpanId: null }
    const started = (runId: string) =>
      Events.RunStarted.make({ runId, async: true, via: "inference", operation: "generate", stream: false, requestedModel: "qwen2.5:14b", assignedModel: "qwen2.5:14b", ...facts })
    const given: Record<string, Array<Events.RunEvent>> = {
      [paidRun]: [
        started(paidRun),
        Events.RunDequeued.make({ attemptsSoFar: 0 }),
        Events.AttemptStarted.make({ attempt: 1, host: "111", timeoutMs: 2_000 }),
        Events.AttemptFailed.make({ attempt: 1, host: "111", kind: "timeout", message: "no answer" }),
        Events.PaidFallbackRequested.make({ reason: "all Ollama endpoints failed: 111 timeout", providers: ["gemini"], direct: false }),
        Events.BudgetReserved.make({
          reservationId: "res-1", provider: "gemini", model: "gemini-2.5-flash", amountUsd: 0.01, inputTokensEstimate: 3, maxOutputTokens: 256,
          inputUsdPerMillion: 0.3, outputUsdPerMillion: 2.5, capUsd: 5, committedUsd: 0, periodStart: new Date().toISOString()
        }),
        Events.AttemptStarted.make({ attempt: 2, host: "gemini", provider: "gemini", tier: "paid", timeoutMs: 2_000 }),
        Events.BudgetSettled.make({
          reservationId: "res-1", provider: "gemini", model: "gemini-2.5-flash", reservedUsd: 0.01, costUsd: 0.002, chargedUsd: 0.002,
          inputTokens: 3, outputTokens: 2, usageKnown: true, note: "answered"
        })
      ],
      [storedRun]: [
        started(storedRun),
        Events.RunDequeued.make({ attemptsSoFar: 0 }),
        Events.AttemptStarted.make({ attempt: 1, host: "111", timeoutMs: 2_000 }),
        Events.AttemptSucceeded.make({ host: "111", durationMs: 5, firstChunkMs: null })
      ]
    }
    for (const [runId, events] of Object.entries(given)) {
      await seeder.query(
        "INSERT INTO async_runs (run_id, lane, operation, request, caller, result) VALUES ($1, 'deep-rca', 'generate', $2::jsonb, $3::jsonb, $4::jsonb)",
        [
          runId,
          JSON.stringify({ model: "qwen2.5:14b", prompt: "seeded" }),
          JSON.stringify(caller),
          runId === storedRun ? JSON.stringify({ model: "qwen2.5:14b", response: "stored answer", done: true, prompt_eval_count: 3, eval_count: 2 }) : null
        ]
      )
      for (const [i, { data, type }] of events.map(Events.toRow).entries()) {
        await seeder.query(
          "INSERT INTO step_journal (stream_id, stream_position, trace_id, project_id, lane, type, data, occurred_at) VALUES ($1, $2, $3, 'awoooi', 'deep-rca', $4, $5::jsonb, now())",
          [`run-${runId}`, i, traceId, type, JSON.stringify(data)]
        )
      }
    }
    await seeder.close()

    const gw = await startTestGateway({ database: db })
    try {
      const paid = await waitFor(gw, paidRun, "failed")
      expect(paid.error).toMatchObject({ status: 502, code: "PaidCallNotRepeated" })
      expect(paid.error!.message).toContain("res-1 (settled)")
      const stored = await waitFor(gw, storedRun, "succeeded")
      expect(stored.result).toMatchObject({ response: "stored answer" })
      const completed = (await gw.streamEvents(`run-${storedRun}`)).filter((e) => e.type === "RunCompleted")
      expect(completed.map((e) => e.data)).toMatchObject([{ recovered: true, endpoint: "111", inputTokens: 3, outputTokens: 2 }])
      // Neither was sent anywhere again.
      await new Promise((r) => setTimeout(r, 300))
      for (const fake of Object.values(gw.fakes)) expect(fake.requests.filter((r) => JSON.stringify(r.body ?? "").includes("seeded"))).toEqual([])
      // Both rows finished (after the journal has each run's end, so possibly after the status said so).
      await until("both rows finished", async () =>
        (await gw.query<{ n: number }>("SELECT count(*)::int AS n FROM async_runs WHERE run_id = ANY($1) AND finished_at IS NULL", [[paidRun, storedRun]]))[0]!.n === 0)
    } finally {
      await gw.close()
    }
  })
})
