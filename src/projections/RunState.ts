/**
 * run_state: one row per run — status, project, lane, intent, trace, requested and assigned model,
 * attempts, the endpoint that answered, provider tier, tokens, cost, fallback reason, error, times.
 *
 * `evolve(state, event)` is the whole projection (Emmett style): a pure fold over the events of one
 * run stream. Rules that keep it safe on any input:
 * - an event at or below `lastPosition` is a re-delivery: the state comes back unchanged (same object);
 * - the first terminal event (RunCompleted / RunFailed) decides the outcome; later ones are ignored;
 * - event types it does not know (those of later issues, say) only advance `lastPosition`.
 * To project a new event type, add a case to `step`.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect } from "effect"
import { bool, fields, firstNum, int, num, type ProjectionEvent, runStreamPrefix, str } from "./Event.ts"

export type RunStatus = "running" | "completed" | "failed"

/** A host (or provider) that did not answer, in the order it happened. */
export interface Miss {
  readonly host: string
  /** circuit-open, host-down, timeout, refused, busy, heavy-model-denied, budget-denied, ... */
  readonly kind: string
  readonly text: string
}

export interface RunState {
  readonly streamId: string
  readonly runId: string
  readonly traceId: string | null
  readonly projectId: string | null
  readonly lane: string | null
  readonly status: RunStatus
  readonly operation: string | null
  readonly stream: boolean | null
  readonly intent: string | null
  readonly requestedModel: string | null
  readonly assignedModel: string | null
  /** The model that answered. */
  readonly model: string | null
  readonly attempts: number
  readonly endpoint: string | null
  readonly providerTier: string | null
  readonly provider: string | null
  /** null: not reported (unknown), never 0. */
  readonly inputTokens: number | null
  readonly outputTokens: number | null
  /** Derived: what the run cost, null when unknown. */
  readonly costUsd: number | null
  readonly completedCostUsd: number | null
  readonly settledCostUsd: number
  /** Settlements with a known cost, and those whose provider did not report usage. */
  readonly settlements: number
  readonly unknownSettlements: number
  /** Derived: why the answer did not come from the first host of the route. */
  readonly fallbackReason: string | null
  readonly paidFallbackReason: string | null
  readonly error: string | null
  readonly errorCode: string | null
  readonly errorStatus: number | null
  readonly startedAt: number | null
  readonly finishedAt: number | null
  readonly durationMs: number | null
  /** The lane's route (host names, in order) as decided. */
  readonly route: ReadonlyArray<string>
  readonly misses: ReadonlyArray<Miss>
  readonly lastPosition: number
  readonly lastEventAt: number | null
}

export const isFinished = (run: RunState): boolean => run.status !== "running"

export const initial = (event: ProjectionEvent): RunState => ({
  streamId: event.streamId,
  runId: event.streamId.startsWith(runStreamPrefix) ? event.streamId.slice(runStreamPrefix.length) : event.streamId,
  traceId: event.traceId,
  projectId: event.projectId,
  lane: event.lane,
  status: "running",
  operation: null,
  stream: null,
  intent: null,
  requestedModel: null,
  assignedModel: null,
  model: null,
  attempts: 0,
  endpoint: null,
  providerTier: null,
  provider: null,
  inputTokens: null,
  outputTokens: null,
  costUsd: null,
  completedCostUsd: null,
  settledCostUsd: 0,
  settlements: 0,
  unknownSettlements: 0,
  fallbackReason: null,
  paidFallbackReason: null,
  error: null,
  errorCode: null,
  errorStatus: null,
  startedAt: event.occurredAt,
  finishedAt: null,
  durationMs: null,
  route: [],
  misses: [],
  lastPosition: -1,
  lastEventAt: null
})

const seconds = (ms: number | null): string => (ms === null ? "" : ` after ${(ms / 1000).toFixed(1)}s`)

/** Short, stable texts: they end up in fallback_reason ("gcp-a timeout after 45.0s, gcp-b circuit open"). */
export const skipText = (host: string, reason: Readonly<Record<string, unknown>>): string => {
  switch (reason.kind) {
    case "circuit-open": return `${host} circuit open`
    case "probe-in-flight": return `${host} circuit half-open (probe in flight)`
    case "host-down": return `${host} down`
    case "heavy-model-denied": return `${host} denies heavy models (${num(reason.sizeB) ?? "?"}B >= ${num(reason.minParamsB) ?? "?"}B)`
    case "model-not-installed": return `${host} lacks the model`
    default: return `${host} skipped (${str(reason.kind) ?? "unknown"})`
  }
}

export const failureText = (host: string, kind: string, durationMs: number | null): string => {
  switch (kind) {
    case "timeout": return `${host} timeout${seconds(durationMs)}`
    case "refused": return `${host} refused`
    case "busy": return `${host} busy (503)`
    default: return `${host} ${kind}`
  }
}

