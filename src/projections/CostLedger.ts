/**
 * cost_ledger: per UTC day × project × lane × provider × model — requests, failures, tokens, cost.
 *
 * A finished run contributes one row (the day it ended, the provider and model that answered, or
 * provider "none" when nothing did). `evolve` adds the difference between a run's contribution
 * after and before each event, so a late event (a settlement arriving after RunCompleted, say)
 * corrects the row instead of counting the run twice. Cost is summed in integer pico-dollars, so
 * the sum does not depend on how events were batched: a rebuild equals the live table exactly.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect, HashMap } from "effect"
import { addDeltas, type Change, keyOf } from "./Change.ts"
import type { RunState } from "./RunState.ts"

export interface LedgerKey {
  /** YYYY-MM-DD (UTC) */
  readonly day: string
  readonly projectId: string
  readonly lane: string
  readonly provider: string
  readonly model: string
  /** The caller's name (config `callers:`), "none" in open mode. */
  readonly caller: string
}

export interface LedgerRow extends LedgerKey {
  readonly requests: number
  readonly failed: number
  readonly inputTokens: number
  readonly outputTokens: number
  readonly unknownUsage: number
  readonly costPicoUsd: bigint
  readonly unknownCost: number
}

export type CostLedger = HashMap.HashMap<string, LedgerRow>

export const empty: CostLedger = HashMap.empty()

export const none = "none"

/** USD → integer pico-dollars (1e-12 USD): exact, associative sums. */
export const toPico = (usd: number): bigint => BigInt(Math.round(usd * 1e12))

export const dayOf = (ms: number): string => new Date(ms).toISOString().slice(0, 10)

/** What a run adds to the ledger; nothing while it runs. */
export const contribution = (run: RunState): LedgerRow | null => {
  if (run.status === "running" || run.finishedAt === null) return null
  const completed = run.status === "completed"
  return {
    day: dayOf(run.finishedAt),
    projectId: run.projectId ?? none,
    lane: run.lane ?? none,
    provider: completed ? run.provider ?? none : none,
    model: (completed ? run.model : null) ?? run.assignedModel ?? none,
    caller: run.caller ?? none,
    requests: 1,
    failed: completed ? 0 : 1,
    inputTokens: run.inputTokens ?? 0,
    outputTokens: run.outputTokens ?? 0,
    unknownUsage: completed && (run.inputTokens === null || run.outputTokens === null) ? 1 : 0,
    costPicoUsd: run.costUsd === null ? 0n : toPico(run.costUsd),
    unknownCost: run.costUsd === null ? 1 : 0
  }
}

const rowKey = (r: LedgerKey) => keyOf([r.day, r.projectId, r.lane, r.provider, r.model, r.caller])

const sameRow = (a: LedgerRow | null, b: LedgerRow | null): boolean =>
  a === null || b === null
    ? a === b
    : rowKey(a) === rowKey(b) && a.requests === b.requests && a.failed === b.failed && a.inputTokens === b.inputTokens &&
      a.outputTokens === b.outputTokens && a.unknownUsage === b.unknownUsage && a.costPicoUsd === b.costPicoUsd &&
      a.unknownCost === b.unknownCost

const none_: ReadonlyArray<readonly [LedgerRow, 1 | -1]> = []

/** What a change adds to the ledger: the run's contribution after it, minus the one before. */
export const deltas = (change: Change): ReadonlyArray<readonly [LedgerRow, 1 | -1]> => {
  // Most events change a running run: nothing to add, and nothing to allocate (this runs per event).
  if (change.run === null || change.run.after.status === "running") return none_
  const before = change.run.before === null ? null : contribution(change.run.before)
  const after = contribution(change.run.after)
  if (sameRow(before, after)) return none_
  const out: Array<readonly [LedgerRow, 1 | -1]> = []
  if (before !== null) out.push([before, -1])
  if (after !== null) out.push([after, 1])
  return out
}

const plus = (base: LedgerRow, row: LedgerRow, sign: 1 | -1): LedgerRow => ({
  ...base,
  requests: base.requests + sign * row.requests,
  failed: base.failed + sign * row.failed,
  inputTokens: base.inputTokens + sign * row.inputTokens,
  outputTokens: base.outputTokens + sign * row.outputTokens,
  unknownUsage: base.unknownUsage + sign * row.unknownUsage,
  costPicoUsd: base.costPicoUsd + (sign === 1 ? row.costPicoUsd : -row.costPicoUsd),
  unknownCost: base.unknownCost + sign * row.unknownCost
})

const zero = (row: LedgerRow): LedgerRow => ({
  ...row, requests: 0, failed: 0, inputTokens: 0, outputTokens: 0, unknownUsage: 0, costPicoUsd: 0n, unknownCost: 0
})

export const evolve = (ledger: CostLedger, change: Change): CostLedger => addDeltas(ledger, deltas(change), rowKey, plus, zero)

/**
 * The same sums as `evolve`, kept in a mutable map: what the projector builds for one batch
 * (a persistent map per event costs more than the rest of the fold).
 */
export class Accumulator {
  private readonly rows = new Map<string, LedgerRow>()
  add(change: Change): void {
    for (const [row, sign] of deltas(change)) {
      const key = rowKey(row)
      this.rows.set(key, plus(this.rows.get(key) ?? zero(row), row, sign))
    }
  }
  values(): Iterable<LedgerRow> {
    return this.rows.values()
  }
}

