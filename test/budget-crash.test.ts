/**
 * Crash safety of the budget, with the real entry point: the gateway runs as a child process
 * (`node dist/main.js`, config file in a temp dir, PostgreSQL test database), a fallback reserves
 * its worst case and the fake Gemini hangs, and the process is SIGKILLed between reservation and
 * settlement (with the operator's hard kill tripped meanwhile). On restart the orphaned reservation is
 * released (journal and ledger), the hard kill still holds, and no API key or admin token reaches any
 * output line.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { randomUUID } from "node:crypto"
import { mkdtemp, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { ensureDist, gatewayCommand } from "./support/Dist.ts"
import { closedPortUrl } from "./support/ClosedPort.ts"
import { defaultTestDatabaseUrl } from "./support/TestDatabase.ts"
import { type FakeGemini, startFakeGemini } from "./support/FakeGemini.ts"
import { newTraceId, startTestDatabase, type TestDatabaseHandle } from "./support/TestGateway.ts"

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const KEY = `gem-crash-${randomUUID()}`
const ADMIN = `admin-crash-${randomUUID()}`

let db: TestDatabaseHandle
let gemini: FakeGemini
let dir: string
let configFile: string
let databaseUrl: string
const output: Array<string> = []
const children = new Set<ChildProcess>()

const query = <T extends object>(text: string, params: ReadonlyArray<unknown> = []) =>
  Effect.runPromise(Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe<T>(text, params as Array<unknown>)).pipe(Effect.provide(db.context)))

const waitFor = async <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

interface Gateway {
  readonly child: ChildProcess
  readonly url: string
  readonly exited: Promise<void>
}

/** `node dist/main.js` in its own process group, so a kill reaches the whole tree. */
const startGateway = async (): Promise<Gateway> => {
  await ensureDist()
  const child = spawn(gatewayCommand[0], gatewayCommand.slice(1), {
    cwd: ROOT,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
    env: {
      ...process.env,
      AWOOOP_CONFIG: configFile,
      DATABASE_URL: databaseUrl,
      PORT: "0",
      HOST: "127.0.0.1",
      AWOOOP_CRASH_GEMINI_KEY: KEY,
      AWOOOP_ADMIN_TOKEN: ADMIN
    }
  })
  children.add(child)
  const exited = new Promise<void>((resolve) => child.once("exit", () => {
    children.delete(child)
    resolve()
  }))
  let port: string | undefined
  const onData = (chunk: Buffer) => {
    for (const line of chunk.toString("utf8").split("\n")) {
      if (line.trim() === "") continue
      output.push(line)
      port ??= /Listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(line)?.[1]
    }
  }
  child.stdout!.on("data", onData)
  child.stderr!.on("data", onData)
  const listening = await waitFor("the gateway to listen", async () => port, 60_000)
  return { child, url: `http://127.0.0.1:${listening}`, exited }
}

const kill = async (gw: Gateway, signal: NodeJS.Signals) => {
  process.kill(-gw.child.pid!, signal)
  await gw.exited
}

const admin = (gw: Gateway, body: unknown) =>
  fetch(`${gw.url}/awooop/admin/budget/hard-kill`, {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
    body: JSON.stringify(body)
  })

const fallback = (gw: Gateway, traceId: string, signal?: AbortSignal) =>
  fetch(`${gw.url}/api/generate`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-awooop-lane": "alert-fast", "x-awooop-trace-id": traceId },
    body: JSON.stringify({ model: "gemma3:4b", prompt: "why is the alert firing?", stream: false }),
    ...(signal ? { signal } : {})
  })

beforeAll(async () => {
  db = await startTestDatabase()
  const [row] = await query<{ name: string }>(`SELECT current_database() AS name`)
  const url = new URL(process.env.TEST_DATABASE_URL ?? defaultTestDatabaseUrl)
  url.pathname = `/${row!.name}`
  databaseUrl = url.toString()
  gemini = await startFakeGemini({ apiKey: KEY, mode: "hang" })
  const down = await closedPortUrl()
  dir = await mkdtemp(path.join(tmpdir(), "awooop-crash-"))
  configFile = path.join(dir, "gateway.yaml")
  await writeFile(configFile, `
hosts:
  gcp-a: { url: "${down}", slots: 2 }
lanes:
  alert-fast:
    model: gemma3:4b
    route: [ { host: gcp-a, timeout: "1s" } ]
    paidFallback: [gemini]
providers:
  gemini: { kind: gemini, model: gemini-2.5-flash, apiKeyEnv: AWOOOP_CRASH_GEMINI_KEY, baseUrl: "${gemini.url}", timeout: "60s" }
prices:
  gemini-2.5-flash: { input: 0.30, output: 2.50 }
budget: { hardKillUsd: 5.00, period: day }
server: { pollInterval: "1s", probeTimeout: "1s", drainTimeout: "1s" }
`)
}, 30_000)