/** Misses that are not failures: a conditional step left out because an earlier host was refused by a rule. */
const notAMiss = new Set(["only-when-unavailable"])

const addMiss = (s: RunState, miss: Miss): RunState =>
  notAMiss.has(miss.kind) ? s : { ...s, misses: [...s.misses, miss] }

const finish = (s: RunState, event: ProjectionEvent, durationMs: number | null): Pick<RunState, "finishedAt" | "durationMs"> => ({
  finishedAt: event.occurredAt,
  durationMs: durationMs ?? (s.startedAt === null ? null : event.occurredAt - s.startedAt)
})

/** One event's effect, before the derived fields are recomputed. */
const step = (s: RunState, event: ProjectionEvent): RunState => {
  const d = fields(event.data)
  switch (event.type) {
    case "RunStarted":
      return {
        ...s,
        runId: str(d.runId) ?? s.runId,
        operation: str(d.operation),
        stream: bool(d.stream),
        intent: str(d.intent),
        requestedModel: str(d.requestedModel),
        assignedModel: str(d.assignedModel) ?? s.assignedModel,
        startedAt: event.occurredAt
      }
    case "RouteDecided": {
      const input = fields(d.input)
      const plan = fields(d.plan)
      const route = (Array.isArray(input.route) ? input.route : []).flatMap((r) => {
        const host = str(fields(r).host)
        return host === null ? [] : [host]
      })
      let next: RunState = { ...s, route, assignedModel: s.assignedModel ?? str(input.model) }
      for (const skip of Array.isArray(plan.skipped) ? plan.skipped : []) {
        const host = str(fields(skip).host)
        const reason = fields(fields(skip).reason)
        if (host !== null) next = addMiss(next, { host, kind: str(reason.kind) ?? "skipped", text: skipText(host, reason) })
      }
      return next
    }
    case "AttemptStarted":
      return { ...s, attempts: s.attempts + 1 }
    case "AttemptFailed": {
      const host = str(d.host) ?? str(d.provider) ?? "?"
      const kind = str(d.kind) ?? "failure"
      return addMiss(s, { host, kind, text: failureText(host, kind, int(d.durationMs)) })
    }
    case "HostSkipped": {
      const host = str(d.host) ?? str(d.provider) ?? "?"
      const kind = str(d.reason) ?? "skipped"
      return addMiss(s, { host, kind, text: skipText(host, { kind }) })
    }
    case "PaidFallbackRequested":
      return { ...s, paidFallbackReason: str(d.reason) ?? "paid fallback requested" }
    case "BudgetDenied": {
      const host = str(d.provider) ?? "budget"
      const why = str(d.reason) ?? str(d.message)
      return addMiss(s, { host, kind: "budget-denied", text: `${host} budget denied${why === null ? "" : ` (${why})`}` })
    }
    case "BudgetSettled": {
      // costUsd null: the provider did not report usage; what the budget charged is not the cost.
      const cost = firstNum(d.costUsd, d.actualUsd)
      return cost === null
        ? { ...s, unknownSettlements: s.unknownSettlements + 1 }
        : { ...s, settledCostUsd: s.settledCostUsd + cost, settlements: s.settlements + 1 }
    }
    case "PaidProviderSkipped": {
      const host = str(d.provider) ?? "?"
      return addMiss(s, { host, kind: "provider-skipped", text: `${host} skipped${str(d.reason) === null ? "" : ` (${str(d.reason)})`}` })
    }
    case "RunCompleted": {
      if (s.status !== "running") return s
      const endpoint = str(d.endpoint) ?? s.endpoint
      const providerTier = str(d.providerTier)
      return {
        ...s,
        status: "completed",
        endpoint,
        providerTier,
        provider: str(d.provider) ?? (providerTier === null || providerTier === "ollama" ? "ollama" : endpoint ?? providerTier),
        model: str(d.model) ?? s.assignedModel,
        inputTokens: int(d.inputTokens),
        outputTokens: int(d.outputTokens),
        completedCostUsd: num(d.costUsd),
        paidFallbackReason: s.paidFallbackReason ?? str(d.fallbackReason),
        ...finish(s, event, int(d.durationMs))
      }
    }
    case "RunFailed":
      if (s.status !== "running") return s
      return {
        ...s,
        status: "failed",
        error: str(d.message),
        errorCode: str(d.error),
        errorStatus: int(d.status),
        paidFallbackReason: s.paidFallbackReason ?? str(d.fallbackReason),
        ...finish(s, event, int(d.durationMs))
      }
    default:
      return s
  }
}

