/**
 * The audit, end to end (issue 3): a real gateway on fake Ollama hosts plays the incident —
 * alert-fast, gcp-a times out twice, its breaker opens, gcp-b answers — then `explain` must tell
 * that story step by step, `verify` must pass and then catch a tampered decision and a tampered
 * projection, `what-if` must say where another config would have sent the requests, the read API
 * must serve runs, traces and cost (400 on bad parameters), and archiving must change none of it.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, layer } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { loadConfigFile } from "../src/config/GatewayConfig.ts"
import { checkRunEnds } from "../src/journal/RunEnds.ts"
import { catchUpFully, liveSchema } from "../src/projections/Projector.ts"
import { rebuildLive, verifyProjections } from "../src/projections/Rebuild.ts"
import { archive } from "../src/replay/Archive.ts"
import { ExitCode, parseArgs, run as cli } from "../src/replay/cli.ts"
import { verifyDecisions } from "../src/replay/Decisions.ts"
import { explain, renderText, toJson } from "../src/replay/Explain.ts"
import { renderText as whatIfText, whatIf } from "../src/replay/WhatIf.ts"
import { type GatewayServices, newTraceId, type TestGateway, TestGatewayTag } from "./support/TestGateway.ts"

const traceId = newTraceId()
const headers = {
  "x-awooop-lane": "alert-fast",
  "x-awooop-project-id": "awoooi",
  "x-awooop-trace-id": traceId,
  "x-awooop-intent": "DIAGNOSE"
}

/** Runs `f` with the gateway's own services (its database, journal, ...). */
const withGateway = <A, E>(f: (gw: TestGateway) => Effect.Effect<A, E, GatewayServices>) =>
  Effect.flatMap(TestGatewayTag, (gw) => Effect.provide(f(gw), gw.context))

/** Asserts that `needles` occur in `text` in this order. */
const inOrder = (text: string, needles: ReadonlyArray<string>) => {
  let from = 0
  for (const needle of needles) {
    const at = text.indexOf(needle, from)
    assert.isAtLeast(at, 0, `expected ${JSON.stringify(needle)} after position ${from} in:\n${text}`)
    from = at + needle.length
  }
}

const live = { schema: liveSchema, source: "journal" as const, batchSize: 1000 }

/** Runs the CLI command with its output silenced; returns the exit code. */
const cliQuiet = (argv: ReadonlyArray<string>) =>
  Effect.acquireUseRelease(
    Effect.sync(() => {
      const saved = { log: console.log, error: console.error }
      console.log = () => {}
      console.error = () => {}
      return saved
    }),
    () => cli(parseArgs(argv)),
    (saved) => Effect.sync(() => Object.assign(console, saved))
  )

