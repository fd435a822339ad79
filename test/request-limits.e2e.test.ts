/**
 * Bounds on what a request can make the gateway do before it reaches a host (issue 12 items 2–4):
 * deep nesting and message floods are refused with a 400 naming the limit before any run starts,
 * a too-large chunked body gets its 413 with `Connection: close` on every route (the platform
 * router's too), unfinished bodies together stay within the in-flight limits (503 beyond), and
 * absurd time ranges are a 400. On the gateway before these bounds, deep nesting gave a 500 with a
 * RangeError and left runs without their end, and the platform routes reset the connection.
 */
import * as net from "node:net"
import OpenAI from "openai"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { newTraceId, startTestGateway, type TestGateway } from "./support/TestGateway.ts"

let gw: TestGateway
const ADMIN = "limits-admin-token"
process.env.AWOOOP_ADMIN_TOKEN = ADMIN

beforeAll(async () => {
  gw = await startTestGateway({
    projections: { intervalMs: 50 },
    server: { maxBodyBytes: 1_000_000, maxMessages: 1000, maxInFlightBodyBytes: 2_000_000, maxInFlightBodyBytesPerClient: 2_000_000 }
  })
}, 30_000)
afterAll(async () => {
  await gw?.close()
})

/** Events journaled on a trace (after the journal's linger). */
const journaled = async (traceId: string) => {
  await new Promise((r) => setTimeout(r, 100))
  const [row] = await gw.query<{ n: number }>(`SELECT count(*)::int AS n FROM step_journal WHERE trace_id = $1`, [traceId])
  return row!.n
}
const deep = (levels: number, leaf: string = "1") => "[".repeat(levels) + leaf + "]".repeat(levels)
const headers = (traceId: string) => ({ "content-type": "application/json", "x-awooop-lane": "alert-fast", "x-awooop-trace-id": traceId })

/** A raw HTTP/1.1 exchange: what a client that sends `head` then `body` chunks gets back, and whether the server closed. */
const raw = (head: string, bodyChunks: ReadonlyArray<Buffer | string>, options: { readonly holdOpen?: boolean } = {}) =>
  new Promise<{ status: number; head: string; closed: boolean; socket: net.Socket }>((resolve, reject) => {
    const socket = net.connect(Number(new URL(gw.url).port), "127.0.0.1")
    let received = ""
    let settled = false
    const done = (closed: boolean) => {
      if (settled) return
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(received)?.[1] ?? 0)
      if (status === 0 && !closed) return
      settled = true
      resolve({ status, head: received.split("\r\n\r\n")[0] ?? "", closed, socket })
    }
    socket.on("data", (d) => {
      received += d.toString("latin1")
      if (received.includes("\r\n\r\n") && !options.holdOpen) setTimeout(() => done(socket.destroyed || socket.readableEnded), 200)
      else if (received.includes("\r\n\r\n")) done(false)
    })
    socket.on("end", () => done(true))
    socket.on("close", () => done(true))
    socket.on("error", (e) => (received === "" ? reject(e) : done(true)))
    socket.write(head)
    for (const c of bodyChunks) socket.write(c)
  })

