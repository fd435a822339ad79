/**
 * The runbook's routing scenarios that turn on step timeouts and breaker cooldowns, under TestClock:
 * the real host and lane actors with scripted hosts and an in-memory journal
 * (test/support/ScriptedGateway.ts), so a 300 ms step timeout or a 1 s cooldown costs no real time.
 * What the wire adds (headers, `{"error"}` bodies, the real clients) is tested end to end in
 * routing.e2e.test.ts and the protocol suites.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect, Fiber } from "effect"
import type { StoredEvent } from "../src/journal/Journal.ts"
import { type Answer, makeScriptedGateway, type ScriptedGateway } from "./support/ScriptedGateway.ts"
import { typesOf } from "./support/TestGateway.ts"

const ofType = (events: ReadonlyArray<StoredEvent>, type: string) => events.filter((e) => e.type === type)
const dataOf = (e: StoredEvent | undefined) => (e?.data ?? {}) as Record<string, unknown>
const inferenceCount = (gw: ScriptedGateway, host: string) => gw.host(host).requests().length

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

describe("per-host circuit breaker (TestClock)", () => {
  const breakerGateway = makeScriptedGateway({
    breaker: { consecutiveTimeouts: 2, cooldown: "1s" },
    lanes: { "b-only": { model: "gemma3:4b", route: [{ host: "gcp-b", timeout: "150ms" }] } }
  })

  it.scoped("opens after two consecutive timeouts, is skipped without waiting, admits one probe after the cooldown and closes on its success", () =>
    Effect.gen(function*() {
      const gw = yield* breakerGateway
      const gcpA = gw.host("gcp-a")
      gcpA.script({ _tag: "Hang" })
      const first = yield* gw.generate("alert-fast")
      expect(first.endpoint).toBe("gcp-b")
      expect(typesOf(yield* gw.streamEvents("host-gcp-a"))).not.toContain("BreakerOpened")

      const second = yield* gw.generate("alert-fast")
      expect(second.endpoint).toBe("gcp-b")
      const opened = ofType(yield* gw.streamEvents("host-gcp-a"), "BreakerOpened")
      expect(opened).toHaveLength(1)
      expect(dataOf(opened[0])).toMatchObject({ host: "gcp-a", consecutiveTimeouts: 2 })
      const openedAt = opened[0]!.occurredAt

      // Open: gcp-a is skipped up front, nothing is sent to it, and the answer does not wait for a timeout.
      const before = inferenceCount(gw, "gcp-a")
      const third = yield* gw.generate("alert-fast")
      expect(third.error).toBeNull()
      expect(third.endpoint).toBe("gcp-b")
      expect(third.ms).toBeLessThan(300)
      expect(inferenceCount(gw, "gcp-a")).toBe(before)
      const decided = dataOf(ofType(yield* gw.runEvents(third.traceId), "RouteDecided")[0])
      expect((decided.plan as { skipped: Array<{ host: string; reason: { kind: string } }> }).skipped)
        .toEqual([{ host: "gcp-a", reason: expect.objectContaining({ kind: "circuit-open" }) }])
      const hosts = (decided.input as { hosts: Record<string, { breaker: { status: string } }> }).hosts
      expect(hosts["gcp-a"]!.breaker.status).toBe("open")

      // After the cooldown: one probe goes to gcp-a (healthy again) and closes the breaker.
      gcpA.script({ _tag: "Answer" })
      yield* gw.settle(Effect.sleep(Math.max(0, openedAt + 1_000 - (yield* Clock.currentTimeMillis))))
      const probe = yield* gw.generate("alert-fast")
      expect(probe.endpoint).toBe("gcp-a")
      const hostTypes = typesOf(yield* gw.streamEvents("host-gcp-a")).filter((t) => t.startsWith("Breaker"))
      expect(hostTypes).toEqual(["BreakerOpened", "BreakerHalfOpened", "BreakerClosed"])
      const after = yield* gw.generate("alert-fast")
      expect(after.endpoint).toBe("gcp-a")
      expectRunsWellFormed(gw)
    }))

  it.scoped("a breaker that opens while a request is on an earlier host: that host is skipped, and every started attempt has an outcome", () =>
    Effect.gen(function*() {
      const gw = yield* breakerGateway
      gw.host("gcp-a").script({ _tag: "Hang" })
      gw.host("gcp-b").script({ _tag: "Hang" })
      // R plans while gcp-b is closed, then spends 300 ms on gcp-a; meanwhile b-only's two timeouts open gcp-b.
      const r = yield* Effect.fork(gw.send("alert-fast"))
      yield* gw.until("R is on gcp-a", () => gw.host("gcp-a").inFlight() === 1)
      const opening = yield* gw.settle(Effect.all([gw.send("b-only"), gw.send("b-only")], { concurrency: 2 }))
      expect(opening.map((o) => o.error?.status)).toEqual([504, 504])
      const answer = yield* gw.settle(Fiber.join(r))
      expect(answer.error).toBeNull()
      expect(answer.endpoint).toBe("111")
      const events = yield* gw.runEvents(answer.traceId)
      const decided = events.find((e) => e.type === "RouteDecided")!.data as { plan: { attempts: Array<{ host: string }> } }
      expect(decided.plan.attempts.map((a) => a.host)).toEqual(["gcp-a", "gcp-b", "111"]) // gcp-b was closed at plan time
      expect(ofType(events, "HostSkipped").map((e) => dataOf(e))).toEqual([expect.objectContaining({ host: "gcp-b", reason: "circuit-open" })])
      const started = ofType(events, "AttemptStarted").map((e) => dataOf(e).attempt)
      const ended = [...ofType(events, "AttemptFailed"), ...ofType(events, "AttemptSucceeded")].map((e) => dataOf(e).attempt ?? dataOf(e).host)
      expect(started).toEqual([1, 2])
      expect(ofType(events, "AttemptStarted").map((e) => dataOf(e).host)).toEqual(["gcp-a", "111"])
      expect(ended).toHaveLength(started.length)
      expectRunsWellFormed(gw)
    }))
})

describe("code-review: gcp-b only when 111 is unavailable (TestClock)", () => {
  it.scoped("111 timing out: gcp-b is NOT used → 504; a second timeout opens 111's breaker, and then gcp-b is used", () =>
    Effect.gen(function*() {
      const gw = yield* makeScriptedGateway({ breaker: { consecutiveTimeouts: 2, cooldown: "30s" } })
      const review = () => gw.generate("code-review", { body: { model: "qwen2.5-coder:7b" } })
      const host111 = gw.host("111")
      host111.script({ _tag: "Hang" })
      const gcpBBefore = inferenceCount(gw, "gcp-b")
      const a = yield* review()
      expectError(a, 504, "code-review", "111")
      expect(inferenceCount(gw, "gcp-b")).toBe(gcpBBefore)
      const events = yield* gw.runEvents(a.traceId)
      expect(ofType(events, "HostSkipped").map((e) => dataOf(e))).toEqual([expect.objectContaining({ host: "gcp-b", reason: "only-when-unavailable" })])
      expect(typesOf(events).at(-1)).toBe("RunFailed")

      const b = yield* review()
      expect(b.error?.status).toBe(504)
      expect(typesOf(yield* gw.streamEvents("host-111"))).toContain("BreakerOpened")

      const c = yield* review()
      expect(c.error, c.error?.message).toBeNull()
      expect(c.endpoint).toBe("gcp-b")
      const skipped = (dataOf(ofType(yield* gw.runEvents(c.traceId), "RouteDecided")[0]).plan as { skipped: unknown }).skipped
      expect(skipped).toEqual([{ host: "111", reason: { kind: "circuit-open", until: expect.any(Number) } }]) // no wait on 111
      expectRunsWellFormed(gw)
    }))
})
