/**
 * Fault rows for the journal at its edges (issue 17; issue 12 item 5), on the real gateway process
 * (src/main.ts, production journal settings: write timeout 5 s) in front of fake Ollama hosts, its
 * DATABASE_URL through a PgProxy:
 *   - spill disk full: the spill on a 64 KiB tmpfs while Postgres is stopped;
 *   - black-holed Postgres: spilling and `degraded` within the write timeout; async submissions 503;
 *   - async run finishing during an outage: its answer is served after recovery;
 *   - Postgres crash with async runs: each accepted run ends once, no refused one runs;
 *   - SIGKILL mid-traffic (`server.durableRunEnd: true`): every run stream ends after the restart,
 *     and every caller that got a whole answer has its RunCompleted.
 * Every wait is on a condition with a generous bound (the machine is shared).
 */
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type FakeOllama, startFakeOllama } from "../support/FakeOllama.ts"
import {
  auditAllRuns,
  auditOutcomes,
  type Call,
  type Child,
  checkStream,
  countEvents,
  drive,
  exited,
  health,
  healthJournal,
  type JournalRow,
  type Outcome,
  printTable,
  type ProxiedDatabase,
  type RowResult,
  send,
  spawnGateway,
  startProxiedDatabase,
  waitFor
} from "../support/FaultKit.ts"

const alertGenerate: Call = { lane: "alert-fast", model: "gemma3:4b", operation: "generate", stream: false }
const alertStream: Call = { lane: "alert-fast", model: "gemma3:4b", operation: "generate", stream: true }
const alertChat: Call = { lane: "alert-fast", model: "gemma3:4b", operation: "chat", stream: true }
const calls = [alertGenerate, alertStream, alertChat]