// ---------------------------------------------------------------------------------------------
// SQL
// ---------------------------------------------------------------------------------------------

export const table = "cost_ledger"

/** Adds `delta` (rows of differences, as folded from an empty ledger) to the table. */
export const upsert = (sql: SqlClient.SqlClient, schema: string, delta: Iterable<LedgerRow>): Effect.Effect<void, SqlError> => {
  const rows = Array.from(delta, (r) => ({ ...r, costPicoUsd: r.costPicoUsd.toString() }))
  if (rows.length === 0) return Effect.void
  const t = sql(`${schema}.${table}`)
  return sql`
    INSERT INTO ${t} AS t (day, project_id, lane, provider, model, caller, requests, failed, input_tokens, output_tokens,
      unknown_usage, cost_usd, unknown_cost)
    SELECT day::date, "projectId", lane, provider, model, caller, requests, failed, "inputTokens", "outputTokens",
      "unknownUsage", "costPicoUsd"::numeric * 0.000000000001, "unknownCost"
    FROM jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) AS r(day text, "projectId" text, lane text, provider text,
      model text, caller text, requests bigint, failed bigint, "inputTokens" bigint, "outputTokens" bigint, "unknownUsage" bigint,
      "costPicoUsd" text, "unknownCost" bigint)
    ON CONFLICT (day, project_id, lane, provider, model, caller) DO UPDATE SET
      requests = t.requests + EXCLUDED.requests, failed = t.failed + EXCLUDED.failed,
      input_tokens = t.input_tokens + EXCLUDED.input_tokens, output_tokens = t.output_tokens + EXCLUDED.output_tokens,
      unknown_usage = t.unknown_usage + EXCLUDED.unknown_usage, cost_usd = t.cost_usd + EXCLUDED.cost_usd,
      unknown_cost = t.unknown_cost + EXCLUDED.unknown_cost`.pipe(Effect.asVoid)
}

// ---------------------------------------------------------------------------------------------
// Reading (GET /awooop/cost)
// ---------------------------------------------------------------------------------------------

export const groupColumns = {
  day: "day",
  project: "project_id",
  lane: "lane",
  provider: "provider",
  model: "model",
  caller: "caller"
} as const

export type GroupBy = keyof typeof groupColumns

export interface CostTotals {
  readonly requests: number
  readonly failed: number
  readonly inputTokens: number
  readonly outputTokens: number
  readonly unknownUsage: number
  readonly costUsd: number
  readonly unknownCost: number
}

export interface CostGroup extends CostTotals {
  readonly group: Readonly<Partial<Record<GroupBy, string>>>
}

interface SummaryRow {
  readonly g0: string | null
  readonly g1: string | null
  readonly g2: string | null
  readonly g3: string | null
  readonly g4: string | null
  readonly g5: string | null
  readonly requests: number
  readonly failed: number
  readonly inputTokens: number
  readonly outputTokens: number
  readonly unknownUsage: number
  readonly costUsd: string
  readonly unknownCost: number
}

/** Totals between two days (inclusive), grouped by the given dimensions (none: one grand total). */
export const summarize = (
  sql: SqlClient.SqlClient,
  schema: string,
  options: {
    readonly from: string
    readonly to: string
    readonly groupBy: ReadonlyArray<GroupBy>
    /** Only this project's rows (a caller reading its own cost); absent: every project. */
    readonly projectId?: string | undefined
  }
): Effect.Effect<ReadonlyArray<CostGroup>, SqlError> => {
  const dims = options.groupBy.map((g) => (g === "day" ? `to_char(day, 'YYYY-MM-DD')` : groupColumns[g]))
  const select = [0, 1, 2, 3, 4, 5].map((i) => `${dims[i] ?? "NULL::text"} AS g${i}`).join(", ")
  const groupBy = dims.length === 0 ? "" : `GROUP BY ${dims.join(", ")}`
  return sql<SummaryRow>`
    SELECT ${sql.literal(select)},
      COALESCE(SUM(requests), 0)::float8 AS requests, COALESCE(SUM(failed), 0)::float8 AS failed,
      COALESCE(SUM(input_tokens), 0)::float8 AS "inputTokens", COALESCE(SUM(output_tokens), 0)::float8 AS "outputTokens",
      COALESCE(SUM(unknown_usage), 0)::float8 AS "unknownUsage", COALESCE(SUM(cost_usd), 0)::text AS "costUsd",
      COALESCE(SUM(unknown_cost), 0)::float8 AS "unknownCost"
    FROM ${sql(`${schema}.${table}`)}
    WHERE day BETWEEN ${options.from}::date AND ${options.to}::date
      ${options.projectId === undefined ? sql.literal("") : sql`AND project_id = ${options.projectId}`}
    ${sql.literal(groupBy)}
    ORDER BY SUM(cost_usd) DESC NULLS LAST, SUM(requests) DESC, 1`.pipe(
    Effect.map((rows) =>
      rows.map((r) => {
        const group: Partial<Record<GroupBy, string>> = {}
        const values = [r.g0, r.g1, r.g2, r.g3, r.g4, r.g5]
        options.groupBy.forEach((g, i) => {
          group[g] = values[i] ?? none
        })
        return {
          group,
          requests: r.requests,
          failed: r.failed,
          inputTokens: r.inputTokens,
          outputTokens: r.outputTokens,
          unknownUsage: r.unknownUsage,
          costUsd: Number(r.costUsd),
          unknownCost: r.unknownCost
        }
      })
    )
  )
}
