/**
 * Postgres unavailable while traffic flows (issue 7, part 1), end to end: the real gateway whose
 * DATABASE_URL goes through a loopback proxy (test/support/PgProxy.ts) that refuses connections,
 * cuts them (a restart) or black-holes them — the machine's Postgres itself is never stopped.
 *
 * - Ollama lanes keep serving; /awooop/health reports the journal degraded.
 * - Events spill to local disk and are written exactly once, in order per stream, once it is back.
 * - A paid fallback with the budget ledger unreachable fails closed with a clear 503.
 * - A gateway SIGKILLed with spilled events pending writes them after its restart.
 */
import { LogLevel } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type FakeGemini, startFakeGemini } from "./support/FakeGemini.ts"
import { type FakeOllama, startFakeOllama } from "./support/FakeOllama.ts"
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
  type ProxiedDatabase,
  send,
  spawnGateway,
  startProxiedDatabase,
  waitFor
} from "./support/FaultKit.ts"
import { defaultLanes, type RawConfig, startTestGateway, type TestGateway } from "./support/TestGateway.ts"

const GEMINI_KEY = `gem-outage-${crypto.randomUUID()}`
process.env.AWOOOP_OUTAGE_GEMINI_KEY = GEMINI_KEY
const GEMINI_REPLY = "[gemini] hello from gemini"

/** Mixed Ollama traffic: streaming and not, generate, chat and embed, three lanes. */
const ollamaCalls: ReadonlyArray<Call> = [
  { lane: "alert-fast", model: "gemma3:4b", operation: "generate", stream: false },
  { lane: "alert-fast", model: "gemma3:4b", operation: "generate", stream: true },
  { lane: "alert-fast", model: "gemma3:4b", operation: "chat", stream: true },
  { lane: "code-review", model: "qwen2.5-coder:7b", operation: "chat", stream: false },
  { lane: "embedding", model: "bge-m3", operation: "embed", stream: false }
]
const paidCall: Call = { lane: "alert-paid", model: "gemma3:4b", operation: "generate", stream: false }

/**
 * The Ollama lanes above with 2 s steps instead of the suite's 300 ms: this file is about Postgres,
 * and its gateway runs in the test's own process, whose event loop a busy neighbour can stall for
 * a few hundred milliseconds (seen once with four workers on two cores: an embed "timed out while
 * the gateway's event loop was blocked 231ms"). No assertion here is about a host's timeout.
 */
const patientLane = (name: string): RawConfig => {
  const lane = defaultLanes[name]!
  return { ...lane, route: (lane.route as ReadonlyArray<RawConfig>).map((step) => ({ ...step, timeout: "2s" })) }
}

const expectAllAnswered = (outcomes: ReadonlyArray<Outcome>) => {
  const bad = outcomes.filter((o) => o.kind !== "answer")
  expect(bad.map((o) => `${o.lane} ${o.operation}: ${o.status} ${o.error}`)).toEqual([])
}

/** Every outcome's run is in the journal once, complete, in order, agreeing with the caller. */
const expectJournalComplete = async (db: ProxiedDatabase, outcomes: ReadonlyArray<Outcome>) => {
  const audit = await auditOutcomes(db.query, outcomes)
  expect(audit.problems).toEqual([])
  expect(audit.runs).toBe(outcomes.length)
  const all = await auditAllRuns(db.query)
  expect(all.problems).toEqual([])
  return audit
}

