/**
 * Fault rows for the trust boundary (issue 12; `npm run test:faults`): hostile callers against the
 * real gateway (src/main.ts in its own process, so its event loop and memory are its own) in front
 * of fake Ollama hosts on loopback.
 *
 *   huge-message flood  4 concurrent ~7 MB /api/chat bodies of 450,000 tiny messages beside normal
 *                       traffic: each gets 400 naming server.maxMessages, no breaker opens, the normal
 *                       traffic is answered, and a concurrent `GET /` answers within 1 s.
 *   deep nesting        100,000-level nesting in format, tools, tool_calls, response_format, content and
 *                       model on every JSON route: 400 each, and no run stream without its one end.
 *   slow consumer       4 callers that never read their streams: cut off, every slot freed within the
 *                       step's timeout (+ slack), RunFailed SlowConsumer, breakers untouched.
 *   body hoarding       40 connections each holding 7.4 MiB of an unfinished 8 MB body: the gateway's
 *                       RSS stays within the in-flight limit (+ slack), the rest get 503, and once the
 *                       hoarders go the gateway answers as before.
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type FakeOllama, startFakeOllama } from "../support/FakeOllama.ts"
import {
  auditAllRuns,
  type Call,
  type Child,
  drive,
  exited,
  health,
  newTraceId,
  type Outcome,
  type ProxiedDatabase,
  spawnGateway,
  startProxiedDatabase,
  waitFor
} from "../support/FaultKit.ts"

const STEP_TIMEOUT_MS = 500
/** Long enough for the fake (on the test's event loop) to build four 7 MB answers. */
const BULK_TIMEOUT_MS = 5_000
const MiB = 1024 * 1024
/** The gateway's per-client in-flight limit below (all the test's connections come from 127.0.0.1). */
const IN_FLIGHT_PER_CLIENT = 32 * MiB

const alertGenerate: Call = { lane: "alert-fast", model: "gemma3:4b", operation: "generate", stream: false }
const alertChat: Call = { lane: "alert-fast", model: "gemma3:4b", operation: "chat", stream: true }
const review: Call = { lane: "code-review", model: "qwen2.5-coder:7b", operation: "chat", stream: false }

interface Row {
  readonly fault: string
  readonly requests: number
  readonly expected: string
  readonly measured: string
  readonly ok: boolean
  readonly seconds: number
}
const rows: Array<Row> = []

/** Four concurrent ~7.2 MB /api/chat bodies of 450,000 tiny messages, posted by a child process; their statuses and errors. */
const floodFromChild = (base: string) =>
  new Promise<Array<{ status: number; error: string }>>((resolve, reject) => {
    const script = `
      const body = '{"model":"gemma3:4b","messages":[' + '{"content":"x"},'.repeat(449999) + '{"content":"x"}]}'
      if (body.length < 7000000) throw new Error("flood too small")
      Promise.all([0, 1, 2, 3].map(() => fetch(process.argv[1] + "/api/chat", { method: "POST", headers: { "content-type": "application/json", "x-awooop-lane": "alert-fast" }, body })
        .then(async (r) => ({ status: r.status, error: (await r.json()).error }))))
        .then((r) => process.stdout.write(JSON.stringify(r)))`
    const child = spawn(process.execPath, ["-e", script, base], { stdio: ["ignore", "pipe", "inherit"] })
    let out = ""
    child.stdout.on("data", (d: Buffer) => { out += d.toString() })
    child.once("exit", (code) => (code === 0 ? resolve(JSON.parse(out) as Array<{ status: number; error: string }>) : reject(new Error(`flood process exited ${code}`))))
  })

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const deep = (levels: number, leaf = "1") => "[".repeat(levels) + leaf + "]".repeat(levels)

