/**
 * The run invariant (issue 12 item 3): every run stream with RunStarted ends in exactly one terminal
 * event — also when the run dies of a defect, is interrupted, or its process is killed.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Exit, Fiber } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Journal } from "../src/journal/Journal.ts"
import { closeOrphanedRuns } from "../src/journal/Orphans.ts"
import { checkRunEnds } from "../src/journal/RunEnds.ts"
import { Gateway } from "../src/routing/Gateway.ts"
import type { LaneRequest } from "../src/run/Run.ts"
import { newTraceId, startTestGateway, type TestGateway, typesOf } from "./support/TestGateway.ts"

const request = (body: Record<string, unknown>): LaneRequest => ({
  operation: "generate",
  body: { model: "gemma3:4b", prompt: "why?", stream: false, ...body },
  stream: false,
  caller: { projectId: "p", traceId: newTraceId(), parentSpanId: null, lane: "alert-fast", intent: null, legacy: false, traceMinted: true },
  prompt: null
})

describe("every run ends once", () => {
  let gw: TestGateway
  beforeAll(async () => {
    gw = await startTestGateway()
  })
  afterAll(() => gw?.close())

  const handle = (req: LaneRequest) =>
    gw.run(Effect.gen(function*() {
      const gateway = yield* Gateway
      return yield* gateway.lanes.get("alert-fast")!.handle(req).pipe(Effect.scoped, Effect.exit)
    }))

  it("a defect inside the run (a body the lane cannot serialise) ends it with RunFailed 500, once", async () => {
    const req = request({ options: { seed: 10n } }) // JSON.stringify throws on a BigInt: a defect, not an error
    const exit = await handle(req)
    expect(Exit.isFailure(exit) && !Exit.isInterrupted(exit)).toBe(true)
    const events = await gw.runEvents(req.caller.traceId)
    expect(typesOf(events)).toEqual(["RunStarted", "RouteDecided", "RunFailed"])
    expect(events.at(-1)!.data).toMatchObject({ status: 500, error: "InternalError" })
  })

  it("an interruption mid-attempt ends it with RunFailed 499 and settles the attempt", async () => {
    gw.fakes["gcp-a"]!.setMode("hang")
    const req = request({})
    await gw.run(Effect.gen(function*() {
      const gateway = yield* Gateway
      const fiber = yield* Effect.fork(Effect.scoped(gateway.lanes.get("alert-fast")!.handle(req)))
      yield* Effect.promise(async () => {
        const deadline = Date.now() + 10_000
        while (gw.fakes["gcp-a"]!.inFlight() === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
      })
      yield* Fiber.interrupt(fiber)
    }))
    gw.fakes["gcp-a"]!.setMode("ok")
    const events = await gw.runEvents(req.caller.traceId)
    expect(typesOf(events)).toEqual(["RunStarted", "RouteDecided", "AttemptStarted", "AttemptFailed", "RunFailed"])
    expect(events[3]!.data).toMatchObject({ attempt: 1, kind: "interrupted" })
    expect(events.at(-1)!.data).toMatchObject({ status: 499, error: "ClientAborted" })
  })

  it("runs of a process that is gone are ended orphaned at start-up; this process's and async ones are left alone", async () => {
    const report = await gw.run(Effect.gen(function*() {
      const journal = yield* Journal
      const sql = yield* SqlClient.SqlClient
      const at = Date.now()
      const base = { traceId: newTraceId(), projectId: "p", lane: "alert-fast", occurredAt: at }
      const dead = `run-${crypto.randomUUID()}`
      const mine = `run-${crypto.randomUUID()}`
      const queued = `run-${crypto.randomUUID()}`
      yield* journal.appendAll([
        { ...base, streamId: dead, streamPosition: 0, type: "RunStarted", data: { instance: "a-killed-process" } },
        { ...base, streamId: dead, streamPosition: 1, type: "AttemptStarted", data: { attempt: 1, host: "gcp-a" } },
        { ...base, streamId: mine, streamPosition: 0, type: "RunStarted", data: { instance: journal.instance } },
        { ...base, streamId: queued, streamPosition: 0, type: "RunStarted", data: { async: true, instance: "a-killed-process" } }
      ])
      yield* journal.flush
      const closed = yield* closeOrphanedRuns(journal, sql, (instance) => instance === journal.instance)
      const again = yield* closeOrphanedRuns(journal, sql, (instance) => instance === journal.instance)
      return { closed, again, dead, mine, queued, dead_: yield* journal.readStream(dead), mine_: yield* journal.readStream(mine), queued_: yield* journal.readStream(queued) }
    }))
    expect(report.closed.streams).toEqual([report.dead])
    expect(report.again.closed).toBe(0)
    expect(typesOf(report.dead_)).toEqual(["RunStarted", "AttemptStarted", "AttemptFailed", "RunFailed"])
    expect(report.dead_.at(-1)!.data).toMatchObject({ orphaned: true, error: "Orphaned", instance: "a-killed-process" })
    expect(typesOf(report.mine_)).toEqual(["RunStarted"])
    expect(typesOf(report.queued_)).toEqual(["RunStarted"])
    // The check sees what is left open: this process's run (in flight) and the queued async one.
    const ends = await gw.run(Effect.flatMap(SqlClient.SqlClient, (sql) => checkRunEnds(sql)))
    expect(ends.violations.map((v) => v.streamId).sort()).toEqual([report.mine, report.queued].sort())
    expect(ends.multiple).toBe(0)
  })
})