layer(
  TestGatewayTag.layer({
    hosts: { "gcp-a": { slots: 4, protected: true, fake: { mode: "hang" } } },
    breaker: { consecutiveTimeouts: 2, cooldown: "60s" },
    projections: { intervalMs: 50 }
  }),
  { excludeTestServices: true }
)("audit of the alert-fast incident", (it) => {
  it.effect("the gateway plays the incident; the projector (its own loop) projects the three runs", () =>
    Effect.gen(function*() {
      const gw = yield* TestGatewayTag
      for (let i = 0; i < 3; i++) {
        const answer = yield* Effect.promise(() =>
          gw.ollama(headers).generate({ model: "gemma3:4b", prompt: "why is the alert firing?", stream: false })
        )
        assert.include(answer.response, "[gcp-b]")
      }
      yield* Effect.promise(() => gw.runEvents(traceId))
      // No explicit catch-up: the gateway's projector fiber must get there by itself.
      let rows: ReadonlyArray<{ status: string; endpoint: string }> = []
      const done = () => rows.filter((r) => r.status === "completed").length === 3
      for (let i = 0; i < 200 && !done(); i++) {
        rows = yield* Effect.promise(() =>
          gw.query<{ status: string; endpoint: string }>(`SELECT status, endpoint FROM run_state WHERE trace_id = $1 ORDER BY started_at`, [traceId])
        )
        if (!done()) yield* Effect.sleep("50 millis")
      }
      assert.deepStrictEqual(rows.map((r) => [r.status, r.endpoint]), [["completed", "gcp-b"], ["completed", "gcp-b"], ["completed", "gcp-b"]])
    }), 30_000)

  it.effect("explain names each step: timeouts, the breaker opening, the skip, the answer, the reasons", () =>
    withGateway(() => Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const x = yield* explain(sql, traceId)
      const text = renderText(x)
      assert.strictEqual(x.runs.length, 3)
      inOrder(text, [
        `trace ${traceId}: 3 runs`,
        "run 1 of 3",
        "request: generate on lane alert-fast, model gemma3:4b requested, gemma3:4b assigned, intent DIAGNOSE, project awoooi",
        "route decided: try gcp-a (0.30s) → gcp-b (0.30s) → 111 (0.30s)",
        "attempt 1: gcp-a (timeout 0.30s",
        "attempt 1 on gcp-a failed: timed out after 0.",
        "attempt 2: gcp-b",
        "gcp-b answered in",
        "completed by gcp-b (ollama)",
        "run 2 of 3",
        "attempt 1: gcp-a",
        // The breaker opens on the timeout itself, before the lane journals the failed attempt.
        "[host gcp-a] circuit breaker OPENED after 2 consecutive timeouts",
        "attempt 1 on gcp-a failed: timed out after 0.",
        "attempt 2: gcp-b",
        "completed by gcp-b (ollama)",
        "run 3 of 3",
        "gcp-a skipped: circuit open since ",
        "(after 2 consecutive timeouts), until ",
        "attempt 1: gcp-b",
        "completed by gcp-b (ollama)"
      ])
      const [r1, r2, r3] = x.runs.map((r) => r.run)
      assert.match(r1!.fallbackReason ?? "", /^gcp-a timeout after 0\.\ds$/)
      assert.match(r2!.fallbackReason ?? "", /^gcp-a timeout after 0\.\ds$/)
      assert.strictEqual(r3!.fallbackReason, "gcp-a circuit open")
      assert.deepStrictEqual(x.runs.map((r) => r.run.attempts), [2, 2, 1])
      assert.include(x.runs[0]!.summary, "fallback because: gcp-a timeout after")
      // The breaker belongs to run 2 (it opened on run 2's timeout), not to run 1.
      assert.notInclude(x.runs[0]!.steps.map((s) => s.text).join("\n"), "OPENED")

      // By run id: the same trace, the run marked; --json carries the same steps.
      const byRun = yield* explain(sql, r2!.runId)
      assert.strictEqual(byRun.traceId, traceId)
      assert.include(renderText(byRun), `${r2!.runId} · lane alert-fast`)
      assert.include(renderText(byRun), "← the run asked about")
      const json = toJson(byRun)
      assert.deepStrictEqual(json.runs[2]!.steps.map((s) => s.type), ["RunStarted", "RouteDecided", "AttemptStarted", "AttemptSucceeded", "RunCompleted"])
      assert.deepStrictEqual(json.runs[1]!.steps.filter((s) => s.host === "gcp-a").map((s) => s.type), ["BreakerOpened"])
      assert.strictEqual(yield* cliQuiet(["explain", traceId, "--json"]), ExitCode.ok)
      assert.strictEqual(yield* cliQuiet(["explain", "0123456789abcdef0123456789abcdef"]), ExitCode.notFound)
    })), 30_000)

  it.effect("the read API: a run, a trace, cost by lane; 400 on bad parameters", () =>
    Effect.gen(function*() {
      const gw = yield* TestGatewayTag
      const get = (p: string) => Effect.promise(async () => {
        const res = await fetch(gw.url + p)
        return { status: res.status, body: await res.json() as Record<string, any> }
      })
      const trace = yield* get(`/awooop/traces/${traceId}`)
      assert.strictEqual(trace.status, 200)
      assert.strictEqual(trace.body.runs.length, 3)
      const positions = trace.body.events.map((e: { globalPosition: number }) => e.globalPosition)
      assert.deepStrictEqual(positions, [...positions].sort((a: number, b: number) => a - b))
      assert.strictEqual(trace.body.events[0].type, "RunStarted")

      const runId = trace.body.runs[0].runId as string
      const run = yield* get(`/awooop/runs/${runId}`)
      assert.strictEqual(run.status, 200)
      assert.deepStrictEqual(
        [run.body.status, run.body.endpoint, run.body.providerTier, run.body.lane, run.body.projectId, run.body.intent, run.body.projected],
        ["completed", "gcp-b", "ollama", "alert-fast", "awoooi", "DIAGNOSE", true]
      )
      assert.match(run.body.fallbackReason, /^gcp-a timeout after/)
      assert.strictEqual((yield* get(`/awooop/runs/run-${runId}`)).body.runId, runId)

      const today = new Date().toISOString().slice(0, 10)
      const cost = yield* get(`/awooop/cost?from=${today}&to=${today}&groupBy=lane`)
      assert.strictEqual(cost.status, 200)
      assert.deepStrictEqual(cost.body.rows.map((r: Record<string, unknown>) => [r.lane, r.requests, r.failed, r.costUsd]), [["alert-fast", 3, 0, 0]])
      assert.strictEqual(cost.body.total.requests, 3)
      const byProvider = yield* get(`/awooop/cost?groupBy=provider`)
      assert.deepStrictEqual(byProvider.body.rows.map((r: Record<string, unknown>) => r.provider), ["ollama"])

      for (const [p, fragment] of [
        ["/awooop/cost?groupBy=color", "groupBy must be project, lane or provider"],
        ["/awooop/cost?from=2026-02-30", "from must be a date"],
        ["/awooop/cost?from=2026-05-06&to=2026-05-05", "is after to"],
        ["/awooop/cost?group_by=lane", "unknown parameter \"group_by\""],
        ["/awooop/cost?to=yesterday", "to must be a date"],
        ["/awooop/runs/not-a-uuid", "run id must be a UUID"],
        ["/awooop/traces/bad%20trace", "trace id must be"]
      ] as const) {
        const res = yield* get(p)
        assert.strictEqual(res.status, 400, p)
        assert.include(res.body.error, fragment, p)
      }
      const missing = yield* get(`/awooop/runs/00000000-0000-4000-8000-000000000000`)
      assert.strictEqual(missing.status, 404)
      assert.include(missing.body.error, "not found")
    }), 30_000)

  it.effect("verify passes, then reports a tampered decision (exit 1) and a tampered projection (exit 2); rebuild repairs the projection", () =>
    withGateway(() => Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* catchUpFully(sql, live)
      const clean = yield* verifyDecisions(sql)
      assert.deepStrictEqual([clean.checked, clean.mismatches], [3, 0])
      assert.isTrue((yield* verifyProjections(sql)).ok)
      assert.strictEqual(yield* cliQuiet(["verify"]), ExitCode.ok)

      // Someone rewrites history: run 2's decision now claims 111 was tried first.
      const [decision] = yield* sql<{ gp: number; streamId: string; data: unknown }>`
        SELECT global_position::float8 AS gp, stream_id AS "streamId", data FROM step_journal
        WHERE type = 'RouteDecided' AND trace_id = ${traceId} ORDER BY global_position OFFSET 1 LIMIT 1`
      yield* sql`UPDATE step_journal SET data = jsonb_set(data, '{plan,attempts,0,host}', '"111"') WHERE global_position = ${decision!.gp}`
      const tampered = yield* verifyDecisions(sql)
      assert.strictEqual(tampered.mismatches, 1)
      assert.strictEqual(tampered.reported[0]!.streamId, decision!.streamId)
      assert.strictEqual(tampered.reported[0]!.replayed?.attempts[0]?.host, "gcp-a")
      assert.strictEqual(yield* cliQuiet(["verify"]), ExitCode.decisionsDiffer)

      // And a projection row is edited by hand.
      yield* sql`UPDATE run_state SET cost_usd = 42 WHERE stream_id = ${decision!.streamId}`
      const projections = yield* verifyProjections(sql)
      assert.isFalse(projections.ok)
      const runState = projections.diffs.find((d) => d.table === "run_state")!
      assert.deepStrictEqual([runState.onlyLive, runState.onlyRebuilt, runState.samples], [1, 1, [decision!.streamId]])
      assert.strictEqual(yield* cliQuiet(["verify"]), ExitCode.decisionsDiffer | ExitCode.projectionsDiffer)

      // rebuild puts the projection back (the projector keeps running meanwhile); the decision stays tampered.
      yield* rebuildLive(sql, { batchSize: 7 })
      assert.isTrue((yield* verifyProjections(sql)).ok)
      assert.strictEqual(yield* cliQuiet(["verify"]), ExitCode.decisionsDiffer)
      yield* sql`UPDATE step_journal SET data = ${JSON.stringify(decision!.data)}::jsonb WHERE global_position = ${decision!.gp}`
      assert.strictEqual(yield* cliQuiet(["verify"]), ExitCode.ok)    })), 60_000)

  it.effect("what-if: the same decisions under a config that sends alert-fast to 111 first", () =>
    withGateway((gw) => Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "awooop-whatif-"))
      const file = path.join(dir, "other.yaml")
      const hosts = Object.entries(gw.config.hosts).map(([n, h]) => `  "${n}": { url: "${h.url}", slots: ${h.slots}, protected: ${h.protected} }`)
      fs.writeFileSync(file, [
        "hosts:",
        ...hosts,
        "lanes:",
        "  alert-fast:",
        "    model: gemma3:4b",
        "    route: [ { host: \"111\", timeout: 60s }, { host: gcp-b, timeout: 45s } ]",
        ""
      ].join("\n"))
      const config = yield* loadConfigFile(file)
      const report = yield* whatIf(sql, config)
      const lane = report.lanes.find((l) => l.lane === "alert-fast")!
      assert.deepStrictEqual(lane.firstHostChanged, { "gcp-a → 111": 2, "gcp-b → 111": 1 })
      assert.deepStrictEqual(lane.answeredBy, { "gcp-b": 3 })
      const text = whatIfText(report, "other.yaml")
      assert.include(text, "alert-fast: 2 requests of 3 would have gone to 111 first (was gcp-a)")
      assert.include(text, "alert-fast: 1 request of 3 would have gone to 111 first (was gcp-b)")
      assert.include(text, "(those were answered at the time by gcp-b 3)")
      assert.strictEqual(yield* cliQuiet(["what-if", "--config", file]), ExitCode.ok)
      assert.strictEqual(yield* cliQuiet(["what-if"]), ExitCode.usage)
      fs.rmSync(dir, { recursive: true, force: true })
    })), 30_000)

  it.effect("archive moves old events out; explain, verify and the projections stay the same", () =>
    withGateway(() => Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* catchUpFully(sql, live)
      const before = renderText(yield* explain(sql, traceId))
      const [{ events, streams }] = yield* sql<{ events: number; streams: number }>`
        SELECT count(*)::int AS events, count(DISTINCT stream_id)::int AS streams FROM step_journal`
      const result = yield* archive(sql, new Date(Date.now() + 60_000))
      assert.deepStrictEqual([result.moved, result.kept], [events! - streams!, streams!])
      const [{ left }] = yield* sql<{ left: number }>`SELECT count(*)::int AS left FROM step_journal`
      assert.strictEqual(left, streams)
      assert.strictEqual(renderText(yield* explain(sql, traceId)), before)
      assert.isTrue((yield* verifyProjections(sql)).ok)
      assert.strictEqual((yield* verifyDecisions(sql)).checked, 3)
    })), 30_000)

  // Last: it leaves broken run streams in the shared database on purpose.
  it.effect("verify reports run streams without exactly one terminal event (exit 8)", () =>
    withGateway(() => Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* catchUpFully(sql, live)
      assert.strictEqual(yield* cliQuiet(["verify"]), ExitCode.ok)

      // A run stream left without its end, and one that ended twice: the run invariant (RunEnds.ts).
      const open = `run-${crypto.randomUUID()}`
      const twice = `run-${crypto.randomUUID()}`
      yield* sql`INSERT INTO step_journal (stream_id, stream_position, trace_id, lane, type, data, occurred_at) VALUES
        (${open}, 0, ${traceId}, 'alert-fast', 'RunStarted', '{}'::jsonb, now()),
        (${open}, 1, ${traceId}, 'alert-fast', 'HostSkipped', '{}'::jsonb, now()),
        (${twice}, 0, ${traceId}, 'alert-fast', 'RunStarted', '{}'::jsonb, now()),
        (${twice}, 1, ${traceId}, 'alert-fast', 'RunFailed', '{"status":500}'::jsonb, now()),
        (${twice}, 2, ${traceId}, 'alert-fast', 'RunCompleted', '{}'::jsonb, now())`
      yield* catchUpFully(sql, live)
      const ends = yield* checkRunEnds(sql)
      assert.deepStrictEqual([ends.open, ends.multiple], [1, 1])
      assert.deepStrictEqual(ends.violations.map((v) => [v.streamId, v.terminals, v.lastType]).sort(), [[open, 0, "HostSkipped"], [twice, 2, "RunCompleted"]].sort())
      assert.strictEqual(yield* cliQuiet(["verify"]), ExitCode.runEndsBroken)
    })), 60_000)
})
