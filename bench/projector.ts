/**
 * Projections (issue 3): projector catch-up and rebuild throughput over ≥ 1 000 000 journal events,
 * and `explain` latency for one trace on that journal.
 *
 * A scratch database on the local PostgreSQL gets a synthetic journal shaped like the gateway's
 * (routing/Lane.ts, routing/Host.ts): alert-fast and code-review runs — 80 % answered by the first
 * host (5 events), 15 % falling back after a timeout (7 events), 5 % failing (7 events) — with the
 * full RouteDecided input (hosts' views), 64 runs in flight at a time, written by generate_series
 * in 100 000-row transactions; plus host streams (health, residency, breaker transitions).
 *
 *   tsx bench/projector.ts                 (BENCH_EVENTS=1000000, BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres)
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Logger, LogLevel } from "effect"
import * as os from "node:os"
import pg from "pg"
import { catchUpFully, liveSchema } from "../src/projections/Projector.ts"
import { dropScratch, rebuildInto } from "../src/projections/Rebuild.ts"
import { verifyDecisions } from "../src/replay/Decisions.ts"
import { explain, renderText } from "../src/replay/Explain.ts"
import { layerFromUrl } from "../src/storage/Database.ts"
import { runMigrations } from "../src/storage/Migrations.ts"
import { createScratchDatabase, dropped } from "./Processes.ts"

const adminUrl = process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"

/** The RouteDecided input as the lane journals it: three hosts' views, the route, the policy. */
const routeDecided = (attempts: string) => `jsonb_build_object(
  'input', jsonb_build_object(
    'lane', lane, 'model', 'gemma3:4b', 'now', (extract(epoch FROM t0) * 1000)::bigint,
    'route', '[{"host":"gcp-a","timeoutMs":45000,"when":"always"},{"host":"gcp-b","timeoutMs":45000,"when":"always"},{"host":"111","timeoutMs":60000,"when":"always"}]'::jsonb,
    'policy', '{"heavyModelMinParamsB":14}'::jsonb,
    'hosts', jsonb_build_object(
      'gcp-a', '{"protected":true,"health":"up","breaker":{"status":"closed","reopensAt":null,"probeInFlight":false},"maintenance":{"open":false,"until":null},"installed":[{"name":"gemma3:4b","parameterSize":"4.3B"}],"slots":{"total":4,"inUse":1,"freeForLane":3}}'::jsonb,
      'gcp-b', '{"protected":true,"health":"up","breaker":{"status":"closed","reopensAt":null,"probeInFlight":false},"maintenance":{"open":false,"until":null},"installed":[{"name":"gemma3:4b","parameterSize":"4.3B"}],"slots":{"total":4,"inUse":0,"freeForLane":4}}'::jsonb,
      '111', '{"protected":false,"health":"up","breaker":{"status":"closed","reopensAt":null,"probeInFlight":false},"maintenance":{"open":false,"until":null},"installed":[{"name":"gemma3:4b","parameterSize":"4.3B"}],"slots":{"total":2,"inUse":0,"freeForLane":2}}'::jsonb)),
  'plan', '{"attempts":${attempts},"skipped":[]}'::jsonb)`

const plannedAll = `[{"host":"gcp-a","timeoutMs":45000,"conditional":false},{"host":"gcp-b","timeoutMs":45000,"conditional":false},{"host":"111","timeoutMs":60000,"conditional":false}]`

/**
 * Runs [from, to): kind A (r % 20 < 16) first host answers; B (16..18) gcp-a times out, gcp-b
 * answers; C (19) both time out, the run fails. Events of 64 consecutive runs interleave.
 */