describe("fault rows: the trust boundary", () => {
  let db: ProxiedDatabase
  const fakes: Record<string, FakeOllama> = {}
  let dir: string
  let gw: Child | null = null
  const url = () => gw!.url
  const port = () => Number(new URL(url()).port)

  beforeAll(async () => {
    db = await startProxiedDatabase({ gatewayPool: false })
    for (const name of ["gcp-a", "gcp-b", "111"]) fakes[name] = await startFakeOllama({ name })
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "awooop-trust-faults-"))
    const t = `"${STEP_TIMEOUT_MS}ms"`
    fs.writeFileSync(path.join(dir, "gateway.yaml"), `
hosts:
  gcp-a: { url: "${fakes["gcp-a"]!.url}", slots: 4, protected: true }
  gcp-b: { url: "${fakes["gcp-b"]!.url}", slots: 4, protected: true }
  "111": { url: "${fakes["111"]!.url}", slots: 3 }
breaker: { consecutiveTimeouts: 2, cooldown: "60s" }   # long: a breaker opened by a row stays open to be seen
legacy: { projectId: awoooi, lanes: {} }
lanes:
  alert-fast:
    model: gemma3:4b
    reserved: { gcp-b: 2 }                # gcp-a's 4 slots all shared: the slow-consumer row takes them all
    route: [ { host: gcp-a, timeout: ${t} }, { host: gcp-b, timeout: ${t} }, { host: "111", timeout: ${t} } ]
  bulk-stream:                        # the slow-consumer row: a big answer whose first chunk takes the fake a while to build
    model: gemma3:4b
    route: [ { host: gcp-a, timeout: "${BULK_TIMEOUT_MS}ms" } ]
  code-review:
    model: qwen2.5-coder:7b
    route: [ { host: "111", timeout: ${t} }, { host: gcp-b, timeout: ${t}, when: unavailable } ]
server: { pollInterval: "500ms", probeTimeout: "3s", drainTimeout: "1s", maxInFlightBodyBytesPerClient: ${IN_FLIGHT_PER_CLIENT} }
`)
    gw = await spawnGateway({
      DATABASE_URL: db.proxiedUrl,
      AWOOOP_CONFIG: path.join(dir, "gateway.yaml"),
      AWOOOP_SPILL_DIR: path.join(dir, "spill")
    })
    await waitFor("every host to be polled up", async () => {
      const h = await health(url())
      return ["gcp-a", "gcp-b", "111"].every((n) => h.hosts[n]?.status === "up")
    }, 30_000)
  }, 120_000)

  afterAll(async () => {
    if (rows.some((r) => !r.ok) && gw !== null) console.log(`gateway output (last 4000 characters):\n${gw.output().slice(-4000)}`)
    if (gw !== null) {
      gw.process.kill("SIGKILL")
      await exited(gw.process)
    }
    for (const f of Object.values(fakes)) await f.stop()
    await db?.close()
    if (dir) fs.rmSync(dir, { recursive: true, force: true })
    const lines = ["| fault | requests | expected | measured | ok | s |", "|---|---|---|---|---|---|"]
    for (const r of rows) lines.push(`| ${r.fault} | ${r.requests} | ${r.expected} | ${r.measured} | ${r.ok ? "✓" : "✗"} | ${r.seconds.toFixed(1)} |`)
    console.log(`\nTrust-boundary fault rows\n\n${lines.join("\n")}\n`)
  })

  const stalledSeconds = async () =>
    Number(/^awooop_event_loop_stalled_seconds_total(?:\{\})? (\S+)/m.exec(await (await fetch(`${url()}/metrics`)).text())?.[1])

  const breakersOpened = async (since: number) =>
    Number((await db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM step_journal WHERE type = 'BreakerOpened' AND global_position > $1`,
      [since]
    ))[0]!.n)
  const journalHead = async () => Number((await db.query<{ n: number }>(`SELECT COALESCE(max(global_position), 0)::float8 AS n FROM step_journal`))[0]!.n)

  /** Every breaker closed, no slot held: the state a row must leave. */
  const settled = async () => {
    const h = await health(url())
    const problems: Array<string> = []
    for (const [name, host] of Object.entries(h.hosts)) {
      if (host.breaker.status !== "closed") problems.push(`${name}: breaker ${host.breaker.status}`)
      if (host.slots.inUse !== 0) problems.push(`${name}: ${host.slots.inUse} slots held`)
    }
    return problems
  }

  /** `GET /` every 50 ms while `during` runs: the slowest answer, in ms. */
  const rootLatency = async <A>(during: Promise<A>): Promise<readonly [A, number]> => {
    let worst = 0
    let running = true
    const probe = (async () => {
      while (running) {
        const t0 = performance.now()
        await fetch(`${url()}/`)
        worst = Math.max(worst, performance.now() - t0)
        await sleep(50)
      }
    })()
    const result = await during
    running = false
    await probe
    return [result, worst] as const
  }

  it("huge-message flood: 400 before parsing, breakers closed, GET / within 1 s", async () => {
    const t0 = Date.now()
    const head = await journalHead()
    const stalledBefore = await stalledSeconds()
    // Sent from a process of its own: building and sending 29 MB must not slow the fakes or the GET / probe here.
    const floods = floodFromChild(url())
    const [[refused, traffic], worstRoot] = await rootLatency(Promise.all([floods, drive(url(), [alertGenerate, alertChat, review], 40, 4, { timeoutMs: 15_000 })]))
    const opened = await breakersOpened(head)
    const left = await settled()
    const answered = traffic.filter((o: Outcome) => o.kind === "answer").length
    const ok = refused.every((r) => r.status === 400 && r.error.includes("server.maxMessages")) && opened === 0 && left.length === 0 &&
      answered === traffic.length && worstRoot < 1_000
    rows.push({
      fault: "huge-message flood (4 × 7.2 MB, 450,000 messages)",
      requests: refused.length + traffic.length,
      expected: "floods 400, traffic answered, 0 breakers opened, GET / < 1 s",
      measured: `floods ${refused.map((r) => r.status).join(",")}; ${answered}/${traffic.length} answered; ${opened} opened; GET / worst ${Math.round(worstRoot)} ms; gateway loop stalled ${Math.round((await stalledSeconds() - stalledBefore) * 1000)} ms${left.length ? `; ${left.join("; ")}` : ""}`,
      ok,
      seconds: (Date.now() - t0) / 1000
    })
    for (const r of refused) expect(r).toMatchObject({ status: 400, error: "messages has more than 10000 entries; the limit is 10000 (server.maxMessages)" })
    expect(opened).toBe(0)
    expect(left).toEqual([])
    expect(answered).toBe(traffic.length)
    expect(worstRoot).toBeLessThan(1_000)
  })

  it("deep nesting: 400 on every route, no run stream without its end", async () => {
    const t0 = Date.now()
    const d = deep(100_000)
    const cases: ReadonlyArray<readonly [string, string]> = [
      ["/api/chat", `{"model":"gemma3:4b","messages":[{"role":"user","content":"hi"}],"format":${d}}`],
      ["/api/chat", `{"model":"gemma3:4b","messages":[{"role":"user","content":"hi"}],"tools":${d}}`],
      ["/api/chat", `{"model":"gemma3:4b","messages":[{"role":"assistant","content":"","tool_calls":${d}}]}`],
      ["/api/chat", `{"model":"gemma3:4b","messages":[{"role":"user","content":${d}}]}`],
      ["/api/generate", `{"model":${d},"prompt":"hi"}`],
      ["/api/embed", `{"model":"bge-m3","input":${d}}`],
      ["/v1/chat/completions", `{"model":"gemma3:4b","messages":[{"role":"user","content":"hi"}],"response_format":${d}}`],
      ["/v1/chat/completions", `{"model":"gemma3:4b","messages":[{"role":"user","content":"hi"}],"tools":${d}}`],
      ["/v1/completions", `{"model":${d},"prompt":"hi"}`],
      ["/v1/embeddings", `{"model":"bge-m3","input":${d}}`],
      ["/awooop/runs", `{"model":"gemma3:4b","operation":"chat","messages":[{"role":"user","content":"hi"}],"format":${d}}`],
      ["/api/show", `{"model":${d}}`],
      ["/v1/responses", `{"model":"gemma3:4b","input":"hi","tools":${d}}`],
      ["/v1/messages", `{"model":"gemma3:4b","max_tokens":16,"messages":[{"role":"user","content":${d}}]}`]
    ]
    const [statuses, traffic] = await Promise.all([
      Promise.all(cases.map(([p, body]) =>
        fetch(`${url()}${p}`, { method: "POST", headers: { "content-type": "application/json", "x-awooop-lane": "alert-fast", "x-awooop-trace-id": newTraceId() }, body })
          .then(async (r) => ({ path: p, status: r.status, body: await r.text() }))
      )),
      drive(url(), [alertGenerate, alertChat], 20, 4, { timeoutMs: 15_000 })
    ])
    await sleep(300)
    const audit = await auditAllRuns(db.query)
    const wrong = statuses.filter((s) => s.status !== 400 || !s.body.includes("server.maxJsonDepth"))
    const answered = traffic.filter((o) => o.kind === "answer").length
    rows.push({
      fault: "deep nesting (100,000 levels, 14 routes × fields)",
      requests: statuses.length + traffic.length,
      expected: "400 naming server.maxJsonDepth; every run stream ends once",
      measured: `${statuses.length - wrong.length}/${statuses.length} → 400; ${audit.runs} runs, ${audit.problems.length} stream problems; ${answered}/${traffic.length} answered`,
      ok: wrong.length === 0 && audit.problems.length === 0 && answered === traffic.length,
      seconds: (Date.now() - t0) / 1000
    })
    expect(wrong.map((w) => `${w.path}: ${w.status} ${w.body.slice(0, 120)}`)).toEqual([])
    expect(audit.problems).toEqual([])
    expect(answered).toBe(traffic.length)
  })

  it("slow consumer: 4 callers that never read are cut off, gcp-a's slots freed within the step's timeout (+ slack)", async () => {
    const t0 = Date.now()
    const head = await journalHead()
    // ~7 MB per answer: far more than the socket buffers between a caller and the gateway hold.
    fakes["gcp-a"]!.setMode("ok", { chunks: 60_000 })
    const traceIds = Array.from({ length: 4 }, () => newTraceId())
    const body = JSON.stringify({ model: "gemma3:4b", messages: [{ role: "user", content: "hi" }] })
    const sockets = traceIds.map((traceId) => {
      const s = net.connect(port(), "127.0.0.1")
      s.pause() // never reads
      s.write(
        `POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n` +
          `X-AwoooP-Lane: bulk-stream\r\nX-AwoooP-Trace-ID: ${traceId}\r\n\r\n${body}`
      )
      return s
    })
    try {
      await waitFor("the 4 streams to hold gcp-a's slots", async () => (await health(url())).hosts["gcp-a"]!.slots.inUse === 4, 10_000, 10)
      const heldAt = Date.now()
      await waitFor("gcp-a's slots to be freed", async () => (await health(url())).hosts["gcp-a"]!.slots.inUse === 0, 10_000, 20)
      const freedMs = Date.now() - heldAt
      fakes["gcp-a"]!.setMode("ok", { chunks: 3 })
      // The slot is freed as the RunFailed is queued; the journal commits it a moment later.
      const endsOf = () => db.query<{ error: string }>(
        `SELECT data->>'error' AS error FROM step_journal WHERE type = 'RunFailed' AND trace_id = ANY($1::text[])`,
        [traceIds]
      )
      await waitFor("the 4 runs' ends in the journal", async () => (await endsOf()).length >= 4, 10_000, 50).catch(() => {})
      const ends = await endsOf()
      const opened = await breakersOpened(head)
      const after = await drive(url(), [alertGenerate], 4, 2, { timeoutMs: 15_000 })
      const left = await settled()
      // The cut-off comes one step timeout after the buffers filled; the slack covers filling them and polling.
      const ok = freedMs < BULK_TIMEOUT_MS + 3_000 && ends.length === 4 && ends.every((e) => e.error === "SlowConsumer") && opened === 0 &&
        after.every((o) => o.kind === "answer") && left.length === 0
      rows.push({
        fault: "slow consumer (4 callers stop reading)",
        requests: 4 + after.length,
        expected: `slots free < ${BULK_TIMEOUT_MS + 3_000} ms, RunFailed SlowConsumer × 4, 0 breakers opened`,
        measured: `freed after ${freedMs} ms; ends ${ends.map((e) => e.error).join(",")}; ${opened} opened${left.length ? `; ${left.join("; ")}` : ""}`,
        ok,
        seconds: (Date.now() - t0) / 1000
      })
      expect(freedMs).toBeLessThan(BULK_TIMEOUT_MS + 3_000)
      expect(ends.map((e) => e.error)).toEqual(["SlowConsumer", "SlowConsumer", "SlowConsumer", "SlowConsumer"])
      expect(opened).toBe(0)
      expect(after.every((o) => o.kind === "answer")).toBe(true)
      expect(left).toEqual([])
    } finally {
      for (const s of sockets) s.destroy()
      fakes["gcp-a"]!.setMode("ok", { chunks: 3 })
    }
  })

  it("body hoarding: 40 connections × 7.4 MiB of unfinished bodies keep RSS within the in-flight limit", async () => {
    const t0 = Date.now()
    const rss = () => {
      const status = fs.readFileSync(`/proc/${gw!.process.pid}/status`, "utf8")
      return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024
    }
    const before = rss()
    let peak = before
    let sampling = true
    const sampler = (async () => {
      while (sampling) {
        peak = Math.max(peak, rss())
        await sleep(50)
      }
    })()
    const statuses: Array<number> = []
    const sockets: Array<net.Socket> = []
    const hoard = (i: number) =>
      new Promise<void>((resolve) => {
        const s = net.connect(port(), "127.0.0.1")
        sockets.push(s)
        let answered = ""
        s.on("data", (d) => {
          answered += d.toString("latin1")
          const m = /^HTTP\/1\.1 (\d{3})/.exec(answered)
          if (m) statuses[i] = Number(m[1])
        })
        s.on("error", () => resolve())
        s.on("close", () => resolve())
        s.write(`POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 8000000\r\nX-AwoooP-Lane: alert-fast\r\n\r\n`)
        const piece = Buffer.alloc(64 * 1024, 0x20)
        let sent = 0
        const pump = () => {
          while (sent < 7.4 * MiB && !s.destroyed) {
            sent += piece.length
            if (!s.write(piece)) return void s.once("drain", pump)
          }
          // 7.4 MiB sent: hold the connection open, as the hoarder does.
          setTimeout(resolve, 100)
        }
        pump()
      })
    // The hoarders keep their connections open; the ones refused are closed by the gateway.
    await Promise.race([Promise.all(Array.from({ length: 40 }, (_, i) => hoard(i))), sleep(20_000)])
    await sleep(500)
    const refused = statuses.filter((s) => s === 503).length
    for (const s of sockets) s.destroy()
    await sleep(300)
    sampling = false
    await sampler
    const after = await drive(url(), [alertGenerate, review], 6, 2, { timeoutMs: 15_000 })
    const growth = peak - before
    // Bounded by the per-client in-flight limit (every hoarder is 127.0.0.1), plus runtime slack.
    const bound = IN_FLIGHT_PER_CLIENT + 96 * MiB
    const ok = growth < bound && refused >= 30 && after.every((o) => o.kind === "answer")
    rows.push({
      fault: "body hoarding (40 × 7.4 MiB unfinished)",
      requests: 40 + after.length,
      expected: `RSS growth < ${Math.round(bound / MiB)} MiB, the rest 503, answered afterwards`,
      measured: `RSS ${Math.round(before / MiB)} → peak ${Math.round(peak / MiB)} MiB (+${Math.round(growth / MiB)}); ${refused} × 503; ${after.filter((o) => o.kind === "answer").length}/${after.length} answered after`,
      ok,
      seconds: (Date.now() - t0) / 1000
    })
    expect(growth).toBeLessThan(bound)
    expect(refused).toBeGreaterThanOrEqual(30)
    expect(after.every((o) => o.kind === "answer")).toBe(true)
  })
})