const rows: Array<RowResult> = []
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe("fault matrix: the journal at its edges", () => {
  let db: ProxiedDatabase
  const fakes: Record<string, FakeOllama> = {}
  let dir: string
  let small: string | null = null
  let env: Record<string, string>
  const children: Array<Child> = []

  beforeAll(async () => {
    db = await startProxiedDatabase({ gatewayPool: false })
    for (const name of ["gcp-a", "gcp-b", "rca"]) fakes[name] = await startFakeOllama({ name })
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "awooop-faults-edges-"))
    const yaml = (durableRunEnd: boolean) => `
hosts:
  gcp-a: { url: "${fakes["gcp-a"]!.url}", slots: 4 }
  gcp-b: { url: "${fakes["gcp-b"]!.url}", slots: 4 }
  rca:   { url: "${fakes["rca"]!.url}", slots: 4 }
breaker: { consecutiveTimeouts: 5, cooldown: "1s" }
legacy: { projectId: awoooi, lanes: {} }
lanes:
  alert-fast:
    model: gemma3:4b
    route: [ { host: gcp-a, timeout: "5s" }, { host: gcp-b, timeout: "5s" } ]
  deep-rca:
    model: qwen2.5:14b
    async: true
    route: [ { host: rca, timeout: "20s" } ]
asyncRuns: { workers: 4 }
# Probes are capped at 2/5 of the interval: 2 s keeps a loaded machine from marking hosts down.
server: { pollInterval: "2s", probeTimeout: "3s", drainTimeout: "1s"${durableRunEnd ? ", durableRunEnd: true" : ""} }
`
    fs.writeFileSync(path.join(dir, "gateway.yaml"), yaml(false))
    fs.writeFileSync(path.join(dir, "durable-end.yaml"), yaml(true))
    env = { DATABASE_URL: db.proxiedUrl, AWOOOP_CONFIG: path.join(dir, "gateway.yaml"), AWOOOP_SPILL_DIR: path.join(dir, "spill") }
  }, 120_000)

  afterAll(async () => {
    const failed = rows.some((r) => r.wrong.length > 0 || r.journalProblems.length > 0 || r.expected !== r.found)
    for (const child of children) {
      if (failed) console.log(`gateway output (last 4000 characters):\n${child.output().slice(-4000)}`)
      child.process.kill("SIGKILL")
      await exited(child.process)
    }
    for (const f of Object.values(fakes)) await f.stop()
    await db?.close()
    if (small !== null) {
      try {
        execFileSync("umount", [small])
      } catch { /* not mounted */ }
    }
    if (dir) fs.rmSync(dir, { recursive: true, force: true })
    printTable("Fault matrix: the journal at its edges", rows)
  })

  const start = async (extra: Record<string, string> = {}) => {
    const child = await spawnGateway({ ...env, ...extra })
    children.push(child)
    await waitFor("every host to be polled up", async () => {
      const h = await health(child.url)
      return ["gcp-a", "gcp-b", "rca"].every((n) => h.hosts[n]?.status === "up")
    }, 30_000)
    return child
  }
  const stop = async (child: Child) => {
    child.process.kill("SIGKILL")
    await exited(child.process)
    children.splice(children.indexOf(child), 1)
  }

  /** (events the gateway wrote, rows in step_journal), read while the journal is idle and healthy. */
  const snapshot = async (url: string) => {
    let last = ""
    const deadline = Date.now() + 60_000
    for (;;) {
      const a = await healthJournal(url)
      const found = await countEvents(db.query)
      const b = await healthJournal(url)
      last = JSON.stringify({ a, b, found })
      const idle = (j: typeof a) => j.status === "ok" && j.queued === 0 && j.spilled === 0
      if (idle(a) && idle(b) && a.written === b.written) return { written: a.written, found }
      if (Date.now() > deadline) throw new Error(`the journal did not settle: ${last}`)
      await sleep(100)
    }
  }

  const classify = (outcomes: ReadonlyArray<Outcome>, allowed: (o: Outcome) => boolean, consistent: Set<string>) => {
    const wrong: Array<string> = []
    let answers = 0
    let errors = 0
    for (const o of outcomes) {
      if (!allowed(o) || !consistent.has(o.traceId)) {
        wrong.push(`${o.lane} ${o.operation}${o.stream ? " stream" : ""}: ${o.kind} ${o.status} ${o.errorTag ?? ""} ${o.error ?? ""}${consistent.has(o.traceId) ? "" : " (journal disagrees)"}`)
      } else if (o.kind === "answer") answers++
      else errors++
    }
    return { wrong, answers, errors }
  }

  const expectRow = (row: RowResult) => {
    rows.push(row)
    expect(row.wrong, `${row.fault}: requests without a correct answer or error`).toEqual([])
    expect(row.journalProblems, `${row.fault}: journal`).toEqual([])
    expect(row.found, `${row.fault}: events found vs expected`).toBe(row.expected)
  }

  /** A row of the table: what the callers got, the events written/found, the problems found. */
  const rowOf = (
    fault: string,
    t0: number,
    callers: Pick<RowResult, "requests" | "answers" | "errors" | "wrong">,
    events: { readonly before: { written: number; found: number }; readonly after: { written: number; found: number }; readonly expected?: number },
    problems: ReadonlyArray<string>
  ): RowResult => ({
    fault,
    ...callers,
    expected: events.expected ?? events.after.written - events.before.written,
    found: events.after.found - events.before.found,
    journalProblems: problems.slice(0, 20),
    afterwards: [],
    seconds: (Date.now() - t0) / 1000
  })

  const asyncLaneSafe = async (url: string) =>
    ((await health(url)) as unknown as { lanes: Record<string, { safe: boolean }> }).lanes["deep-rca"]?.safe === true

  const noOpenAsyncRows = () =>
    waitFor("no async_runs row left open", async () =>
      (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM async_runs WHERE finished_at IS NULL`))[0]!.n === 0, 60_000, 250)

  /** An async submission on deep-rca: 202 with a run id, or the refusal. */
  const submit = async (url: string, prompt: string) => {
    const t0 = performance.now()
    try {
      const res = await fetch(`${url}/api/generate`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-awooop-lane": "deep-rca", "x-awooop-project-id": "faults" },
        body: JSON.stringify({ model: "qwen2.5:14b", prompt, stream: false }),
        signal: AbortSignal.timeout(30_000)
      })
      const body = (await res.json()) as { runId?: string; error?: string }
      return { prompt, status: res.status, runId: body.runId ?? null, error: body.error ?? null, ms: performance.now() - t0 }
    } catch (e) {
      return { prompt, status: 0, runId: null, error: String(e), ms: performance.now() - t0 }
    }
  }

  const runView = async (url: string, runId: string) => {
    const res = await fetch(`${url}/awooop/runs/${runId}`)
    if (res.status !== 200) return null
    return (await res.json()) as { status: string; result: unknown }
  }

  const streamOf = (runId: string) =>
    db.query<JournalRow>(
      `SELECT stream_id AS "streamId", stream_position AS "position", global_position::float8 AS "globalPosition", type,
              trace_id AS "traceId", data FROM step_journal WHERE stream_id = $1 ORDER BY stream_position`,
      [`run-${runId}`]
    )

  /** Prompts the rca host was asked (each async run's body carries its own). */
  const promptsAtRca = () =>
    fakes["rca"]!.requests.map((r) => (r.body as { prompt?: unknown } | undefined)?.prompt).filter((p): p is string => typeof p === "string")

  it("spill disk full: unavailable → fast 503s, recovers when Postgres returns, nothing lost silently", async () => {
    small = path.join(dir, "spill-64k")
    fs.mkdirSync(small)
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", small])
    const gw = await start({ AWOOOP_SPILL_DIR: small })
    try {
      await spillFull(gw)
    } finally {
      // Whatever happened, the rows after this one get Postgres back and a normal disk.
      await db.proxy.start()
      await stop(gw)
      execFileSync("umount", [small])
      small = null
    }
  }, 240_000)

  const spillFull = async (gw: Child) => {
    const t0 = Date.now()
    const before = await snapshot(gw.url)
    await db.proxy.stop()
    const refusals: Array<Outcome> = []
    let unavailableSeen = false
    let metricsSaid = false
    const [traffic] = await Promise.all([
      drive(gw.url, calls, 120, 4, { timeoutMs: 15_000 }),
      (async () => {
        await waitFor("the journal to report unavailable", async () => (await healthJournal(gw.url)).status === "unavailable", 60_000)
        unavailableSeen = (await health(gw.url)).summary.some((l) => l.startsWith("journal: UNAVAILABLE"))
        metricsSaid = /^awooop_journal_unavailable(\{\})? 1$/m.test(await (await fetch(`${gw.url}/metrics`)).text())
        refusals.push(await send(gw.url, alertGenerate, { timeoutMs: 5_000 }))
      })()
    ])
    await db.proxy.start()
    const after0 = await snapshot(gw.url)
    const recovery = await drive(gw.url, calls, 9, 3)
    const after = await snapshot(gw.url)
    const outcomes = [...traffic, ...refusals, ...recovery]
    // A refused run never started: no run stream (nothing was journaled for it).
    const refused = outcomes.filter((o) => o.errorTag === "JournalUnavailable")
    const audited = outcomes.filter((o) => o.errorTag !== "JournalUnavailable")
    const audit = await auditOutcomes(db.query, audited)
    const refusedStreams = (await auditOutcomes(db.query, refused)).problems.filter((p) => !p.includes("0 run streams"))
    const all = await auditAllRuns(db.query)
    const j = await healthJournal(gw.url)
    const problems = [...audit.problems, ...refusedStreams, ...all.problems]
    if (!unavailableSeen) problems.push("/awooop/health did not say journal: UNAVAILABLE")
    if (!metricsSaid) problems.push("/metrics did not say awooop_journal_unavailable 1")
    if (refusals[0]?.errorTag !== "JournalUnavailable" || (refusals[0]?.ms ?? 1e9) > 3_000) {
      problems.push(`a request while unavailable: ${refusals[0]?.status} ${refusals[0]?.errorTag} after ${refusals[0]?.ms.toFixed(0)} ms (expected a fast 503 JournalUnavailable)`)
    }
    if (refused.length === 0) problems.push("no request was refused: the spill never filled")
    if (!/Journal: UNAVAILABLE/.test(gw.output())) problems.push("no ERROR log saying the journal is unavailable")
    // No loss is expected here (the gate refuses new runs, so the queue never fills); any would be counted and logged.
    if ((j.lost?.dropped ?? 0) + (j.lost?.torn ?? 0) > 0 && !/DROPPED|LOST/.test(gw.output())) problems.push(`lost ${JSON.stringify(j.lost)} without an ERROR`)
    const consistent = new Set([...audit.consistent, ...refused.map((o) => o.traceId)])
    const allowed = (o: Outcome) => o.kind === "answer" || (o.kind === "error" && o.status === 503 && o.errorTag === "JournalUnavailable")
    const { wrong, answers, errors } = classify(outcomes, allowed, consistent)
    expectRow(rowOf(`spill disk full (64 KiB tmpfs) with Postgres stopped; lost ${JSON.stringify(j.lost ?? {})}, recovered ${after0.written - before.written} events`, t0,
      { requests: outcomes.length, answers, errors, wrong }, { before, after }, problems))
  }

  describe("one gateway, production journal settings", () => {
    let gw: Child
    beforeAll(async () => {
      gw = await start()
    }, 120_000)

    it("black-holed Postgres: spilling and health degraded within the write timeout, async submissions 503 in bounded time", async () => {
      const t0 = Date.now()
      const before = await snapshot(gw.url)
      const refusedPrompt = `refused-in-black-hole-${crypto.randomUUID()}`
      db.proxy.blackhole()
      const holeAt = Date.now()
      let noticedMs = Number.NaN
      let submission: Awaited<ReturnType<typeof submit>> | null = null
      const [traffic] = await Promise.all([
        drive(gw.url, calls, 60, 4, { timeoutMs: 20_000 }),
        (async () => {
          submission = await submit(gw.url, refusedPrompt)
        })(),
        (async () => {
          await waitFor("the journal to say degraded with events spilled", async () => {
            const j = await healthJournal(gw.url)
            return j.status === "degraded" && j.spilled > 0
          }, 60_000, 100)
          noticedMs = Date.now() - holeAt
        })()
      ])
      const asyncUnsafe = !(await asyncLaneSafe(gw.url))
      db.proxy.heal()
      const after = await snapshot(gw.url)
      // The refused submission's row (its INSERT may have committed late) is reconciled away; it never runs.
      await noOpenAsyncRows()
      const audit = await auditOutcomes(db.query, traffic)
      const all = await auditAllRuns(db.query)
      const problems = [...audit.problems, ...all.problems]
      // The write timeout is 5 s; noticing it takes one write attempt, not that plus a 5 s cancel.
      if (!(noticedMs <= 5_000 + 2_500)) problems.push(`degraded only after ${noticedMs} ms (write timeout 5 s)`)
      const s = submission as Awaited<ReturnType<typeof submit>> | null
      if (s === null || s.status !== 503 || s.ms > 5_000 + 2_500) problems.push(`async submission in the black hole: ${s?.status} after ${s?.ms.toFixed(0)} ms (expected 503 within the store timeout)`)
      if (!asyncUnsafe) problems.push("deep-rca was safe in /awooop/health while Postgres was black-holed")
      if (promptsAtRca().includes(refusedPrompt)) problems.push("the refused async submission ran")
      const { wrong, answers, errors } = classify(traffic, (o) => o.kind === "answer", audit.consistent)
      expectRow(rowOf(`Postgres black-holed (degraded after ${(noticedMs / 1000).toFixed(1)} s; async 503 after ${((s?.ms ?? 0) / 1000).toFixed(1)} s)`, t0,
        { requests: traffic.length + 1, answers, errors: errors + (s?.status === 503 ? 1 : 0), wrong }, { before, after }, problems))
    }, 240_000)

    it("async run finishing during an outage: its answer is served after recovery", async () => {
      const t0 = Date.now()
      const before = await snapshot(gw.url)
      fakes["rca"]!.setMode("slow", { delayMs: 3_000 })
      const accepted = await submit(gw.url, `outage-${crypto.randomUUID()}`)
      const problems: Array<string> = []
      if (accepted.status !== 202 || accepted.runId === null) throw new Error(`not accepted: ${JSON.stringify(accepted)}`)
      await waitFor("the run to reach its host", () => fakes["rca"]!.inFlight() === 1, 30_000)
      await db.proxy.stop()
      await waitFor("the run to finish at its host", () => fakes["rca"]!.inFlight() === 0, 30_000)
      await waitFor("the async lane to be unsafe", async () => !(await asyncLaneSafe(gw.url)), 30_000)
      await sleep(1_000) // the run's end is being attempted while Postgres is away
      await db.proxy.start()
      fakes["rca"]!.setMode("ok", { delayMs: 50 })
      let view: Awaited<ReturnType<typeof runView>> = null
      await waitFor("the run to be served as succeeded with its result", async () => {
        view = await runView(gw.url, accepted.runId!)
        return view?.status === "succeeded" && view.result !== null
      }, 60_000, 250).catch((e: Error) => problems.push(`${e.message}; last view ${JSON.stringify(view)}`))
      const after = await snapshot(gw.url)
      const stream = await streamOf(accepted.runId)
      problems.push(...checkStream(`run-${accepted.runId}`, stream))
      if (stream.at(-1)?.type !== "RunCompleted") problems.push(`the run ends with ${stream.at(-1)?.type}`)
      const [row] = await db.query<{ result: unknown; finished: boolean }>(`SELECT result, finished_at IS NOT NULL AS finished FROM async_runs WHERE run_id = $1`, [accepted.runId])
      if (row?.result === null || row?.finished !== true) problems.push(`async_runs: ${JSON.stringify(row)}`)
      expectRow(rowOf("async run finishing while Postgres is stopped", t0,
        { requests: 1, answers: problems.length === 0 ? 1 : 0, errors: 0, wrong: [] }, { before, after }, problems))
    }, 240_000)

    it("Postgres crash with async runs: each accepted run ends once, no refused one runs", async () => {
      const t0 = Date.now()
      const before = await snapshot(gw.url)
      fakes["rca"]!.setMode("slow", { delayMs: 400 })
      const submissions: Array<Awaited<ReturnType<typeof submit>>> = []
      let crashed = false
      await Promise.all([
        (async () => {
          for (let i = 0; Date.now() - t0 < 14_000 || !crashed; i++) {
            const batch = await Promise.all([0, 1].map((k) => submit(gw.url, `crash-${i}-${k}-${crypto.randomUUID()}`)))
            submissions.push(...batch)
            await sleep(150)
          }
        })(),
        (async () => {
          await sleep(2_500)
          await db.proxy.stop() // an immediate stop: every connection cut, new ones refused
          await sleep(6_000)
          await db.proxy.start()
          crashed = true
        })()
      ])
      const accepted = submissions.filter((s) => s.status === 202 && s.runId !== null)
      const refused = submissions.filter((s) => s.status !== 202)
      const problems: Array<string> = []
      const views = new Map<string, string>()
      await waitFor("every accepted run to finish", async () => {
        for (const s of accepted) {
          if (views.get(s.runId!) === "succeeded") continue
          const v = await runView(gw.url, s.runId!)
          if (v !== null) views.set(s.runId!, v.status)
        }
        return accepted.every((s) => ["succeeded", "failed", "cancelled"].includes(views.get(s.runId!) ?? ""))
      }, 120_000, 500).catch((e: Error) => problems.push(e.message))
      await noOpenAsyncRows().catch((e: Error) => problems.push(e.message))
      fakes["rca"]!.setMode("ok", { delayMs: 50 })
      const after = await snapshot(gw.url)
      const asked = promptsAtRca()
      for (const s of accepted) {
        const stream = await streamOf(s.runId!)
        problems.push(...checkStream(`run-${s.runId}`, stream))
        if (views.get(s.runId!) !== "succeeded") problems.push(`accepted run ${s.runId}: ${views.get(s.runId!)}`)
        const times = asked.filter((p) => p === s.prompt).length
        if (times !== 1) problems.push(`accepted run ${s.runId} ran ${times} times`)
      }
      for (const s of refused) {
        if (s.status !== 503) problems.push(`a submission got ${s.status}: ${s.error}`)
        if (asked.includes(s.prompt)) problems.push(`a refused submission (${s.status}) ran: ${s.prompt}`)
      }
      if (refused.length === 0) problems.push("no submission was refused: the crash missed the traffic")
      const all = await auditAllRuns(db.query)
      problems.push(...all.problems)
      expectRow(rowOf(`Postgres crash (stopped 6 s) with async runs: ${accepted.length} accepted, ${refused.length} refused`, t0,
        { requests: submissions.length, answers: accepted.length, errors: refused.length, wrong: [] }, { before, after }, problems))
    }, 300_000)

    afterAll(async () => {
      if (children.includes(gw)) await stop(gw)
    })
  })

  it("SIGKILL mid-traffic (durableRunEnd): every run stream ends after the restart; every whole answer has its RunCompleted", async () => {
    const t0 = Date.now()
    const durable = { AWOOOP_CONFIG: path.join(dir, "durable-end.yaml") }
    let gw = await start(durable)
    const before = await snapshot(gw.url)
    for (const name of ["gcp-a", "gcp-b"]) fakes[name]!.setMode("drip", { delayMs: 250, chunks: 8 })
    const outcomes: Array<Outcome> = []
    let killed = false
    const traffic = Promise.all(Array.from({ length: 6 }, async (_, w) => {
      for (let i = 0; !killed && i < 30; i++) outcomes.push(await send(gw.url, calls[(w + i) % calls.length]!, { chunks: 8, timeoutMs: 30_000 }))
    }))
    const answered = () => outcomes.filter((o) => o.kind === "answer").length
    await waitFor("some answers done and runs in flight", () =>
      answered() >= 8 && fakes["gcp-a"]!.inFlight() + fakes["gcp-b"]!.inFlight() >= 3, 90_000)
    gw.process.kill("SIGKILL")
    killed = true
    await exited(gw.process)
    children.splice(children.indexOf(gw), 1)
    await traffic
    const afterKill = await countEvents(db.query)
    for (const name of ["gcp-a", "gcp-b"]) fakes[name]!.setMode("ok", { delayMs: 50, chunks: 3 })
    gw = await start(durable)
    const after = await snapshot(gw.url)
    // A caller cut off by the kill whose run never reached Postgres (its RunStarted was still in the
    // killed process's queue: the default window, README "Reliability") has no stream; every other
    // run is audited whole, and every whole answer must have its RunCompleted (durableRunEnd).
    const streams = new Set((await db.query<{ t: string }>(`SELECT DISTINCT trace_id AS t FROM step_journal WHERE trace_id = ANY($1::text[])`, [outcomes.map((o) => o.traceId)])).map((r) => r.t))
    const unjournaled = outcomes.filter((o) => o.kind === "transport" && !streams.has(o.traceId))
    const audit = await auditOutcomes(db.query, outcomes.filter((o) => !unjournaled.includes(o)))
    for (const o of unjournaled) audit.consistent.add(o.traceId)
    const all = await auditAllRuns(db.query)
    const problems = [...audit.problems, ...all.problems]
    const orphans = (await db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM step_journal WHERE type = 'RunFailed' AND data->>'orphaned' = 'true' AND trace_id = ANY($1::text[])`,
      [outcomes.map((o) => o.traceId)]
    ))[0]!.n
    if (orphans === 0) problems.push("no run was orphaned: the kill missed the traffic")
    const { wrong, answers, errors } = classify(outcomes, (o) => o.kind === "answer" || o.kind === "transport", audit.consistent)
    // The killed process's queue is gone with it (SIGKILL: what it had committed is what it wrote);
    // the new process must lose nothing, its orphan endings included.
    expectRow(rowOf(`gateway SIGKILL mid-traffic, durableRunEnd (${orphans} orphaned runs ended at restart, ${unjournaled.length} cut off before their RunStarted was written)`, t0,
      { requests: outcomes.length, answers, errors, wrong }, { before, after, expected: (afterKill - before.found) + after.written }, problems))
  }, 240_000)
})
