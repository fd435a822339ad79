/**
 * Time series for the console's charts, bucketed in SQL:
 *
 * - requests, fallbacks by reason (the first miss's kind, as `awooop_fallbacks_total`), and cost by
 *   lane / provider / project: run_state by the time each run finished (a bounded scan, see Runs.ts);
 * - the budget's burn-down in the current period: budget_ledger (indexed by period);
 * - breaker trips and maintenance windows to mark on the time axis: the host streams (indexed by time);
 * - shadow agreement per lane: ShadowDecided events (indexed by time, as the shadow report).
 *
 * Times are epoch seconds, as uPlot wants them.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect } from "effect"
import { periodStart } from "../budget/Budget.ts"
import type { GatewayConfig } from "../config/GatewayConfig.ts"
import { decodeEvent } from "../domain/Events.ts"
import * as History from "../projections/History.ts"
import { liveSchema } from "../projections/Projector.ts"
import { qualify } from "../projections/Sql.ts"

/** The chart windows and their bucket sizes (about 60 buckets each). */
export const windows: Readonly<Record<string, { readonly spanMs: number; readonly bucketMs: number }>> = {
  "15m": { spanMs: 900_000, bucketMs: 15_000 },
  "1h": { spanMs: 3_600_000, bucketMs: 60_000 },
  "6h": { spanMs: 21_600_000, bucketMs: 300_000 },
  "24h": { spanMs: 86_400_000, bucketMs: 1_800_000 },
  "7d": { spanMs: 604_800_000, bucketMs: 10_800_000 }
}

export const windowOf = (name: string | undefined) => (name !== undefined && name in windows ? name : "1h")

export interface Axis {
  readonly from: number
  readonly to: number
  readonly bucketMs: number
  /** bucket starts, epoch seconds */
  readonly t: ReadonlyArray<number>
}

export const axisOf = (window: string, now: number): Axis => {
  const { bucketMs, spanMs } = windows[window]!
  const to = Math.floor(now / bucketMs) * bucketMs
  const from = to - spanMs + bucketMs
  const t: Array<number> = []
  for (let at = from; at <= to; at += bucketMs) t.push(at / 1000)
  return { from, to: to + bucketMs, bucketMs, t }
}

/** A series per key, one value per bucket (0 where nothing happened). */
const grouped = (axis: Axis) => {
  const out: Record<string, Array<number>> = {}
  return {
    add: (key: string, at: number, value: number) => {
      const i = Math.floor((at - axis.from) / axis.bucketMs)
      if (i < 0 || i >= axis.t.length) return
      const row = out[key] ?? (out[key] = axis.t.map(() => 0))
      row[i] = row[i]! + value
    },
    get: () => out
  }
}

export interface Mark {
  readonly t: number
  readonly host: string
  readonly text: string
}

export interface Band {
  readonly from: number
  readonly to: number
  readonly host: string
  readonly text: string
}

/** Breaker trips (points) and maintenance windows (bands) of every host within the axis. */
const marksOf = (sql: SqlClient.SqlClient, config: GatewayConfig, axis: Axis, now: number) =>
  Effect.gen(function*() {
    const hosts = Object.keys(config.hosts)
    const events = yield* History.streamsBetween(sql, hosts.map((h) => `host-${h}`), axis.from, axis.to, 5_000)
    const trips: Array<Mark> = []
    const bands: Array<Band> = []
    const open = new Map<string, { from: number; text: string }>()
    for (const row of events) {
      const host = row.streamId.slice("host-".length)
      const e = decodeEvent(row.type, row.data)
      if (e._tag === "BreakerOpened") trips.push({ t: row.occurredAt / 1000, host, text: `${host} breaker opened` })
      if (e._tag === "MaintenanceOpened") open.set(host, { from: row.occurredAt, text: `${host} maintenance: ${e.reason}` })
      if (e._tag === "MaintenanceClosed") {
        const o = open.get(host) ?? { from: axis.from, text: `${host} maintenance: ${e.openReason ?? ""}` }
        bands.push({ from: o.from / 1000, to: row.occurredAt / 1000, host, text: o.text })
        open.delete(host)
      }
    }
    for (const [host, o] of open) bands.push({ from: o.from / 1000, to: now / 1000, host, text: o.text })
    return { trips, bands }
  })

interface RunBucket {
  readonly t: number
  readonly status: string
  readonly lane: string
  readonly provider: string
  readonly project: string
  readonly reason: string | null
  readonly n: number
  readonly cost: number
}

const burnDown = (sql: SqlClient.SqlClient, config: GatewayConfig, now: number) =>
  Effect.gen(function*() {
    if (config.budget === undefined) return null
    const { hardKillUsd, period } = config.budget
    const start = periodStart(now, period)
    const end = period === "hour"
      ? start.getTime() + 3_600_000
      : period === "day"
      ? start.getTime() + 86_400_000
      : Date.UTC(start.getUTCFullYear(), start.getUTCMonth() + 1, 1)
    const rows = yield* sql<{ t: number; amount: number }>`
      SELECT floor(extract(epoch FROM created_at))::float8 AS t, COALESCE(settled_usd, reserved_usd)::float8 AS amount
      FROM budget_ledger WHERE period_start = ${start.toISOString()}::timestamptz AND status <> 'released'
      ORDER BY created_at`
    const t = [start.getTime() / 1000]
    const remaining = [hardKillUsd]
    let spent = 0
    for (const r of rows) {
      spent += r.amount
      t.push(r.t)
      remaining.push(Math.max(0, hardKillUsd - spent))
    }
    t.push(now / 1000)
    remaining.push(Math.max(0, hardKillUsd - spent))
    const kills = (yield* History.streamEvents(sql, "budget"))
      .filter((e) => e.occurredAt >= start.getTime())
      .map((row) => {
        const e = decodeEvent(row.type, row.data)
        const reason = e._tag === "HardKillTripped" || e._tag === "HardKillReset" ? e.reason ?? "" : ""
        return { t: row.occurredAt / 1000, host: "budget", text: `${row.type === "HardKillTripped" ? "hard kill tripped" : "hard kill reset"}: ${reason}` }
      })
    return { capUsd: hardKillUsd, period, from: start.getTime() / 1000, to: end / 1000, t, remaining, spentUsd: spent, kills }
  })

