/**
 * metrics: counters and histograms by metric × lane × endpoint × outcome, folded from the journal
 * (what `GET /metrics` reads once the observability issue lands).
 *
 * - `run_duration_ms` (histogram): finished runs, by lane, answering endpoint ("none" if none) and
 *   outcome ("success", or the error code such as "AllAttemptsTimedOut").
 * - `run_tokens` (histogram): completed runs' reported tokens, outcome "input" / "output".
 * - `fallback` (counter): completed runs answered by a later host or a paid provider, by the first
 *   miss's kind ("timeout", "circuit-open", ...) or "paid".
 * - `attempt_duration_ms` (histogram): each attempt, by host and outcome ("success", "timeout", ...).
 * - `host_skipped` (counter): hosts left out of a run, by host and reason.
 * - `breaker_transition` (counter): per host, "BreakerOpened" / "BreakerHalfOpened" / "BreakerClosed".
 *
 * Like the cost ledger, run-level metrics add the difference of a run's contribution before and
 * after each event; all values are integers, so any batching sums to the same table.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect, HashMap } from "effect"
import { addDeltas, type Change, keyOf } from "./Change.ts"
import { decoded } from "./Event.ts"
import type { RunState } from "./RunState.ts"

/** OpenTelemetry GenAI `gen_ai.client.operation.duration` buckets (0.01 s … 81.92 s, doubling), in ms. */
export const durationBoundsMs: ReadonlyArray<number> = Array.from({ length: 14 }, (_, i) => 10 * 2 ** i)

/** OpenTelemetry GenAI `gen_ai.client.token.usage` buckets (1, 4, 16, … ×4). */
export const tokenBounds: ReadonlyArray<number> = Array.from({ length: 14 }, (_, i) => 4 ** i)

export const metricBounds: Readonly<Record<string, ReadonlyArray<number>>> = {
  run_duration_ms: durationBoundsMs,
  attempt_duration_ms: durationBoundsMs,
  run_tokens: tokenBounds
}

export interface MetricKey {
  readonly name: string
  readonly lane: string
  readonly endpoint: string
  readonly outcome: string
}

export interface MetricRow extends MetricKey {
  readonly count: number
  readonly sum: number
  /** Non-cumulative counts per bound of `metricBounds[name]`, then the overflow bucket; [] for counters. */
  readonly buckets: ReadonlyArray<number>
}

export type Metrics = HashMap.HashMap<string, MetricRow>

export const empty: Metrics = HashMap.empty()

const none = "none"

const counter = (name: string, lane: string | null, endpoint: string, outcome: string): MetricRow => ({
  name,
  lane: lane ?? none,
  endpoint,
  outcome,
  count: 1,
  sum: 0,
  buckets: []
})

const observation = (name: string, lane: string | null, endpoint: string, outcome: string, value: number): MetricRow => {
  const bounds = metricBounds[name] ?? []
  const buckets = new Array<number>(bounds.length + 1).fill(0)
  const i = bounds.findIndex((b) => value <= b)
  buckets[i < 0 ? bounds.length : i] = 1
  return { name, lane: lane ?? none, endpoint, outcome, count: 1, sum: value, buckets }
}

/** A finished run's rows. */
export const runContribution = (run: RunState): ReadonlyArray<MetricRow> => {
  if (run.status === "running") return []
  const completed = run.status === "completed"
  const endpoint = (completed ? run.endpoint : null) ?? none
  const rows: Array<MetricRow> = [
    observation("run_duration_ms", run.lane, endpoint, completed ? "success" : run.errorCode ?? "error", Math.max(0, run.durationMs ?? 0))
  ]
  if (completed && run.inputTokens !== null) rows.push(observation("run_tokens", run.lane, endpoint, "input", run.inputTokens))
  if (completed && run.outputTokens !== null) rows.push(observation("run_tokens", run.lane, endpoint, "output", run.outputTokens))
  if (completed && run.fallbackReason !== null) {
    rows.push(counter("fallback", run.lane, endpoint, run.paidFallbackReason !== null ? "paid" : run.misses[0]?.kind ?? "other"))
  }
  return rows
}

const rowKey = (r: MetricKey) => keyOf([r.name, r.lane, r.endpoint, r.outcome])

const sameRows = (a: ReadonlyArray<MetricRow>, b: ReadonlyArray<MetricRow>): boolean =>
  a.length === b.length &&
  a.every((r, i) => {
    const s = b[i]!
    return rowKey(r) === rowKey(s) && r.count === s.count && r.sum === s.sum && r.buckets.join() === s.buckets.join()
  })

const noRows: ReadonlyArray<MetricRow> = []

/** Rows an event adds by itself (attempts, skips, breaker transitions), once, when it is applied. */
const eventRows = (change: Change): ReadonlyArray<MetricRow> => {
  if (change.run === null && change.host === null) return noRows
  const e = decoded(change.event)
  if (change.run !== null) {
    const lane = change.run.after.lane
    switch (e._tag) {
      case "AttemptSucceeded":
        return [observation("attempt_duration_ms", lane, e.host, "success", Math.max(0, Math.round(e.durationMs)))]
      case "AttemptFailed":
        return [observation("attempt_duration_ms", lane, e.host ?? e.provider ?? none, e.kind, Math.max(0, Math.round(e.durationMs ?? 0)))]
      case "HostSkipped":
        return [counter("host_skipped", lane, e.host, e.reason)]
      case "RouteDecided":
        return e.plan.skipped.map((s) => counter("host_skipped", lane, s.host, s.reason.kind))
    }
    return noRows
  }
  if (e._tag === "BreakerOpened" || e._tag === "BreakerHalfOpened" || e._tag === "BreakerClosed") {
    return [counter("breaker_transition", null, change.host!.after.host, e._tag)]
  }
  return noRows
}

