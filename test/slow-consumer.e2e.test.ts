/**
 * Slow consumers (issue 12 item 4): a caller that stops reading a stream is cut off once it has
 * taken no chunk for the step's timeout — the upstream is closed, the host slot freed, the run ends
 * `RunFailed` with error SlowConsumer (on /api/*, /v1/chat/completions and /v1/responses alike) (the caller's fault: the breaker never hears of it). On the
 * gateway before this, the slot stayed held for as long as the caller kept the connection open.
 */
import * as net from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { newTraceId, startTestGateway, type TestGateway } from "./support/TestGateway.ts"

let gw: TestGateway

// One host and one lane per protocol, so the three cases run side by side (most of each is the
// step's 3 s timeout) and each still sees only its own slot and its own breaker.
const cases = [
  ["/api/chat", "gcp-a", JSON.stringify({ model: "gemma3:4b", messages: [{ role: "user", content: "hi" }] })],
  ["/v1/chat/completions", "gcp-b", JSON.stringify({ model: "gemma3:4b", stream: true, messages: [{ role: "user", content: "hi" }] })],
  ["/v1/responses", "111", JSON.stringify({ model: "gemma3:4b", stream: true, input: "hi" })]
] as const

beforeAll(async () => {
  gw = await startTestGateway({
    // ~7 MB of NDJSON per answer: far more than the socket buffers between a caller and the gateway.
    hosts: Object.fromEntries(cases.map(([, host]) => [host, { slots: 4, protected: true, fake: { chunks: 60_000 } }])),
    // 3 s: long enough for the fake (on this test's event loop) to build the answer on a loaded machine.
    lanes: Object.fromEntries(cases.map(([, host]) => [`lane-${host}`, { model: "gemma3:4b", route: [{ host, timeout: "3s" }] }]))
  })
}, 30_000)
afterAll(async () => {
  await gw?.close()
})

const health = async () =>
  (await (await fetch(`${gw.url}/awooop/health`)).json()) as {
    hosts: Record<string, { slots: { inUse: number }; breaker: { status: string; consecutiveTimeouts: number } }>
  }

/** Sends a streaming chat and never reads the answer. */
const stalledCaller = (path: string, lane: string, traceId: string, body: string) => {
  const socket = net.connect(Number(new URL(gw.url).port), "127.0.0.1")
  socket.pause()
  socket.write(
    `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
      `X-AwoooP-Lane: ${lane}\r\nX-AwoooP-Trace-ID: ${traceId}\r\n\r\n${body}`
  )
  return socket
}

describe("a caller that stops reading", () => {
  for (const [path, host, body] of cases) {
    it.concurrent(`${path}: is cut off within the step's timeout; the slot is freed, the run ends SlowConsumer, the breaker is untouched`, async () => {
      const traceId = newTraceId()
      const socket = stalledCaller(path, `lane-${host}`, traceId, body)
      try {
        let deadline = Date.now() + 10_000
        while ((await health()).hosts[host]!.slots.inUse === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
        const heldAt = Date.now()
        expect((await health()).hosts[host]!.slots.inUse).toBe(1)
        // The step timeout is 3 s; the cut-off comes that long after the caller's buffers filled.
        deadline = heldAt + 10_000
        while ((await health()).hosts[host]!.slots.inUse > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
        const h = await health()
        expect(h.hosts[host]!.slots.inUse).toBe(0)
        expect(h.hosts[host]!.breaker).toMatchObject({ status: "closed", consecutiveTimeouts: 0 })
        const events = await gw.runEvents(traceId)
        const end = events.at(-1)!
        expect(end.type).toBe("RunFailed")
        expect(end.data).toMatchObject({ error: "SlowConsumer", status: 408 })
        expect(events.map((e) => e.type)).not.toContain("AttemptFailed")
      } finally {
        socket.destroy()
      }
    })
  }
})
