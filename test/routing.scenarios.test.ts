/**
 * The runbook's routing scenarios that turn on step timeouts and breaker cooldowns, under TestClock:
 * the real host and lane actors with scripted hosts and an in-memory journal
 * (test/support/ScriptedGateway.ts), so a 300 ms step timeout or a 1 s cooldown costs no real time.
 * What the wire adds (headers, `{"error"}` bodies, the real clients) is tested end to end in
 * routing.e2e.test.ts and the protocol suites.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import type { StoredEvent } from "../src/journal/Journal.ts"
import { type Answer, makeScriptedGateway, type ScriptedGateway } from "./support/ScriptedGateway.ts"
import { typesOf } from "./support/TestGateway.ts"

const ofType = (events: ReadonlyArray<StoredEvent>, type: string) => events.filter((e) => e.type === type)
const dataOf = (e: StoredEvent | undefined) => (e?.data ?? {}) as Record<string, unknown>

/** An error answer: the status the edge renders and every name its message must carry. */
const expectError = (answer: Answer, status: number, ...mentions: Array<string>) => {
  expect(answer.error?.status, answer.error?.message).toBe(status)
  for (const m of mentions) expect(answer.error!.message).toContain(m)
}

/** Each run stream in the journal: RunStarted first, one terminal event last, every attempt with an outcome. */
const expectRunsWellFormed = (gw: ScriptedGateway) => {
  const runs = new Map<string, Array<StoredEvent>>()
  for (const e of gw.journal.events()) if (e.streamId.startsWith("run-")) runs.set(e.streamId, [...(runs.get(e.streamId) ?? []), e])
  for (const [stream, events] of runs) {
    const types = events.map((e) => e.type)
    expect(events.map((e) => e.streamPosition), stream).toEqual(events.map((_, i) => i))
    expect(types[0], stream).toBe("RunStarted")
    expect(types.filter((t) => t === "RunCompleted" || t === "RunFailed"), `${stream}: ${types.join(",")}`).toHaveLength(1)
    expect(["RunCompleted", "RunFailed"], `${stream}: ${types.join(",")}`).toContain(types.at(-1))
    const started = types.filter((t) => t === "AttemptStarted").length
    expect(types.filter((t) => t === "AttemptFailed" || t === "AttemptSucceeded").length, `${stream}: ${types.join(",")}`).toBe(started)
  }
  return runs.size
}

describe("alert-fast walks gcp-a → gcp-b → 111 (TestClock)", () => {
  // A high breaker threshold: this block is about the walk, not the breaker.
  const walk = makeScriptedGateway({ breaker: { consecutiveTimeouts: 100 } })

  it.scoped("gcp-a hanging: its step times out after the step's timeout and gcp-b answers", () =>
    Effect.gen(function*() {
      const gw = yield* walk
      gw.host("gcp-a").script({ _tag: "Hang" })
      gw.host("gcp-b").script({ _tag: "Answer", afterMs: 50 })
      const a = yield* gw.generate("alert-fast")
      expect(a.error).toBeNull()
      expect(a.endpoint).toBe("gcp-b")
      expect(a.text).toBe("[gcp-b] hello world")
      expect(a.ms).toBeGreaterThanOrEqual(300)
      const events = yield* gw.runEvents(a.traceId)
      const failed = ofType(events, "AttemptFailed")
      expect(failed.map((e) => [dataOf(e).host, dataOf(e).kind])).toEqual([["gcp-a", "timeout"]])
      expect(dataOf(ofType(events, "RunCompleted")[0]).endpoint).toBe("gcp-b")
      expectRunsWellFormed(gw)
    }))

  it.scoped("gcp-a hanging and gcp-b slow: both steps time out and 111 answers", () =>
    Effect.gen(function*() {
      const gw = yield* walk
      gw.host("gcp-a").script({ _tag: "Hang" })
      gw.host("gcp-b").script({ _tag: "Answer", afterMs: 2_000 })
      const a = yield* gw.generate("alert-fast")
      expect(a.error).toBeNull()
      expect(a.endpoint).toBe("111")
      expect(a.text).toBe("[111] hello world")
      expect(a.ms).toBeGreaterThanOrEqual(600)
      const events = yield* gw.runEvents(a.traceId)
      expect(ofType(events, "AttemptStarted").map((e) => dataOf(e).host)).toEqual(["gcp-a", "gcp-b", "111"])
      expectRunsWellFormed(gw)
    }))

  it.scoped("streaming: a host that sends nothing before the step timeout is failed over too", () =>
    Effect.gen(function*() {
      const gw = yield* walk
      gw.host("gcp-a").script({ _tag: "Hang" })
      const a = yield* gw.generate("alert-fast", { stream: true })
      expect(a.lines.map((p) => p.response).join("")).toBe("[gcp-b] hello world")
      expect(a.lines.at(-1)?.done).toBe(true)
      expectRunsWellFormed(gw)
    }))

  it.scoped("every host timing out → 504 naming the lane and each host, after each step's timeout", () =>
    Effect.gen(function*() {
      const gw = yield* walk
      for (const h of ["gcp-a", "gcp-b", "111"]) gw.host(h).script({ _tag: "Hang" })
      const a = yield* gw.generate("alert-fast")
      expectError(a, 504, "alert-fast", "gcp-a", "gcp-b", "111")
      expect(a.ms).toBeGreaterThanOrEqual(900)
      expect(typesOf(yield* gw.runEvents(a.traceId)).at(-1)).toBe("RunFailed")
      expectRunsWellFormed(gw)
    }))
})
