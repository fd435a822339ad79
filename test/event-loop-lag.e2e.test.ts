/**
 * A gateway stall is never blamed on a host (issue 12 item 2): when the gateway's own event loop is
 * blocked through most of an attempt, the step timer fires late while the host's answer waits unread;
 * that timeout is journaled with the lag (`eventLoopLagMs`, `eventLoopStallMs`, `gatewayStall`) and does not count toward
 * the host's breaker. On the gateway before this, the breaker (one timeout to open here) opened.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { newTraceId, startTestGateway, type TestGateway } from "./support/TestGateway.ts"

let gw: TestGateway

beforeAll(async () => {
  gw = await startTestGateway({
    hosts: { "gcp-a": { slots: 4, protected: true, fake: { mode: "slow", delayMs: 50 } } },
    lanes: {
      "alert-fast": { model: "gemma3:4b", route: [{ host: "gcp-a", timeout: "400ms" }, { host: "gcp-b", timeout: "2s" }] }
    },
    breaker: { consecutiveTimeouts: 1, cooldown: "30s" }
  })
}, 30_000)
afterAll(async () => {
  await gw?.close()
})

/** Blocks this process's event loop (the gateway's and the fakes' alike) for `ms`. */
const block = (ms: number) => {
  const until = Date.now() + ms
  while (Date.now() < until) { /* the stall under test */ }
}

const breakerOf = async (host: string) =>
  ((await (await fetch(`${gw.url}/awooop/health`)).json()) as { hosts: Record<string, { breaker: { status: string; consecutiveTimeouts: number } }> })
    .hosts[host]!.breaker

describe("event-loop lag", () => {
  it("a timeout the gateway's own stall caused is journaled with the lag and leaves the host's breaker closed", async () => {
    const traceId = newTraceId()
    const answer = fetch(`${gw.url}/api/generate`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-awooop-lane": "alert-fast", "x-awooop-trace-id": traceId },
      body: JSON.stringify({ model: "gemma3:4b", prompt: "hi", stream: false })
    })
    // Once gcp-a has the request (it answers in 50 ms), the loop stalls for 1.2 s: past the 400 ms timer.
    const fake = gw.fakes["gcp-a"]!
    const deadline = Date.now() + 5_000
    while (fake.inFlight() === 0 && Date.now() < deadline) await new Promise((r) => setImmediate(r))
    expect(fake.inFlight()).toBe(1)
    block(1_200)
    const r = await answer
    const events = await gw.runEvents(traceId)
    const failed = events.filter((e) => e.type === "AttemptFailed").map((e) => e.data as Record<string, unknown>)
    // The gateway read its timer before the answer waiting in the socket: a timeout, not the host's.
    expect(failed).toHaveLength(1)
    expect(failed[0]).toMatchObject({ host: "gcp-a", kind: "timeout", gatewayStall: true })
    expect(failed[0]!.eventLoopLagMs as number).toBeGreaterThanOrEqual(800)
    expect(failed[0]!.eventLoopStallMs as number).toBeGreaterThanOrEqual(800)
    expect(String(failed[0]!.message)).toContain("not counted against gcp-a")
    expect(r.status).toBe(200)
    expect(events.find((e) => e.type === "AttemptSucceeded")?.data).toMatchObject({ host: "gcp-b" })
    expect(await breakerOf("gcp-a")).toMatchObject({ status: "closed", consecutiveTimeouts: 0 })
  })

  it("a timeout without a stall still counts (the breaker opens at its first here)", async () => {
    gw.fakes["gcp-a"]!.setMode("hang")
    try {
      const traceId = newTraceId()
      const r = await gw.post("/api/generate", { model: "gemma3:4b", prompt: "hi", stream: false }, { "x-awooop-lane": "alert-fast", "x-awooop-trace-id": traceId })
      expect(r.status).toBe(200)
      const failed = (await gw.runEvents(traceId)).find((e) => e.type === "AttemptFailed")?.data as Record<string, unknown>
      expect(failed).toMatchObject({ host: "gcp-a", kind: "timeout" })
      expect(failed.gatewayStall).toBeUndefined()
      expect(failed.eventLoopStallMs as number).toBeLessThan(200)
      expect(typeof failed.eventLoopLagMs).toBe("number")
      expect((await breakerOf("gcp-a")).status).toBe("open")
    } finally {
      gw.fakes["gcp-a"]!.setMode("ok")
    }
  })

  it("/metrics exposes the event-loop lag", async () => {
    const text = await (await fetch(`${gw.url}/metrics`)).text()
    expect(text).toMatch(/^awooop_event_loop_lag_seconds\{quantile="0\.99"\} \d/m)
    const stalled = Number(/^awooop_event_loop_stalled_seconds_total(?:\{\})? (\S+)/m.exec(text)?.[1])
    expect(stalled).toBeGreaterThanOrEqual(1)
  })
})