const insertRuns = (from: number, to: number) => `
  WITH runs AS (
    SELECT r,
      CASE WHEN r % 20 < 16 THEN 'A' WHEN r % 20 < 19 THEN 'B' ELSE 'C' END AS kind,
      ('run-' || md5(r::text)::uuid) AS stream,
      md5('trace' || (r / 2)::text) AS trace,
      CASE WHEN r % 3 = 0 THEN 'code-review' ELSE 'alert-fast' END AS lane,
      (ARRAY['awoooi', 'billing', 'search'])[1 + r % 3] AS project,
      timestamptz '2026-05-01 00:00:00Z' + make_interval(secs => r * 2.0) AS t0
    FROM generate_series(${from}, ${to - 1}) AS r
  ), steps(kind, pos, type, host, ms) AS (VALUES
    ('A', 0, 'RunStarted', NULL, 0), ('A', 1, 'RouteDecided', NULL, 1), ('A', 2, 'AttemptStarted', 'gcp-a', 1),
    ('A', 3, 'AttemptSucceeded', 'gcp-a', 900), ('A', 4, 'RunCompleted', 'gcp-a', 900),
    ('B', 0, 'RunStarted', NULL, 0), ('B', 1, 'RouteDecided', NULL, 1), ('B', 2, 'AttemptStarted', 'gcp-a', 1),
    ('B', 3, 'AttemptFailed', 'gcp-a', 45001), ('B', 4, 'AttemptStarted', 'gcp-b', 45001),
    ('B', 5, 'AttemptSucceeded', 'gcp-b', 46200), ('B', 6, 'RunCompleted', 'gcp-b', 46200),
    ('C', 0, 'RunStarted', NULL, 0), ('C', 1, 'RouteDecided', NULL, 1), ('C', 2, 'AttemptStarted', 'gcp-a', 1),
    ('C', 3, 'AttemptFailed', 'gcp-a', 45001), ('C', 4, 'AttemptStarted', 'gcp-b', 45001),
    ('C', 5, 'AttemptFailed', 'gcp-b', 90001), ('C', 6, 'RunFailed', NULL, 90001)
  )
  INSERT INTO step_journal (stream_id, stream_position, trace_id, project_id, lane, type, data, occurred_at)
  SELECT stream, pos, trace, project, lane, type,
    CASE type
      WHEN 'RunStarted' THEN jsonb_build_object('runId', substr(stream, 5), 'operation', 'generate', 'stream', r % 2 = 0,
        'requestedModel', 'gemma3:4b', 'assignedModel', 'gemma3:4b', 'intent', 'DIAGNOSE', 'legacy', false)
      WHEN 'RouteDecided' THEN ${routeDecided(plannedAll)}
      WHEN 'AttemptStarted' THEN jsonb_build_object('attempt', CASE WHEN host = 'gcp-a' THEN 1 ELSE 2 END, 'host', host,
        'timeoutMs', 45000, 'slotPool', 'reserved')
      WHEN 'AttemptFailed' THEN jsonb_build_object('attempt', CASE WHEN host = 'gcp-a' THEN 1 ELSE 2 END, 'host', host,
        'kind', 'timeout', 'status', NULL, 'message', 'no answer within 45s', 'durationMs', 45000, 'afterFirstChunk', false)
      WHEN 'AttemptSucceeded' THEN jsonb_build_object('host', host, 'durationMs', 899 + r % 300, 'firstChunkMs', NULL)
      WHEN 'RunCompleted' THEN jsonb_build_object('endpoint', host, 'providerTier', 'ollama', 'inputTokens', 20 + r % 500,
        'outputTokens', 50 + r % 900, 'doneReason', 'stop', 'costUsd', 0, 'durationMs', ms)
      ELSE jsonb_build_object('status', 504, 'error', 'AllAttemptsTimedOut',
        'message', 'lane alert-fast: every attempt timed out', 'durationMs', ms)
    END,
    t0 + make_interval(secs => ms / 1000.0)
  FROM runs JOIN steps USING (kind)
  ORDER BY r / 64, pos, r`