/** The misses that explain why `endpoint` (not the first host) answered. */
const fallbackOf = (s: RunState): string | null => {
  if (s.paidFallbackReason !== null) return s.paidFallbackReason
  if (s.status !== "completed" || s.endpoint === null || s.misses.length === 0) return null
  const at = s.route.indexOf(s.endpoint)
  const before = at < 0 ? s.misses : s.misses.filter((m) => {
    const i = s.route.indexOf(m.host)
    return i >= 0 && i < at
  })
  return before.length === 0 ? null : before.map((m) => m.text).join(", ")
}

/** RunCompleted's cost; else what the settlements say (unknown if one was); a failed run that spent nothing cost 0. */
const costOf = (s: RunState): number | null =>
  s.completedCostUsd ??
    (s.unknownSettlements > 0 ? null : s.settlements > 0 ? s.settledCostUsd : s.status === "failed" ? 0 : null)

export const evolve = (state: RunState | null, event: ProjectionEvent): RunState => {
  if (state !== null && event.streamPosition <= state.lastPosition) return state
  const base = state ?? initial(event)
  const s = step(
    {
      ...base,
      traceId: base.traceId ?? event.traceId,
      projectId: base.projectId ?? event.projectId,
      lane: base.lane ?? event.lane
    },
    event
  )
  const next = { ...s, lastPosition: event.streamPosition, lastEventAt: event.occurredAt }
  return { ...next, costUsd: costOf(next), fallbackReason: fallbackOf(next) }
}

// ---------------------------------------------------------------------------------------------
// SQL
// ---------------------------------------------------------------------------------------------

export const table = "run_state"

/** Columns compared by `verify` (all of them: the row is the state). */
export const diffKey = ["stream_id"] as const

interface Row {
  readonly streamId: string
  readonly runId: string
  readonly traceId: string | null
  readonly projectId: string | null
  readonly lane: string | null
  readonly status: string
  readonly operation: string | null
  readonly stream: boolean | null
  readonly intent: string | null
  readonly requestedModel: string | null
  readonly assignedModel: string | null
  readonly model: string | null
  readonly attempts: number
  readonly endpoint: string | null
  readonly providerTier: string | null
  readonly provider: string | null
  readonly inputTokens: number | null
  readonly outputTokens: number | null
  readonly costUsd: string | null
  readonly completedCostUsd: string | null
  readonly settledCostUsd: string
  readonly settlements: number
  readonly unknownSettlements: number
  readonly fallbackReason: string | null
  readonly paidFallbackReason: string | null
  readonly error: string | null
  readonly errorCode: string | null
  readonly errorStatus: number | null
  readonly startedAt: number | null
  readonly finishedAt: number | null
  readonly durationMs: number | null
  readonly route: ReadonlyArray<string>
  readonly misses: ReadonlyArray<Miss>
  readonly lastPosition: number
  readonly lastEventAt: number | null
}

const numberOrNull = (v: string | null): number | null => (v === null ? null : Number(v))

const fromRow = (r: Row): RunState => ({
  ...r,
  status: r.status as RunStatus,
  costUsd: numberOrNull(r.costUsd),
  completedCostUsd: numberOrNull(r.completedCostUsd),
  settledCostUsd: Number(r.settledCostUsd)
})

const ms = (column: string) => `floor(extract(epoch FROM ${column}) * 1000)::float8`

/** The SELECT list that reads a row back into a RunState (numbers exactly as stored). */
export const selectList = [
  `stream_id AS "streamId"`, `run_id AS "runId"`, `trace_id AS "traceId"`, `project_id AS "projectId"`, `lane`, `status`,
  `operation`, `stream`, `intent`, `requested_model AS "requestedModel"`, `assigned_model AS "assignedModel"`, `model`,
  `attempts`, `endpoint`, `provider_tier AS "providerTier"`, `provider`, `input_tokens::float8 AS "inputTokens"`,
  `output_tokens::float8 AS "outputTokens"`, `cost_usd::text AS "costUsd"`, `completed_cost_usd::text AS "completedCostUsd"`,
  `settled_cost_usd::text AS "settledCostUsd"`, `settlements`, `unknown_settlements AS "unknownSettlements"`, `fallback_reason AS "fallbackReason"`,
  `paid_fallback_reason AS "paidFallbackReason"`, `error`, `error_code AS "errorCode"`, `error_status AS "errorStatus"`,
  `${ms("started_at")} AS "startedAt"`, `${ms("finished_at")} AS "finishedAt"`, `duration_ms::float8 AS "durationMs"`,
  `route`, `misses`, `last_position AS "lastPosition"`, `${ms("last_event_at")} AS "lastEventAt"`
].join(", ")