afterAll(async () => {
  for (const child of children) {
    try {
      process.kill(-child.pid!, "SIGKILL")
    } catch { /* already gone */ }
  }
  await gemini?.stop()
  await db?.close()
  if (dir) await rm(dir, { recursive: true, force: true })
})

describe("a gateway killed between reservation and settlement", () => {
  it("releases the orphaned reservation on restart; the hard kill survives the kill too; no secret is printed", async () => {
    // 1. A fallback reserves, Gemini hangs; meanwhile the operator trips the hard kill; the process dies.
    const first = await startGateway()
    const traceId = newTraceId()
    const abort = new AbortController()
    const pending = fallback(first, traceId, abort.signal).catch(() => undefined)
    const reserved = await waitFor("an open reservation with the call in flight", async () => {
      const rows = await query<{ reservationId: string; runId: string; reserved: number }>(
        `SELECT reservation_id AS "reservationId", run_id AS "runId", reserved_usd::float8 AS reserved FROM budget_ledger WHERE status = 'reserved'`
      )
      return rows.length === 1 && gemini.inFlight() === 1 ? rows[0] : undefined
    })
    const trip = await admin(first, { tripped: true, reason: "runaway spend" })
    expect(trip.status).toBe(200)
    await kill(first, "SIGKILL")
    abort.abort()
    await pending
    const [afterCrash] = await query<{ status: string }>(`SELECT status FROM budget_ledger WHERE reservation_id = $1`, [reserved.reservationId])
    expect(afterCrash!.status).toBe("reserved")
    const runStream = `run-${reserved.runId}`
    const beforeRestart = await query<{ type: string }>(`SELECT type FROM step_journal WHERE stream_id = $1 ORDER BY stream_position`, [runStream])
    expect(beforeRestart.map((e) => e.type)).toContain("BudgetReserved")
    expect(beforeRestart.map((e) => e.type)).not.toContain("RunCompleted")

    // 2. Restart: the reservation is released before the gateway listens.
    gemini.setMode("ok")
    const second = await startGateway()
    const [released] = await query<{ status: string; reason: string }>(
      `SELECT status, release_reason AS reason FROM budget_ledger WHERE reservation_id = $1`,
      [reserved.reservationId]
    )
    expect(released).toEqual({ status: "released", reason: "orphaned: the gateway process stopped before the paid call settled; released at restart" })
    const events = await query<{ type: string; data: Record<string, unknown> }>(
      `SELECT type, data FROM step_journal WHERE stream_id = $1 ORDER BY stream_position`,
      [runStream]
    )
    // The release first, then the run's end (journal/Orphans.ts ends a dead process's runs after the budget's recovery).
    const releasedAt = events.findIndex((e) => e.type === "BudgetReleased")
    expect(events[releasedAt]).toMatchObject({ type: "BudgetReleased", data: { reservationId: reserved.reservationId, orphaned: true, reservedUsd: reserved.reserved } })
    expect(events.slice(releasedAt + 1).map((e) => e.type).filter((t) => t !== "AttemptFailed")).toEqual(["RunFailed"])
    expect(events.at(-1)).toMatchObject({ type: "RunFailed", data: { orphaned: true } })
    const status = await (await fetch(`${second.url}/awooop/admin/budget`, { headers: { authorization: `Bearer ${ADMIN}` } })).json() as Record<string, unknown>
    expect(status).toMatchObject({ reservedUsd: 0, settledUsd: 0, openReservations: 0, capUsd: 5, hardKill: { tripped: true, reason: "runaway spend" } })

    // 3. The hard kill tripped before the kill still holds; once reset, fallbacks flow again.
    const refused = await fallback(second, newTraceId())
    expect(refused.status).toBe(503)
    expect((await refused.json() as { error: string }).error).toMatch(/the operator tripped the budget hard kill \(runaway spend\)/)
    expect(gemini.requests).toHaveLength(1)
    expect((await admin(second, { tripped: false, reason: "incident closed" })).status).toBe(200)
    const ok = await fallback(second, newTraceId())
    expect(ok.status).toBe(200)
    expect((await ok.json() as { response: string }).response).toBe("[gemini] hello from gemini")
    const budgetStream = await query<{ type: string }>(`SELECT type FROM step_journal WHERE stream_id = 'budget' ORDER BY stream_position`)
    expect(budgetStream.map((e) => e.type)).toEqual(["HardKillTripped", "OrphanedReservationsReleased", "HardKillReset"])
    await kill(second, "SIGTERM")

    // 4. Nothing printed by either process carries a secret.
    expect(output.some((line) => line.includes("Listening on"))).toBe(true)
    expect(output.filter((line) => line.includes(KEY) || line.includes(ADMIN))).toEqual([])
    const leaked = await query<{ n: number }>(`SELECT count(*)::int AS n FROM step_journal t WHERE row_to_json(t)::text LIKE '%' || $1 || '%'`, [KEY])
    expect(leaked[0]!.n).toBe(0)
  }, 180_000)
})