const noDeltas: ReadonlyArray<readonly [MetricRow, 1 | -1]> = []

/** What a change adds: its own rows, and the difference of its run's contribution. */
export const deltas = (change: Change): ReadonlyArray<readonly [MetricRow, 1 | -1]> => {
  const own = eventRows(change)
  // A running run contributes nothing yet (before and after): the common case allocates nothing.
  if (change.run === null || change.run.after.status === "running") {
    return own.length === 0 ? noDeltas : own.map((row) => [row, 1] as const)
  }
  const out: Array<readonly [MetricRow, 1 | -1]> = own.map((row) => [row, 1] as const)
  const before = change.run.before === null ? [] : runContribution(change.run.before)
  const after = runContribution(change.run.after)
  if (sameRows(before, after)) return out
  for (const row of before) out.push([row, -1])
  for (const row of after) out.push([row, 1])
  return out
}

const plus = (base: MetricRow, row: MetricRow, sign: 1 | -1): MetricRow => {
  const length = Math.max(base.buckets.length, row.buckets.length)
  const buckets = Array.from({ length }, (_, i) => (base.buckets[i] ?? 0) + sign * (row.buckets[i] ?? 0))
  return { ...base, count: base.count + sign * row.count, sum: base.sum + sign * row.sum, buckets }
}

const zero = (row: MetricRow): MetricRow => ({ ...row, count: 0, sum: 0, buckets: row.buckets.map(() => 0) })

export const evolve = (metrics: Metrics, change: Change): Metrics => addDeltas(metrics, deltas(change), rowKey, plus, zero)

interface MutableRow extends MetricKey {
  count: number
  sum: number
  buckets: Array<number>
}

/** The same sums as `evolve`, in a mutable map updated in place, for one batch of the projector. */
export class Accumulator {
  private readonly rows = new Map<string, MutableRow>()
  add(change: Change): void {
    for (const [row, sign] of deltas(change)) {
      const key = rowKey(row)
      let acc = this.rows.get(key)
      if (acc === undefined) {
        acc = { name: row.name, lane: row.lane, endpoint: row.endpoint, outcome: row.outcome, count: 0, sum: 0, buckets: row.buckets.map(() => 0) }
        this.rows.set(key, acc)
      }
      acc.count += sign * row.count
      acc.sum += sign * row.sum
      for (let i = 0; i < row.buckets.length; i++) acc.buckets[i] = (acc.buckets[i] ?? 0) + sign * row.buckets[i]!
    }
  }
  values(): Iterable<MetricRow> {
    return this.rows.values()
  }
}

// ---------------------------------------------------------------------------------------------
// SQL
// ---------------------------------------------------------------------------------------------

export const table = "metrics"

/** Adds `delta` (as folded from an empty Metrics) to the table, bucket by bucket. */
export const upsert = (sql: SqlClient.SqlClient, schema: string, delta: Iterable<MetricRow>): Effect.Effect<void, SqlError> => {
  const rows = Array.from(delta)
  if (rows.length === 0) return Effect.void
  return sql`
    INSERT INTO ${sql(`${schema}.${table}`)} AS t (name, lane, endpoint, outcome, count, sum, buckets)
    SELECT name, lane, endpoint, outcome, count, sum, ARRAY(SELECT jsonb_array_elements_text(buckets)::bigint)
    FROM jsonb_to_recordset(${JSON.stringify(rows)}::jsonb)
      AS r(name text, lane text, endpoint text, outcome text, count bigint, sum bigint, buckets jsonb)
    ON CONFLICT (name, lane, endpoint, outcome) DO UPDATE SET
      count = t.count + EXCLUDED.count,
      sum = t.sum + EXCLUDED.sum,
      buckets = ARRAY(
        SELECT COALESCE(a, 0) + COALESCE(b, 0)
        FROM unnest(t.buckets, EXCLUDED.buckets) WITH ORDINALITY AS u(a, b, i) ORDER BY i)`.pipe(Effect.asVoid)
}

export interface StoredMetric extends MetricRow {}

/** The whole table (small: one row per metric × lane × endpoint × outcome). */
export const readAll = (sql: SqlClient.SqlClient, schema: string) =>
  sql<{ name: string; lane: string; endpoint: string; outcome: string; count: number; sum: number; buckets: ReadonlyArray<string> }>`
    SELECT name, lane, endpoint, outcome, count::float8 AS count, sum::float8 AS sum, buckets::text[] AS buckets
    FROM ${sql(`${schema}.${table}`)} ORDER BY name, lane, endpoint, outcome`.pipe(
    Effect.map((rows): ReadonlyArray<StoredMetric> => rows.map((r) => ({ ...r, buckets: r.buckets.map(Number) })))
  )