/** Host streams: `count` events per host, cycling through health, residency and breaker changes. */
const insertHosts = (count: number) => `
  INSERT INTO step_journal (stream_id, stream_position, trace_id, project_id, lane, type, data, occurred_at)
  SELECT 'host-' || h, i, NULL, NULL, NULL, t.type,
    CASE t.type
      WHEN 'BreakerOpened' THEN jsonb_build_object('host', h, 'consecutiveTimeouts', 2, 'reason', '2 consecutive timeouts',
        'at', (extract(epoch FROM at) * 1000)::bigint, 'until', (extract(epoch FROM at) * 1000)::bigint + 30000)
      WHEN 'ResidencyChanged' THEN jsonb_build_object('host', h, 'resident', '["gemma3:4b"]'::jsonb, 'loaded', '["gemma3:4b"]'::jsonb, 'evicted', '[]'::jsonb)
      ELSE jsonb_build_object('host', h)
    END,
    at
  FROM unnest(ARRAY['gcp-a', 'gcp-b', '111']) AS h, generate_series(0, ${count - 1}) AS i,
    LATERAL (SELECT (ARRAY['HostUp', 'ResidencyChanged', 'BreakerOpened', 'BreakerHalfOpened', 'BreakerClosed', 'HostDown'])[1 + i % 6] AS type,
      timestamptz '2026-05-01 00:00:00Z' + make_interval(secs => i * 37.0) AS at) t`

const ms = (t0: number) => performance.now() - t0