describe("deep nesting and floods are a 400 before any run", () => {
  const cases: ReadonlyArray<readonly [string, string, (d: string) => string]> = [
    ["/api/chat format", "/api/chat", (d) => `{"model":"gemma3:4b","messages":[{"role":"user","content":"hi"}],"stream":false,"format":${d}}`],
    ["/api/chat tools", "/api/chat", (d) => `{"model":"gemma3:4b","messages":[{"role":"user","content":"hi"}],"tools":${d}}`],
    ["/api/chat tool_calls", "/api/chat", (d) => `{"model":"gemma3:4b","messages":[{"role":"assistant","content":"","tool_calls":${d}}]}`],
    ["/api/chat messages[].content", "/api/chat", (d) => `{"model":"gemma3:4b","messages":[{"role":"user","content":${d}}]}`],
    ["/api/generate model", "/api/generate", (d) => `{"model":${d},"prompt":"hi"}`],
    ["/v1/chat/completions response_format", "/v1/chat/completions", (d) => `{"model":"gemma3:4b","messages":[{"role":"user","content":"hi"}],"response_format":${d}}`],
    ["/v1/chat/completions tools", "/v1/chat/completions", (d) => `{"model":"gemma3:4b","messages":[{"role":"user","content":"hi"}],"tools":${d}}`],
    ["/awooop/runs format", "/awooop/runs", (d) => `{"model":"gemma3:4b","operation":"chat","messages":[{"role":"user","content":"hi"}],"format":${d}}`],
    ["/api/show model", "/api/show", (d) => `{"model":${d}}`],
    ["/v1/responses tools", "/v1/responses", (d) => `{"model":"gemma3:4b","input":"hi","tools":${d}}`],
    ["/v1/responses input", "/v1/responses", (d) => `{"model":"gemma3:4b","input":${d}}`],
    ["/v1/messages tools", "/v1/messages", (d) => `{"model":"gemma3:4b","max_tokens":16,"messages":[{"role":"user","content":"hi"}],"tools":${d}}`],
    ["/v1/messages content", "/v1/messages", (d) => `{"model":"gemma3:4b","max_tokens":16,"messages":[{"role":"user","content":${d}}]}`]
  ]
  for (const [name, path, body] of cases) {
    it(`${name}: 100,000 levels → 400 naming server.maxJsonDepth`, async () => {
      const traceId = newTraceId()
      const r = await fetch(`${gw.url}${path}`, { method: "POST", headers: headers(traceId), body: body(deep(100_000)) })
      expect(r.status).toBe(400)
      const text = await r.text()
      expect(text).toContain("server.maxJsonDepth")
      expect(await journaled(traceId)).toBe(0)
    })
  }

  it("an admin route: the same 400, with the admin token", async () => {
    const r = await fetch(`${gw.url}/awooop/admin/hosts/gcp-a/maintenance`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${ADMIN}` },
      body: `{"open":true,"reason":${deep(20_000, '"x"')}}`
    })
    expect(r.status).toBe(400)
    expect(await r.text()).toContain("server.maxJsonDepth")
  })

  it("the openai client sees an invalid_request_error (at a depth its own JSON.stringify can write), and a nesting within the limit still works", async () => {
    const openai = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: "unused", maxRetries: 0, defaultHeaders: { "x-awooop-lane": "alert-fast" } })
    const nested = JSON.parse(`{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object","properties":{"a":${deep(2_000, "{}")}}}}}`) as never
    const refused = await openai.chat.completions.create({ model: "gemma3:4b", messages: [{ role: "user", content: "hi" }], response_format: nested }).catch((e: unknown) => e)
    expect(refused).toBeInstanceOf(OpenAI.BadRequestError)
    const ok = await openai.chat.completions.create({ model: "gemma3:4b", messages: [{ role: "user", content: "hi" }], response_format: { type: "json_object" } })
    expect(ok.choices[0]?.message.content).toContain("hello")
  })

  it("a chat of more messages than server.maxMessages → 400 naming it", async () => {
    const traceId = newTraceId()
    const messages = Array.from({ length: 1001 }, () => ({ role: "user", content: "x" }))
    const r = await fetch(`${gw.url}/api/chat`, { method: "POST", headers: headers(traceId), body: JSON.stringify({ model: "gemma3:4b", messages }) })
    expect(r.status).toBe(400)
    expect(((await r.json()) as { error: string }).error).toBe("messages has more than 1000 entries; the limit is 1000 (server.maxMessages)")
    expect(await journaled(traceId)).toBe(0)
  })

  it("exactly server.maxMessages messages pass, commas and brackets inside them notwithstanding", async () => {
    const messages = Array.from({ length: 1000 }, (_, i) => ({ role: "user", content: `a, [b], {c}, "d" ${i}`, images: ["aGk=", "aGk="] }))
    const r = await fetch(`${gw.url}/api/chat`, { method: "POST", headers: headers(newTraceId()), body: JSON.stringify({ messages, model: "gemma3:4b", stream: false }) })
    expect(r.status).toBe(200)
  })

  it("no run stream is left without its end", async () => {
    const [row] = await gw.query<{ open: number }>(`
      SELECT count(*)::int AS open FROM (SELECT DISTINCT stream_id FROM step_journal WHERE type = 'RunStarted') s
      WHERE NOT EXISTS (SELECT 1 FROM step_journal t WHERE t.stream_id = s.stream_id AND t.type IN ('RunCompleted', 'RunFailed', 'RunCancelled'))`)
    expect(row!.open).toBe(0)
  })
})

describe("bodies: 413 with Connection: close, and the in-flight limits", () => {
  const chunked = (path: string) =>
    `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nX-AwoooP-Lane: alert-fast\r\n\r\n`
  const chunk = (size: number) => Buffer.concat([Buffer.from(`${size.toString(16)}\r\n`), Buffer.alloc(size, 0x20), Buffer.from("\r\n")])

  for (const path of ["/api/chat", "/v1/chat/completions", "/v1/responses", "/v1/messages", "/awooop/runs", "/api/show"]) {
    it(`${path}: a chunked body past server.maxBodyBytes → 413, Connection: close, the connection ends`, async () => {
      const r = await raw(chunked(path), Array.from({ length: 5 }, () => chunk(300_000)))
      expect(r.status).toBe(413)
      expect(r.head.toLowerCase()).toContain("connection: close")
      expect(r.closed).toBe(true)
    })
  }

  it("a caller still sending when refused reads its 413, and its writes never fail: the gateway reads and drops the rest, then closes", async () => {
    // Each caller sends a body it declared too large and keeps writing while it reads, as an upload
    // does. A socket closed at once with those bytes unread answers the next ones with a reset: the
    // caller's write fails (EPIPE, ECONNRESET), and a client that stops at a failed write (most do)
    // may never read the 413 that was sent before it.
    const upload = () =>
      new Promise<{ status: number; error: string | null }>((resolve) => {
        const socket = net.connect(Number(new URL(gw.url).port), "127.0.0.1")
        let received = ""
        let error: string | null = null
        socket.on("data", (d: Buffer) => { received += d.toString("latin1") })
        socket.on("error", (e: NodeJS.ErrnoException) => { error ??= e.code ?? e.message })
        socket.on("close", () => resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(received)?.[1] ?? 0), error }))
        socket.write(`POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 8000000\r\nX-AwoooP-Lane: alert-fast\r\n\r\n`)
        const piece = Buffer.alloc(64 * 1024, 0x20)
        let sent = 0
        const pump = () => {
          while (sent < 8_000_000 && !socket.destroyed) {
            sent += piece.length
            if (!socket.write(piece)) return void socket.once("drain", pump)
          }
          if (!socket.destroyed) socket.end()
        }
        pump()
      })
    const results = await Promise.all(Array.from({ length: 8 }, upload))
    expect(results).toEqual(results.map(() => ({ status: 413, error: null })))
  }, 60_000)

  it("unfinished bodies beyond server.maxInFlightBodyBytes → 503 with Retry-After; once they end, requests are read again", async () => {
    const head = (n: number) =>
      `POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${n}\r\nX-AwoooP-Lane: alert-fast\r\n\r\n`
    // Bodies of 950 kB, 900 kB of each sent and then held: the third passes the 2 MB total.
    const hoarders = await Promise.all([1, 2].map(async () => {
      const hoarder = net.connect(Number(new URL(gw.url).port), "127.0.0.1")
      await new Promise<void>((res) => hoarder.once("connect", () => res()))
      hoarder.write(head(950_000))
      hoarder.write(Buffer.alloc(900_000, 0x20))
      return hoarder
    }))
    await new Promise((res) => setTimeout(res, 300))
    const second = await raw(head(950_000), [Buffer.alloc(900_000, 0x20)])
    expect(second.status).toBe(503)
    expect(second.head.toLowerCase()).toContain("retry-after: 1")
    expect(second.head.toLowerCase()).toContain("connection: close")
    for (const h of hoarders) h.destroy()
    await new Promise((res) => setTimeout(res, 200))
    const after = await gw.ollama({ "x-awooop-lane": "alert-fast" }).chat({ model: "gemma3:4b", messages: [{ role: "user", content: "hi" }], stream: false })
    expect(after.message.content).toContain("hello")
    // The hoarders' bytes are back: two 900 kB bodies at once fit the 2 MB again (1.8 MB would still be held otherwise).
    const big = (n: number) => gw.ollama({ "x-awooop-lane": "alert-fast" }).chat({ model: "gemma3:4b", messages: [{ role: "user", content: "x".repeat(n) }], stream: false })
    const both = await Promise.all([big(900_000), big(900_000)])
    for (const b of both) expect(b.message.content).toContain("hello")
  })
})

describe("time ranges", () => {
  it("absurd since / from / to → 400 naming the parameter", async () => {
    for (const q of ["since=99999999999h", "since=0001-01-01", "since=9999-01-01T00:00:00Z"]) {
      const r = await fetch(`${gw.url}/awooop/shadow/report?${q}`)
      expect(r.status, q).toBe(400)
      expect(((await r.json()) as { error: string }).error).toContain("since")
    }
    for (const q of ["from=0001-01-01&to=2026-01-01", "from=2026-01-01&to=9999-12-31"]) {
      const r = await fetch(`${gw.url}/awooop/cost?${q}`)
      expect(r.status, q).toBe(400)
    }
    expect((await fetch(`${gw.url}/awooop/shadow/report?since=24h`)).status).toBe(200)
  })
})