export const costSeries = (config: GatewayConfig, window: string, now: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const axis = axisOf(window, now)
    const rows = yield* sql<RunBucket>`
      SELECT (floor(extract(epoch FROM finished_at) * 1000 / ${axis.bucketMs}) * ${axis.bucketMs})::float8 AS t,
        status, COALESCE(lane, 'none') AS lane, COALESCE(provider, 'none') AS provider, COALESCE(project_id, 'none') AS project,
        CASE WHEN status = 'completed' AND jsonb_array_length(misses) > 0 THEN misses->0->>'kind' END AS reason,
        count(*)::float8 AS n, COALESCE(sum(cost_usd), 0)::float8 AS cost
      FROM ${sql.literal(qualify(liveSchema, "run_state"))}
      WHERE finished_at >= to_timestamp(${axis.from} / 1000.0) AND finished_at < to_timestamp(${axis.to} / 1000.0)
      GROUP BY 1, 2, 3, 4, 5, 6`
    const requests = grouped(axis)
    const fallbacks = grouped(axis)
    const byLane = grouped(axis)
    const byProvider = grouped(axis)
    const byProject = grouped(axis)
    for (const r of rows) {
      requests.add(r.status === "completed" ? (r.reason === null ? "answered first try" : "answered after fallback") : r.status, r.t, r.n)
      if (r.reason !== null) fallbacks.add(r.reason, r.t, r.n)
      byLane.add(r.lane, r.t, r.cost)
      byProvider.add(r.provider, r.t, r.cost)
      byProject.add(r.project, r.t, r.cost)
    }
    return {
      window,
      axis,
      requests: requests.get(),
      fallbacks: fallbacks.get(),
      cost: { lane: byLane.get(), provider: byProvider.get(), project: byProject.get() },
      budget: yield* burnDown(sql, config, now),
      marks: yield* marksOf(sql, config, axis, now)
    }
  })

export type CostSeries = Effect.Effect.Success<ReturnType<typeof costSeries>>

export interface Disagreement {
  readonly at: number
  readonly lane: string
  readonly traceId: string | null
  readonly gateway: string
  readonly legacy: string
  readonly reasons: ReadonlyArray<string>
}

export const shadowSeries = (config: GatewayConfig, window: string, now: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const axis = axisOf(window, now)
    const rows = yield* sql<{ t: number; lane: string; compared: number; agreed: number }>`
      SELECT (floor(extract(epoch FROM occurred_at) * 1000 / ${axis.bucketMs}) * ${axis.bucketMs})::float8 AS t, lane,
        count(*) FILTER (WHERE jsonb_typeof(data->'agree') = 'boolean')::float8 AS compared,
        count(*) FILTER (WHERE data->'agree' = 'true'::jsonb)::float8 AS agreed
      FROM step_journal
      WHERE type = 'ShadowDecided' AND occurred_at >= to_timestamp(${axis.from} / 1000.0) AND occurred_at < to_timestamp(${axis.to} / 1000.0)
      GROUP BY 1, 2`
    const compared = grouped(axis)
    const agreed = grouped(axis)
    for (const r of rows) {
      compared.add(r.lane, r.t, r.compared)
      agreed.add(r.lane, r.t, r.agreed)
    }
    const agreement: Record<string, Array<number | null>> = {}
    for (const [lane, counts] of Object.entries(compared.get())) {
      const ok = agreed.get()[lane] ?? []
      agreement[lane] = counts.map((c, i) => (c === 0 ? null : (ok[i] ?? 0) / c))
    }
    const recent = yield* sql<{ at: number; lane: string; traceId: string | null; data: unknown }>`
      SELECT floor(extract(epoch FROM occurred_at) * 1000)::float8 AS at, lane, trace_id AS "traceId", data
      FROM step_journal
      WHERE type = 'ShadowDecided' AND occurred_at >= to_timestamp(${axis.from} / 1000.0) AND data->'agree' = 'false'::jsonb
      ORDER BY occurred_at DESC LIMIT 100`
    const disagreements = recent.flatMap((r): Array<Disagreement> => {
      const d = decodeEvent("ShadowDecided", r.data)
      if (d._tag !== "ShadowDecided") return []
      return [{
        at: r.at,
        lane: r.lane,
        traceId: r.traceId,
        gateway: `${d.gateway.host ?? "no host"} · ${d.gateway.model ?? "?"}`,
        legacy: `${d.legacy.host ?? d.legacy.endpoint ?? "unknown"} · ${d.legacy.model ?? "?"}`,
        reasons: d.reasons.map((x) => x.text)
      }]
    })
    return { window, axis, agreement, compared: compared.get(), disagreements, marks: yield* marksOf(sql, config, axis, now), lanes: Object.keys(config.lanes) }
  })

export type ShadowSeries = Effect.Effect.Success<ReturnType<typeof shadowSeries>>

/** Sum of a series (the tables beside the charts). */
export const total = (values: ReadonlyArray<number | null>): number => values.reduce<number>((a, v) => a + (v ?? 0), 0)

