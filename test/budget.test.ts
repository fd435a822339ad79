/**
 * The budget cap under concurrency: 50 paid fallbacks at once against a hardKillUsd that covers 10
 * worst cases. The reservation is checked and written under one PostgreSQL row lock, so the settled
 * plus reserved total may never pass the cap — sampled from the ledger all through the burst — and
 * every refused caller gets a 503 naming the hard kill, without the provider being called.
 */
import { randomUUID } from "node:crypto"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { formatUsd } from "../src/budget/Budget.ts"
import { toPaidRequest } from "../src/providers/Translate.ts"
import { worstCaseUsd } from "../src/routing/PaidRoute.ts"
import { closedPortUrl } from "./support/ClosedPort.ts"
import { type FakeGemini, startFakeGemini } from "./support/FakeGemini.ts"
import { newTraceId, startTestGateway, type TestGateway } from "./support/TestGateway.ts"

const KEY = `gem-budget-${randomUUID()}`
process.env.AWOOOP_BUDGET_TEST_GEMINI_KEY = KEY

const PRICE = { inputPerToken: 0.30 / 1e6, outputPerToken: 2.50 / 1e6 }
const MAX_OUTPUT = 1000
const BODY = { model: "gemma3:4b", prompt: "why is the alert firing?", stream: false }
const WORST = worstCaseUsd(toPaidRequest("generate", BODY, MAX_OUTPUT) as Exclude<ReturnType<typeof toPaidRequest>, { unsupported: string }>, PRICE).amountUsd
const CAP = WORST * 10.5

let gemini: FakeGemini
let gw: TestGateway

beforeAll(async () => {
  // Gemini holds every answer until the test opens the gate: no call settles (and frees budget,
  // real costs being below the worst case) before all 50 have asked for theirs.
  gemini = await startFakeGemini({ apiKey: KEY, mode: "gate" })
  const down = await closedPortUrl()
  gw = await startTestGateway({
    hosts: { "gcp-a": { url: down }, "gcp-b": { url: down }, "111": { url: down } },
    lanes: {
      "alert-fast": {
        model: "gemma3:4b",
        route: [{ host: "gcp-a", timeout: "1s" }, { host: "gcp-b", timeout: "1s" }, { host: "111", timeout: "1s" }],
        paidFallback: ["gemini"]
      }
    },
    extra: {
      providers: { gemini: { kind: "gemini", model: "gemini-2.5-flash", apiKeyEnv: "AWOOOP_BUDGET_TEST_GEMINI_KEY", baseUrl: gemini.url, maxOutputTokens: MAX_OUTPUT, timeout: "10s" } },
      prices: { "gemini-2.5-flash": { input: 0.30, output: 2.50 } },
      budget: { hardKillUsd: CAP, period: "day" }
    }
  })
}, 30_000)

afterAll(async () => {
  await gw?.close()
  await gemini?.stop()
})

describe("the hard kill cap under 50 concurrent fallbacks", () => {
  it("never lets settled + reserved exceed hardKillUsd; the refused get 503 naming the hard kill", async () => {
    let sampling = true
    let maxCommitted = 0
    let samples = 0
    const monitor = (async () => {
      while (sampling) {
        const rows = await gw.query<{ committed: number }>(
          `SELECT COALESCE(SUM(CASE status WHEN 'reserved' THEN reserved_usd WHEN 'settled' THEN settled_usd ELSE 0 END), 0)::float8 AS committed FROM budget_ledger`
        )
        maxCommitted = Math.max(maxCommitted, rows[0]!.committed)
        samples++
      }
    })()

    let answered = 0
    const requests = Array.from({ length: 50 }, async () => {
      const res = await gw.post("/api/generate", BODY, { "x-awooop-lane": "alert-fast", "x-awooop-trace-id": newTraceId() })
      const result = { status: res.status, body: await res.json() as { response?: string; error?: string } }
      answered++
      return result
    })
    // Every request has either been answered (refused) or is held at Gemini: then let Gemini answer.
    const deadline = Date.now() + 30_000
    while (answered + gemini.inFlight() < 50 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    gemini.openGate()
    const results = await Promise.all(requests)
    sampling = false
    await monitor

    const ok = results.filter((r) => r.status === 200)
    const refused = results.filter((r) => r.status !== 200)
    // The cap covers exactly 10 worst cases, and nothing settled while the burst was asking.
    expect(ok).toHaveLength(10)
    for (const r of ok) expect(r.body.response).toBe("[gemini] hello from gemini")
    expect(refused).toHaveLength(40)
    for (const r of refused) {
      expect(r.status).toBe(503)
      expect(r.body.error).toContain("paid call refused by the budget hard kill: the budget's hardKillUsd per day would be exceeded")
      // The spend figures are the operator's: the journal has them, the caller's answer does not.
      expect(r.body.error).not.toContain(formatUsd(CAP))
      expect(r.body.error).not.toMatch(/\$\d/)
    }
    // Refused calls never reached the provider.
    expect(gemini.requests).toHaveLength(10)

    expect(samples).toBeGreaterThan(3)
    expect(maxCommitted).toBeLessThanOrEqual(CAP + 1e-9)
    const [final] = await gw.query<{ settled: number; reserved: number; settledRows: number; released: number }>(
      `SELECT COALESCE(SUM(settled_usd) FILTER (WHERE status = 'settled'), 0)::float8 AS settled,
              COALESCE(SUM(reserved_usd) FILTER (WHERE status = 'reserved'), 0)::float8 AS reserved,
              COUNT(*) FILTER (WHERE status = 'settled')::int AS "settledRows",
              COUNT(*) FILTER (WHERE status = 'released')::int AS released
       FROM budget_ledger`
    )
    expect(final!.settledRows).toBe(10)
    expect(final!.reserved).toBe(0)
    expect(final!.settled + final!.reserved).toBeLessThanOrEqual(CAP)
    const denied = await gw.query<{ n: number }>(`SELECT count(*)::int AS n FROM step_journal WHERE type = 'BudgetDenied'`)
    expect(denied[0]!.n).toBe(40)
    // How long asking the ledger takes under the burst: PaidFallbackRequested → BudgetReserved (durable) or BudgetDenied.
    const [lat] = await gw.query<{ min: number; p50: number; max: number }>(
      `SELECT min(ms)::float8 AS min, percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::float8 AS p50, max(ms)::float8 AS max FROM (
         SELECT extract(epoch FROM d.occurred_at - r.occurred_at) * 1000 AS ms
         FROM step_journal r JOIN step_journal d ON d.stream_id = r.stream_id AND d.type IN ('BudgetReserved', 'BudgetDenied')
         WHERE r.type = 'PaidFallbackRequested') t`
    )
    console.info(`budget burst: 50 fallbacks, 10 served, 40 refused; max committed ${maxCommitted.toFixed(6)} of cap ${CAP.toFixed(6)} over ${samples} samples; ledger decision min ${lat!.min.toFixed(1)} / p50 ${lat!.p50.toFixed(1)} / max ${lat!.max.toFixed(1)} ms (serialised on the lock)`)
  }, 60_000)
})
