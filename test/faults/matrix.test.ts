/**
 * The fault matrix (issue 7, part 2; `npm run test:faults`). The real gateway (src/main.ts in its own
 * process, production journal settings) in front of fake Ollama hosts and a fake Gemini on loopback,
 * its DATABASE_URL through a PgProxy. For each fault: inject it, drive mixed traffic, clear it, and
 * check that
 *   - every request got a correct answer or a correct error (test/support/FaultKit.ts says what that
 *     means, and which of the two each fault allows);
 *   - the journal holds exactly the events the gateway appended (none lost, none doubled), and every
 *     run stream is whole: positions 0..n-1 in commit order, one terminal event, agreeing with its caller;
 *   - afterwards every breaker is closed (after its cooldown and a successful probe), no probe is
 *     stuck half-open, no slot is held, and no upstream request is left open.
 * Prints a table: fault, requests, correct answers, correct errors, events expected/found.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type FakeGemini, startFakeGemini } from "../support/FakeGemini.ts"
import { type FakeMode, type FakeOllama, startFakeOllama } from "../support/FakeOllama.ts"
import {
  auditAllRuns,
  auditOutcomes,
  type Call,
  type Child,
  closedPortUrl,
  countEvents,
  drive,
  exited,
  health,
  healthJournal,
  type Outcome,
  printTable,
  type RowResult,
  type ProxiedDatabase,
  send,
  spawnGateway,
  startProxiedDatabase,
  waitFor
} from "../support/FaultKit.ts"

const GEMINI_KEY = `gem-faults-${crypto.randomUUID()}`
const GEMINI_REPLY = "[gemini] hello from gemini"
const STEP_TIMEOUT_MS = 500
const COOLDOWN_MS = 1_000
const replies = { gemini: GEMINI_REPLY }

const alertGenerate: Call = { lane: "alert-fast", model: "gemma3:4b", operation: "generate", stream: false }
const alertStream: Call = { lane: "alert-fast", model: "gemma3:4b", operation: "generate", stream: true }
const alertChat: Call = { lane: "alert-fast", model: "gemma3:4b", operation: "chat", stream: true }
const review: Call = { lane: "code-review", model: "qwen2.5-coder:7b", operation: "chat", stream: false }
const embed: Call = { lane: "embedding", model: "bge-m3", operation: "embed", stream: false }
const paid: Call = { lane: "alert-paid", model: "gemma3:4b", operation: "generate", stream: false }
const ollamaCalls = [alertGenerate, alertStream, alertChat, review, embed]

// What each fault allows a caller to get (besides being well-formed and matching the journal).
type Allowed = (o: Outcome) => boolean
const answer: Allowed = (o) => o.kind === "answer"
/** A stream that started on `host` and broke: an {"error"} line after the first chunk, never a done. */
const brokeMidStream = (host: string): Allowed => (o) => o.kind === "error" && o.stream && o.midStream && o.endpoint === host
const busy: Allowed = (o) => o.kind === "error" && o.status === 503 && (o.error ?? "").includes(o.lane)
const ledgerDown: Allowed = (o) => o.kind === "error" && o.status === 503 && /budget ledger is unreachable/.test(o.error ?? "")
const either = (...allowed: Array<Allowed>): Allowed => (o) => allowed.some((a) => a(o))

interface Fault {
  readonly name: string
  readonly calls: ReadonlyArray<Call>
  readonly total: number
  readonly concurrency?: number
  readonly allowed: Allowed
  readonly inject?: () => Promise<void>
  /** Runs alongside the traffic; its outcomes count too. */
  readonly during?: () => Promise<ReadonlyArray<Outcome>>
  readonly clear?: () => Promise<void>
  /** Per-call allowances that differ from `allowed` (paid calls during a database fault). */
  readonly allowedFor?: (o: Outcome) => Allowed | undefined
}