const percentile = (sorted: ReadonlyArray<number>, p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!

export const benchProjector = async (): Promise<string> => {
  const target = Number(process.env.BENCH_EVENTS ?? 1_000_000)
  const dbName = `awooop_bench_proj_${Date.now()}`
  const admin = new pg.Client({ connectionString: adminUrl })
  await admin.connect()
  await createScratchDatabase(admin, adminUrl, dbName)
  const dbUrl = adminUrl.replace(/\/[^/]*$/, `/${dbName}`)
  try {
    const db = new pg.Client({ connectionString: dbUrl })
    await db.connect()
    const Db = layerFromUrl(dbUrl, { maxConnections: 4, applicationName: "awooop-bench" })
    const run = <A, E>(effect: Effect.Effect<A, E, SqlClient.SqlClient>) =>
      Effect.runPromise(effect.pipe(Effect.provide(Db), Logger.withMinimumLogLevel(LogLevel.Warning)))
    await run(runMigrations)

    // --- load ----------------------------------------------------------------------------------
    // Bulk load the usual way: the journal's secondary indexes and unique constraint are dropped,
    // the rows inserted, then everything is rebuilt exactly as the migrations defined it.
    const tLoad = performance.now()
    await db.query("SET synchronous_commit = off")
    await db.query("SET maintenance_work_mem = '512MB'")
    const constraints = (await db.query(`
      SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
      WHERE conrelid = 'step_journal'::regclass AND contype = 'u'`)).rows as Array<{ conname: string; def: string }>
    const indexes = (await db.query(`
      SELECT indexname, indexdef FROM pg_indexes i WHERE tablename = 'step_journal' AND indexname <> 'step_journal_pkey'
        AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)`)).rows as Array<{ indexname: string; indexdef: string }>
    for (const c of constraints) await db.query(`ALTER TABLE step_journal DROP CONSTRAINT "${c.conname}"`)
    for (const i of indexes) await db.query(`DROP INDEX "${i.indexname}"`)
    const hostEvents = 3 * 2_000
    await db.query(insertHosts(2_000))
    const runs = Math.ceil((target - hostEvents) / 5.4) + 100
    const chunk = 18_500 // ≈ 100 000 events per transaction
    for (let from = 0; from < runs; from += chunk) await db.query(insertRuns(from, Math.min(runs, from + chunk)))
    for (const c of constraints) await db.query(`ALTER TABLE step_journal ADD CONSTRAINT "${c.conname}" ${c.def}`)
    for (const i of indexes) await db.query(i.indexdef)
    await db.query("VACUUM ANALYZE step_journal")
    const events = Number((await db.query("SELECT count(*)::int AS n FROM step_journal")).rows[0].n)
    const loadMs = ms(tLoad)

    // --- projector catch-up from nothing (the live tables, as the gateway's projector would) -----
    const batchSize = 10_000 // the projector's default
    const tCatch = performance.now()
    const caught = await run(Effect.flatMap(SqlClient.SqlClient, (sql) => catchUpFully(sql, { schema: liveSchema, source: "journal", batchSize }, 600_000)))
    const catchMs = ms(tCatch)

    // --- rebuild into a scratch schema (what `journal rebuild` and `verify` do) ---------------
    const tRebuild = performance.now()
    const rebuilt = await run(Effect.flatMap(SqlClient.SqlClient, (sql) => rebuildInto(sql, "awooop_bench_rebuild", { batchSize })))
    const rebuildMs = ms(tRebuild)
    await run(Effect.flatMap(SqlClient.SqlClient, (sql) => dropScratch(sql, "awooop_bench_rebuild")))

    // --- explain one trace (a fallback: gcp-a timed out, gcp-b answered) ----------------------
    const trace = (await db.query(`SELECT trace_id FROM step_journal WHERE type = 'AttemptFailed' AND global_position > $1 LIMIT 1`, [Math.floor(events / 2)])).rows[0].trace_id as string
    const samples: Array<number> = []
    let text = ""
    await run(Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      for (let i = 0; i < 60; i++) {
        const t0 = performance.now()
        const x = yield* explain(sql, trace)
        text = renderText(x)
        if (i >= 10) samples.push(ms(t0)) // the first ones warm the pool and caches
      }
    }))
    samples.sort((a, b) => a - b)

    // --- verify: plan() re-run on every recorded decision ---------------------------------------
    const tVerify = performance.now()
    const decisions = await run(Effect.flatMap(SqlClient.SqlClient, (sql) => verifyDecisions(sql, { batchSize: 5_000 })))
    const verifyMs = ms(tVerify)

    const size = (await db.query(`SELECT pg_size_pretty(pg_total_relation_size('step_journal')) AS s`)).rows[0].s as string
    const runStates = Number((await db.query("SELECT count(*)::int AS n FROM run_state")).rows[0].n)
    await db.end()

    const rate = (n: number, t: number) => Math.round(n / (t / 1000)).toLocaleString("en-US")
    const ok = (good: boolean) => (good ? "✅" : "❌")
    const catchRate = caught.events / (catchMs / 1000)
    const rebuildRate = rebuilt.events / (rebuildMs / 1000)
    const load = os.loadavg()[0]!.toFixed(1)
    const p50 = percentile(samples, 0.5)
    const p95 = percentile(samples, 0.95)
    return [
      `Machine: ${os.cpus().length} cores, load average ${load} at the end (other work on the machine slows every number).`,
      `Journal: ${events.toLocaleString("en-US")} events (${runStates.toLocaleString("en-US")} runs, ${hostEvents.toLocaleString("en-US")} host events), ${size} with indexes; loaded in ${(loadMs / 1000).toFixed(1)} s (generate_series in ~100k-row transactions, indexes built after).`,
      "",
      "| measurement | result | target | |",
      "|---|---|---|---|",
      `| projector catch-up from empty (batches of ${batchSize}) | ${caught.events.toLocaleString("en-US")} events in ${(catchMs / 1000).toFixed(1)} s = **${rate(caught.events, catchMs)} events/s** | ≥ 50,000 events/s | ${ok(catchRate >= 50_000)} |`,
      `| rebuild into a scratch schema (journal + archive) | ${rebuilt.events.toLocaleString("en-US")} events in ${(rebuildMs / 1000).toFixed(1)} s = **${rate(rebuilt.events, rebuildMs)} events/s** | ≥ 50,000 events/s | ${ok(rebuildRate >= 50_000)} |`,
      `| explain one trace (${text.split("\n").length} lines), 50 runs | p50 **${p50.toFixed(1)} ms**, p95 ${p95.toFixed(1)} ms, max ${samples[samples.length - 1]!.toFixed(1)} ms | ≤ 50 ms | ${ok(p95 <= 50)} |`,
      `| verify: plan() on every RouteDecided | ${decisions.checked.toLocaleString("en-US")} decisions in ${(verifyMs / 1000).toFixed(1)} s = ${rate(decisions.checked, verifyMs)}/s, ${decisions.mismatches} differ | 0 differ | ${ok(decisions.mismatches === 0)} |`
    ].join("\n")
  } finally {
    if (process.env.BENCH_KEEP === "1") console.error(`kept ${dbUrl}`)
    else await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`)
    dropped(dbName)
    await admin.end()
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(await benchProjector())
}