export const load = (
  sql: SqlClient.SqlClient,
  schema: string,
  streamIds: ReadonlyArray<string>
): Effect.Effect<Map<string, RunState>, SqlError> =>
  streamIds.length === 0
    ? Effect.succeed(new Map())
    : sql<Row>`SELECT ${sql.literal(selectList)} FROM ${sql(`${schema}.${table}`)}
        WHERE stream_id IN (SELECT jsonb_array_elements_text(${JSON.stringify(streamIds)}::jsonb))`.pipe(
        Effect.map((rows) => new Map(rows.map((r) => [r.streamId, fromRow(r)])))
      )

export const loadOne = (sql: SqlClient.SqlClient, schema: string, streamId: string) =>
  Effect.map(load(sql, schema, [streamId]), (m) => m.get(streamId) ?? null)

export const loadByTrace = (sql: SqlClient.SqlClient, schema: string, traceId: string) =>
  sql<Row>`SELECT ${sql.literal(selectList)} FROM ${sql(`${schema}.${table}`)}
    WHERE trace_id = ${traceId} ORDER BY started_at, stream_id`.pipe(Effect.map((rows) => rows.map(fromRow)))

/** Writes whole states (the row is the state). */
export const upsert = (
  sql: SqlClient.SqlClient,
  schema: string,
  states: ReadonlyArray<RunState>
): Effect.Effect<void, SqlError> =>
  states.length === 0 ? Effect.void : sql`
    INSERT INTO ${sql(`${schema}.${table}`)} (stream_id, run_id, trace_id, project_id, lane, status, operation, stream, intent,
      requested_model, assigned_model, model, attempts, endpoint, provider_tier, provider, input_tokens, output_tokens,
      cost_usd, completed_cost_usd, settled_cost_usd, settlements, unknown_settlements, fallback_reason, paid_fallback_reason, error, error_code,
      error_status, started_at, finished_at, duration_ms, route, misses, last_position, last_event_at)
    SELECT "streamId", "runId", "traceId", "projectId", lane, status, operation, stream, intent,
      "requestedModel", "assignedModel", model, attempts, endpoint, "providerTier", provider, "inputTokens", "outputTokens",
      "costUsd", "completedCostUsd", "settledCostUsd", settlements, "unknownSettlements", "fallbackReason", "paidFallbackReason", error, "errorCode",
      "errorStatus", to_timestamp("startedAt" / 1000.0), to_timestamp("finishedAt" / 1000.0), "durationMs", route, misses,
      "lastPosition", to_timestamp("lastEventAt" / 1000.0)
    FROM jsonb_to_recordset(${JSON.stringify(states)}::jsonb) AS r(
      "streamId" text, "runId" text, "traceId" text, "projectId" text, lane text, status text, operation text, stream boolean,
      intent text, "requestedModel" text, "assignedModel" text, model text, attempts integer, endpoint text,
      "providerTier" text, provider text, "inputTokens" bigint, "outputTokens" bigint, "costUsd" numeric,
      "completedCostUsd" numeric, "settledCostUsd" numeric, settlements integer, "unknownSettlements" integer,
      "fallbackReason" text,
      "paidFallbackReason" text, error text, "errorCode" text, "errorStatus" integer, "startedAt" float8,
      "finishedAt" float8, "durationMs" bigint, route jsonb, misses jsonb, "lastPosition" integer, "lastEventAt" float8)
    ON CONFLICT (stream_id) DO UPDATE SET
      run_id = EXCLUDED.run_id, trace_id = EXCLUDED.trace_id, project_id = EXCLUDED.project_id, lane = EXCLUDED.lane,
      status = EXCLUDED.status, operation = EXCLUDED.operation, stream = EXCLUDED.stream, intent = EXCLUDED.intent,
      requested_model = EXCLUDED.requested_model, assigned_model = EXCLUDED.assigned_model, model = EXCLUDED.model,
      attempts = EXCLUDED.attempts, endpoint = EXCLUDED.endpoint, provider_tier = EXCLUDED.provider_tier,
      provider = EXCLUDED.provider, input_tokens = EXCLUDED.input_tokens, output_tokens = EXCLUDED.output_tokens,
      cost_usd = EXCLUDED.cost_usd, completed_cost_usd = EXCLUDED.completed_cost_usd,
      settled_cost_usd = EXCLUDED.settled_cost_usd, settlements = EXCLUDED.settlements,
      unknown_settlements = EXCLUDED.unknown_settlements,
      fallback_reason = EXCLUDED.fallback_reason, paid_fallback_reason = EXCLUDED.paid_fallback_reason,
      error = EXCLUDED.error, error_code = EXCLUDED.error_code, error_status = EXCLUDED.error_status,
      started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at, duration_ms = EXCLUDED.duration_ms,
      route = EXCLUDED.route, misses = EXCLUDED.misses, last_position = EXCLUDED.last_position,
      last_event_at = EXCLUDED.last_event_at`.pipe(Effect.asVoid)