const rows: Array<RowResult> = []

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe("fault matrix", () => {
  let db: ProxiedDatabase
  let gemini: FakeGemini
  const fakes: Record<string, FakeOllama> = {}
  let dir: string
  let env: Record<string, string>
  let gw: Child | null = null
  const url = () => gw!.url

  beforeAll(async () => {
    db = await startProxiedDatabase({ gatewayPool: false })
    gemini = await startFakeGemini({ apiKey: GEMINI_KEY, delayMs: 20 })
    for (const name of ["gcp-a", "gcp-b", "111"]) fakes[name] = await startFakeOllama({ name })
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "awooop-faults-"))
    const t = `"${STEP_TIMEOUT_MS}ms"`
    fs.writeFileSync(path.join(dir, "gateway.yaml"), `
hosts:
  gcp-a: { url: "${fakes["gcp-a"]!.url}", slots: 4, protected: true }
  gcp-b: { url: "${fakes["gcp-b"]!.url}", slots: 4, protected: true }
  "111": { url: "${fakes["111"]!.url}", slots: 3 }
  dead:  { url: "${await closedPortUrl()}", slots: 1 }
breaker: { consecutiveTimeouts: 2, cooldown: "${COOLDOWN_MS}ms" }
legacy: { projectId: awoooi, lanes: {} }
lanes:
  alert-fast:
    model: gemma3:4b
    reserved: { gcp-a: 2, gcp-b: 2 }
    route: [ { host: gcp-a, timeout: ${t} }, { host: gcp-b, timeout: ${t} }, { host: "111", timeout: ${t} } ]
  code-review:
    model: qwen2.5-coder:7b
    route: [ { host: "111", timeout: ${t} }, { host: gcp-b, timeout: ${t}, when: unavailable } ]
  embedding:
    model: bge-m3
    route: [ { host: "111", timeout: ${t} }, { host: gcp-b, timeout: ${t}, when: unavailable } ]
  alert-paid:
    model: gemma3:4b
    route: [ { host: dead, timeout: ${t} } ]
    paidFallback: [gemini]
providers:
  gemini: { kind: gemini, model: gemini-2.5-flash, apiKeyEnv: AWOOOP_FAULTS_GEMINI_KEY, baseUrl: "${gemini.url}", timeout: "2s", maxOutputTokens: 64 }
prices:
  gemini-2.5-flash: { input: 0.30, output: 2.50 }
budget: { hardKillUsd: 5, period: day }
server: { pollInterval: "500ms", probeTimeout: "3s", drainTimeout: "1s" }
`)
    env = {
      DATABASE_URL: db.proxiedUrl,
      AWOOOP_CONFIG: path.join(dir, "gateway.yaml"),
      AWOOOP_SPILL_DIR: path.join(dir, "spill"),
      AWOOOP_FAULTS_GEMINI_KEY: GEMINI_KEY
    }
    gw = await spawnGateway(env)
    await waitFor("every host to be polled up", async () => {
      const h = await health(url())
      return ["gcp-a", "gcp-b", "111"].every((n) => h.hosts[n]?.status === "up")
    }, 30_000)
  }, 120_000)

  afterAll(async () => {
    const failed = rows.some((r) => r.wrong.length > 0 || r.journalProblems.length > 0 || r.expected !== r.found || r.afterwards.length > 0)
    if (failed && gw !== null) console.log(`gateway output (last 6000 characters):\n${gw.output().slice(-6000)}`)
    if (gw !== null) {
      gw.process.kill("SIGKILL")
      await exited(gw.process)
    }
    for (const f of Object.values(fakes)) await f.stop()
    await gemini?.stop()
    await db?.close()
    if (dir) fs.rmSync(dir, { recursive: true, force: true })
    printTable("Fault matrix", rows)
  })

  /** (events the gateway wrote, rows in step_journal), read while the journal is idle and healthy. */
  const snapshot = async () => {
    let last = ""
    const deadline = Date.now() + 30_000
    for (;;) {
      const a = await healthJournal(url())
      const found = await countEvents(db.query)
      const b = await healthJournal(url())
      last = JSON.stringify({ a, b, found })
      const idle = (j: typeof a) => j.status === "ok" && j.queued === 0 && j.spilled === 0
      if (idle(a) && idle(b) && a.written === b.written) return { written: a.written, found }
      if (Date.now() > deadline) throw new Error(`the journal did not settle: ${last}`)
      await sleep(100)
    }
  }

  /** After a fault is cleared: wait out the cooldown, let a success close every breaker. */
  const recover = async (): Promise<Array<Outcome>> => {
    const out: Array<Outcome> = []
    await waitFor("every host to be polled up again", async () => {
      const h = await health(url())
      return ["gcp-a", "gcp-b", "111"].every((n) => h.hosts[n]?.status === "up")
    }, 15_000)
    const open = async () => Object.values((await health(url())).hosts).some((h) => h.breaker.status !== "closed")
    if (await open()) await sleep(COOLDOWN_MS + 100)
    for (let i = 0; i < 10 && (await open()); i++) {
      out.push(await send(url(), alertGenerate, { replies }))
      out.push(await send(url(), review, { replies }))
    }
    return out
  }

  /** Breakers closed, no probe held, no slot held, no upstream request left open. */
  const afterwards = async (): Promise<Array<string>> => {
    const problems: Array<string> = []
    await waitFor("the fakes to have no request in flight", () => Object.values(fakes).every((f) => f.inFlight() === 0), 5_000).catch(() => {})
    for (const [name, f] of Object.entries(fakes)) if (f.inFlight() !== 0) problems.push(`${name}: ${f.inFlight()} upstream requests left open`)
    const h = await health(url())
    for (const [name, host] of Object.entries(h.hosts)) {
      if (name === "dead") continue // never answers: its breaker has nothing to close it, and it takes no timeouts
      if (host.breaker.status !== "closed") problems.push(`${name}: breaker ${host.breaker.status}`)
      if (host.breaker.probeInFlight) problems.push(`${name}: a probe is stuck in flight`)
    }
    for (const [name, host] of Object.entries(h.hosts)) if (host.slots.inUse !== 0) problems.push(`${name}: ${host.slots.inUse} slots held`)
    return problems
  }

  const record = (fault: string, outcomes: ReadonlyArray<Outcome>, allowedOf: (o: Outcome) => Allowed, consistent: Set<string>, extra: Omit<RowResult, "fault" | "requests" | "answers" | "errors" | "wrong">) => {
    const wrong: Array<string> = []
    let answers = 0
    let errors = 0
    for (const o of outcomes) {
      const ok = (o.kind === "answer" || o.kind === "error") && allowedOf(o)(o) && consistent.has(o.traceId)
      if (!ok) {
        wrong.push(`${o.lane} ${o.operation}${o.stream ? " stream" : ""}: ${o.kind} ${o.status} ${o.endpoint ?? "-"} ${o.error ?? ""}${consistent.has(o.traceId) ? "" : " (journal disagrees)"}`)
      } else if (o.kind === "answer") answers++
      else errors++
    }
    const row: RowResult = { fault, requests: outcomes.length, answers, errors, wrong, ...extra }
    rows.push(row)
    return row
  }

  const expectRow = (row: RowResult) => {
    expect(row.wrong, `${row.fault}: requests without a correct answer or error`).toEqual([])
    expect(row.journalProblems, `${row.fault}: journal`).toEqual([])
    expect(row.found, `${row.fault}: events found vs expected`).toBe(row.expected)
    expect(row.afterwards, `${row.fault}: state afterwards`).toEqual([])
  }

  const runFault = async (fault: Fault) => {
    const t0 = Date.now()
    const before = await snapshot()
    await fault.inject?.()
    const [traffic, side] = await Promise.all([
      drive(url(), fault.calls, fault.total, fault.concurrency ?? 8, { replies, timeoutMs: 15_000 }),
      fault.during?.() ?? Promise.resolve([])
    ])
    await fault.clear?.()
    const recovery = await recover()
    const after = await snapshot()
    const outcomes = [...traffic, ...side, ...recovery]
    const audit = await auditOutcomes(db.query, outcomes)
    const all = await auditAllRuns(db.query)
    const recoveryIds = new Set(recovery.map((o) => o.traceId))
    const allowedOf = (o: Outcome): Allowed => recoveryIds.has(o.traceId) ? answer : fault.allowedFor?.(o) ?? fault.allowed
    const row = record(fault.name, outcomes, allowedOf, audit.consistent, {
      expected: after.written - before.written,
      found: after.found - before.found,
      journalProblems: [...audit.problems, ...all.problems].slice(0, 20),
      afterwards: await afterwards(),
      seconds: (Date.now() - t0) / 1000
    })
    expectRow(row)
  }

  const upstream = (name: string, host: string, mode: FakeMode, allowed: Allowed, options: { delayMs?: number } = {}): Fault => ({
    name,
    calls: ollamaCalls,
    total: 40,
    allowed,
    inject: async () => fakes[host]!.setMode(mode, options),
    clear: async () => fakes[host]!.setMode("ok", { delayMs: 50 })
  })

  it("baseline (no fault)", () =>
    runFault({ name: "none (baseline)", calls: [...ollamaCalls, paid], total: 30, allowed: answer }), 60_000)

  it("upstream hang", () => runFault(upstream("upstream hang (gcp-a)", "gcp-a", "hang", answer)), 60_000)

  it("slow drip", () =>
    runFault(upstream("slow drip, a chunk every 2 s (gcp-a)", "gcp-a", "drip", either(answer, brokeMidStream("gcp-a")), { delayMs: 2_000 })), 60_000)

  it("5xx", () => runFault(upstream("500 runner crashed (gcp-a)", "gcp-a", "error500", answer)), 60_000)

  it("503 busy on every host", () =>
    runFault({
      name: "503 server busy (gcp-a, gcp-b, 111)",
      calls: ollamaCalls,
      total: 40,
      allowed: busy,
      inject: async () => {
        for (const f of Object.values(fakes)) f.setMode("busy503")
      },
      clear: async () => {
        for (const f of Object.values(fakes)) f.setMode("ok")
      }
    }), 60_000)

  it("connection refused", () =>
    runFault({
      name: "connection refused (gcp-a stopped)",
      calls: ollamaCalls,
      total: 40,
      allowed: answer,
      inject: () => fakes["gcp-a"]!.stop(),
      clear: () => fakes["gcp-a"]!.start()
    }), 60_000)

  it("reset before the first chunk", () => runFault(upstream("reset before first chunk (gcp-a)", "gcp-a", "resetBeforeFirst", answer)), 60_000)

  it("reset mid-stream", () =>
    runFault(upstream("reset mid-stream (gcp-a)", "gcp-a", "resetMidStream", either(answer, brokeMidStream("gcp-a")))), 60_000)

  it("malformed NDJSON", () =>
    runFault(upstream("malformed NDJSON (gcp-a)", "gcp-a", "malformed", either(answer, brokeMidStream("gcp-a")))), 60_000)

  it("Postgres stopped", () =>
    runFault({
      name: "Postgres stopped (proxy refuses)",
      calls: ollamaCalls,
      total: 60,
      allowed: answer,
      allowedFor: (o) => (o.lane === "alert-paid" ? ledgerDown : undefined),
      inject: () => db.proxy.stop(),
      during: async () => {
        await waitFor("the journal to report degraded", async () => (await healthJournal(url())).status === "degraded", 15_000)
        const calls = gemini.requests.length
        const refused = [await send(url(), paid, { replies }), await send(url(), paid, { replies })]
        if (gemini.requests.length !== calls) throw new Error("a paid call was made with the ledger unreachable")
        return refused
      },
      clear: () => db.proxy.start()
    }), 90_000)

  it("Postgres restarted", () =>
    runFault({
      name: "Postgres restarted (connections cut)",
      calls: [...ollamaCalls, paid],
      total: 120,
      allowed: answer,
      // The ledger may be down at that moment, or back: a paid answer or a fail-closed 503.
      allowedFor: (o) => (o.lane === "alert-paid" ? either(answer, ledgerDown) : undefined),
      during: async () => {
        await sleep(200)
        await db.proxy.restart(500)
        await sleep(300)
        db.proxy.cutAll()
        return []
      }
    }), 90_000)

  it("gateway SIGKILL and restart", async () => {
    const t0 = Date.now()
    const before = await snapshot()
    await db.proxy.stop()
    const calls = [alertStream, review, embed]
    const outage = await drive(url(), calls, 30, 4, { replies })
    let pending = 0
    let writtenAtKill = 0
    await waitFor("every event of the outage to be spilled", async () => {
      const j = await healthJournal(url())
      pending = j.spilled
      writtenAtKill = j.written
      return j.status === "degraded" && j.queued === 0 && j.spilled > 0
    }, 30_000)
    const spillDir = env.AWOOOP_SPILL_DIR!
    const lines = fs.readdirSync(spillDir).filter((f) => f.endsWith(".jsonl"))
      .map((f) => fs.readFileSync(path.join(spillDir, f), "utf8").split("\n").filter((l) => l.trim() !== "").length)
      .reduce((a, b) => a + b, 0)
    gw!.process.kill("SIGKILL")
    await exited(gw!.process)
    gw = null
    await db.proxy.start()
    gw = await spawnGateway(env)
    await snapshot()
    const restarted = await drive(url(), calls, 15, 3, { replies })
    const end = await snapshot()
    const outcomes = [...outage, ...restarted]
    const audit = await auditOutcomes(db.query, outcomes)
    const all = await auditAllRuns(db.query)
    const problems = [...audit.problems, ...all.problems]
    if (lines !== pending) problems.push(`the spill holds ${lines} events, the journal said ${pending}`)
    const row = record("gateway SIGKILL (with spilled events) and restart", outcomes, () => answer, audit.consistent, {
      // What the killed process appended (written before the outage + spilled) and what the new one
      // appended (its writes less the replayed spill): (writtenAtKill - before) + pending + (end.written - pending).
      expected: (writtenAtKill - before.written) + end.written,
      found: end.found - before.found,
      journalProblems: problems.slice(0, 20),
      afterwards: await afterwards(),
      seconds: (Date.now() - t0) / 1000
    })
    expectRow(row)
  }, 120_000)
})