// The two sections run side by side (each has its own database, proxy and gateway; most of both is
// waiting for timeouts, restarts and a spawned process); the tests inside each stay in order.
describe.concurrent("Postgres unavailable while traffic flows (in-process gateway behind a PgProxy)", () => {
  let db: ProxiedDatabase
  let gemini: FakeGemini
  let gw: TestGateway

  beforeAll(async () => {
    db = await startProxiedDatabase()
    gemini = await startFakeGemini({ apiKey: GEMINI_KEY, delayMs: 20 })
    gw = await startTestGateway({
      database: db.handle,
      hosts: { dead: { slots: 2, url: await closedPortUrl() } },
      lanes: {
        ...Object.fromEntries([...new Set(ollamaCalls.map((c) => c.lane))].map((name) => [name, patientLane(name)])),
        // A lane whose only host is down: every request goes to the paid fallback (behind the budget).
        "alert-paid": { model: "gemma3:4b", route: [{ host: "dead", timeout: "300ms" }], paidFallback: ["gemini"] }
      },
      extra: {
        providers: {
          gemini: { kind: "gemini", model: "gemini-2.5-flash", apiKeyEnv: "AWOOOP_OUTAGE_GEMINI_KEY", baseUrl: gemini.url, timeout: "2s", maxOutputTokens: 64 }
        },
        prices: { "gemini-2.5-flash": { input: 0.30, output: 2.50 } },
        budget: { hardKillUsd: 5, period: "day" }
      },
      // Short enough that a black-holed write is given up on quickly; the defaults are 5 s and 2 s.
      journal: { writeTimeout: "1 second", retryBase: "50 millis", retryCap: "300 millis" },
      // The outages are on purpose: the journal and the budget log each one at warning/error level.
      logLevel: LogLevel.None
    })
  }, 60_000)

  afterAll(async () => {
    await gw?.close()
    await gemini?.stop()
    await db?.close()
  })

  const stats = () => healthJournal(gw.url)
  const settled = () =>
    waitFor("the journal to be ok with nothing spilled or queued", async () => {
      const j = await stats()
      return j.status === "ok" && j.spilled === 0 && j.queued === 0
    }, 20_000)

  it.sequential("keeps serving Ollama lanes while Postgres is stopped, spills, fails paid calls closed, and loses nothing", async () => {
    await settled()
    const before = await countEvents(db.query)
    const written0 = (await stats()).written

    // Paid fallback works while the ledger is reachable …
    const paidOk = await send(gw.url, paidCall, { replies: { gemini: GEMINI_REPLY } })
    expect(paidOk.kind, paidOk.error ?? "").toBe("answer")
    expect(paidOk.endpoint).toBe("gemini")
    const warm = await drive(gw.url, ollamaCalls, 20, 4)
    expectAllAnswered(warm)

    await db.proxy.stop()
    const during = await drive(gw.url, ollamaCalls, 60, 6)
    expectAllAnswered(during)
    await waitFor("the journal to report degraded with the events spilled", async () => {
      const j = await stats()
      return j.status === "degraded" && j.spilled > 0 && j.queued === 0
    })

    expect((await health(gw.url)).summary.filter((l) => l.startsWith("journal: degraded"))).toHaveLength(1)

    // … and fails closed without it: a clear 503, and no call to the paid provider.
    const geminiCalls = gemini.requests.length
    const paidDown = await send(gw.url, paidCall)
    expect(paidDown.kind).toBe("error")
    expect(paidDown.status).toBe(503)
    expect(paidDown.error).toMatch(/budget ledger is unreachable/)
    expect(paidDown.error).toMatch(/fail closed/)
    expect(gemini.requests.length).toBe(geminiCalls)

    await db.proxy.start()
    await settled()
    await expectJournalComplete(db, [paidOk, ...warm, ...during, paidDown])
    // Nothing lost, nothing doubled: every event the gateway appended is one row.
    const after = await countEvents(db.query)
    expect(after - before).toBe((await stats()).written - written0)
    // The BudgetDenied of the refused call says why.
    const denied = await db.query<{ data: { failClosed?: boolean } }>(
      `SELECT data FROM step_journal WHERE trace_id = $1 AND type = 'BudgetDenied'`,
      [paidDown.traceId]
    )
    expect(denied.map((d) => d.data.failClosed)).toEqual([true])
  }, 60_000)

  it.sequential("survives a Postgres restart in the middle of traffic (connections cut, refused, then back)", async () => {
    await settled()
    const before = await countEvents(db.query)
    const written0 = (await stats()).written
    const traffic = drive(gw.url, ollamaCalls, 300, 8)
    await new Promise((r) => setTimeout(r, 150))
    await db.proxy.restart(400)
    await new Promise((r) => setTimeout(r, 150))
    db.proxy.cutAll() // and once more, with the pool reconnected
    const outcomes = await traffic
    expectAllAnswered(outcomes)
    await settled()
    await expectJournalComplete(db, outcomes)
    expect((await countEvents(db.query)) - before).toBe((await stats()).written - written0)
  }, 60_000)

  it.sequential("does not hang on a black-holed Postgres: Ollama lanes answer, paid calls fail closed in bounded time", async () => {
    await settled()
    const before = await countEvents(db.query)
    const written0 = (await stats()).written
    db.proxy.blackhole()
    const t0 = Date.now()
    const outcomes = await drive(gw.url, ollamaCalls, 60, 6)
    expectAllAnswered(outcomes)
    const slowest = Math.max(...outcomes.map((o) => o.ms))
    await waitFor("the journal to give up on the black-holed writes", async () => (await stats()).status === "degraded")
    const paid = await send(gw.url, paidCall)
    expect(paid.kind).toBe("error")
    expect(paid.status).toBe(503)
    expect(paid.error).toMatch(/budget ledger is unreachable/)
    expect(paid.ms).toBeLessThan(15_000)
    db.proxy.heal()
    await settled()
    await expectJournalComplete(db, [...outcomes, paid])
    expect((await countEvents(db.query)) - before).toBe((await stats()).written - written0)
    // The request path never waited on the database (which answered nothing until heal()): generous
    // for a loaded CI machine, far below "until the partition heals".
    expect(slowest, `slowest request ${slowest} ms, ${Date.now() - t0} ms in all`).toBeLessThan(8_000)
  }, 90_000)

  it.sequential("a connection cut in the middle of a budget reservation fails the paid call closed (503), not with a 500", async () => {
    await settled()
    // Held mid-transaction by the black hole, then cut: the reservation's ROLLBACK fails on a dead
    // connection (a defect inside @effect/sql), which must still read as "ledger unreachable".
    db.proxy.blackhole()
    const pending = send(gw.url, paidCall)
    await new Promise((r) => setTimeout(r, 500))
    db.proxy.cutAll()
    db.proxy.heal()
    const paid = await pending
    expect(paid.kind, paid.error ?? "").toBe("error")
    expect(paid.status).toBe(503)
    expect(paid.error).toMatch(/budget ledger is unreachable/)
    await settled()
    await expectJournalComplete(db, [paid])
    // Nothing stays reserved: the refused call holds no budget.
    await waitFor("no open reservation", async () =>
      (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM budget_ledger WHERE status = 'reserved'`))[0]!.n === 0)
  }, 60_000)
})

// ---------------------------------------------------------------------------------------------
// SIGKILL with spilled events pending

describe.concurrent("a gateway SIGKILLed with spilled events pending", () => {
  let db: ProxiedDatabase
  const fakes: Array<FakeOllama> = []
  let dir: string
  let child: Child | null = null

  beforeAll(async () => {
    db = await startProxiedDatabase({ gatewayPool: false })
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "awooop-sigkill-"))
    const a = await startFakeOllama({ name: "gcp-a" })
    const b = await startFakeOllama({ name: "111" })
    fakes.push(a, b)
    fs.writeFileSync(path.join(dir, "gateway.yaml"), `
hosts:
  gcp-a: { url: "${a.url}", slots: 4 }
  "111": { url: "${b.url}", slots: 2 }
lanes:
  alert-fast:
    model: gemma3:4b
    route: [ { host: gcp-a, timeout: "2s" } ]
  code-review:
    model: qwen2.5-coder:7b
    route: [ { host: "111", timeout: "2s" } ]
server: { pollInterval: "500ms", drainTimeout: "1s" }
`)
  }, 60_000)

  afterAll(async () => {
    if (child !== null) {
      child.process.kill("SIGKILL")
      await exited(child.process)
    }
    for (const f of fakes) await f.stop()
    await db?.close()
    fs.rmSync(dir, { recursive: true, force: true })
  })

  it.sequential("writes them to Postgres after the restart, exactly once and in order", async () => {
    const env = {
      DATABASE_URL: db.proxiedUrl,
      AWOOOP_CONFIG: path.join(dir, "gateway.yaml"),
      AWOOOP_SPILL_DIR: path.join(dir, "spill"),
      AWOOOP_PROJECTOR_INTERVAL: "200 millis"
    }
    child = await spawnGateway(env)
    const calls: ReadonlyArray<Call> = [
      { lane: "alert-fast", model: "gemma3:4b", operation: "generate", stream: true },
      { lane: "code-review", model: "qwen2.5-coder:7b", operation: "chat", stream: false }
    ]
    const before = await drive(child.url, calls, 10, 2)
    expectAllAnswered(before)

    await db.proxy.stop()
    const during = await drive(child.url, calls, 40, 4)
    expectAllAnswered(during)
    let pending = 0
    await waitFor("every event of the outage to be in the spill", async () => {
      const j = await healthJournal(child!.url)
      pending = j.spilled
      return j.status === "degraded" && j.queued === 0 && j.spilled > 0
    }, 30_000)
    const segments = fs.readdirSync(env.AWOOOP_SPILL_DIR).filter((f) => f.endsWith(".jsonl"))
    expect(segments.length).toBeGreaterThan(0)
    const spilledLines = segments
      .map((f) => fs.readFileSync(path.join(env.AWOOOP_SPILL_DIR, f), "utf8").split("\n").filter((l) => l.trim() !== "").length)
      .reduce((a, b) => a + b, 0)
    expect(spilledLines).toBe(pending)
    const spilledRowKeys = segments.flatMap((f) =>
      fs.readFileSync(path.join(env.AWOOOP_SPILL_DIR, f), "utf8").split("\n").filter((l) => l.trim() !== "")
        .map((l) => { const r = JSON.parse(l) as { streamId: string; streamPosition: number }; return `${r.streamId}#${r.streamPosition}` }))
    const rowsBeforeKill = await countEvents(db.query)

    child.process.kill("SIGKILL")
    await exited(child.process)
    child = null
    // None of the outage's runs reached Postgres.
    expect((await auditOutcomes(db.query, during)).runs).toBe(0)

    await db.proxy.start()
    child = await spawnGateway(env)
    await waitFor("the spill to be replayed", () => fs.readdirSync(env.AWOOOP_SPILL_DIR).filter((f) => f.endsWith(".jsonl")).length === 0, 30_000)
    // Every spilled event is in Postgres after the restart. Once: (stream_id, stream_position) is
    // unique, so a row that was both committed and spilled (its INSERT's answer lost as the link
    // dropped) is a no-op on replay — which is also why the writer's own `written` count can exceed
    // the rows it added, and is not compared here.
    const spilledKeys = spilledRowKeys
    let seen = ""
    await waitFor("every spilled event to be in step_journal", async () => {
      const rows = await db.query<{ key: string }>(
        `SELECT stream_id || '#' || stream_position AS key FROM step_journal WHERE stream_id || '#' || stream_position = ANY($1::text[])`,
        [spilledKeys]
      )
      seen = `${rows.length} of ${spilledKeys.length} spilled events in Postgres; ${rowsBeforeKill} rows before the kill`
      return rows.length === spilledKeys.length
    }).catch((e: Error) => {
      throw new Error(`${e.message}: ${seen}`)
    })
    await expectJournalComplete(db, [...before, ...during])
    // And the restarted gateway journals on top of them (host streams continue their positions).
    const after = await drive(child.url, calls, 10, 2)
    expectAllAnswered(after)
    await waitFor("the new runs to be written", async () => (await healthJournal(child!.url)).queued === 0)
    await new Promise((r) => setTimeout(r, 300))
    await expectJournalComplete(db, [...before, ...during, ...after])
    child.process.kill("SIGTERM")
    await exited(child.process)
    child = null
  }, 120_000)
})
