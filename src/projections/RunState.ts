/**
 * run_state: one row per run — status, project, lane, intent, trace, requested and assigned model,
 * attempts, the endpoint that answered, provider tier, tokens, cost, fallback reason, error, times.
 *
 * `evolve(state, event)` is the whole projection (Emmett style): a pure fold over the events of one
 * run stream. Rules that keep it safe on any input:
 * - an event at or below `lastPosition` is a re-delivery: the state comes back unchanged (same object);
 * - the first terminal event (RunCompleted / RunFailed) decides the outcome; later ones are ignored;
 * - events the catalogue does not hold (domain/Events.ts: an unknown type, or data that does not
 *   match it) only advance `lastPosition`.
 * To project a new event type, add it to the catalogue and a case to `step`.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect } from "effect"
import type { EventOf } from "../domain/Events.ts"
import { decoded, type ProjectionEvent, runStreamPrefix } from "./Event.ts"
import type { Miss } from "../run/Miss.ts"
import { skipWords } from "../run/SkipReason.ts"
import { type Column, fromMillis, jsonText, toMillis } from "./Sql.ts"
import { loadStates, upsertStates } from "./StateTable.ts"

export type RunStatus = "running" | "completed" | "failed"

export interface RunState {
  readonly streamId: string
  readonly runId: string
  readonly traceId: string | null
  readonly projectId: string | null
  /** The authenticated caller's name (config `callers:`); null in open mode. */
  readonly caller: string | null
  readonly lane: string | null
  readonly status: RunStatus
  readonly operation: string | null
  /** The wire protocol the caller spoke (ollama, openai-chat, openai-responses, anthropic-messages, …). */
  readonly protocol: string | null
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
  caller: null,
  lane: event.lane,
  status: "running",
  operation: null,
  protocol: null,
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

/** A change to some fields of the state (null: none). */
type Patch = Partial<Mutable<RunState>> | null

const addMisses = (s: RunState, misses: ReadonlyArray<Miss>): Patch => {
  const kept = misses.filter((m) => !notAMiss.has(m.kind))
  return kept.length === 0 ? null : { misses: [...s.misses, ...kept] }
}

const finish = (s: RunState, event: ProjectionEvent, durationMs: number | null): Pick<RunState, "finishedAt" | "durationMs"> => ({
  finishedAt: event.occurredAt,
  durationMs: durationMs ?? (s.startedAt === null ? null : event.occurredAt - s.startedAt)
})

const round = (n: number | null | undefined): number | null => (n === null || n === undefined ? null : Math.round(n))

/** The run's outcome, from its first terminal event (`step` ignores later ones). */
const completed = (s: RunState, event: ProjectionEvent, e: EventOf<"RunCompleted">): Patch => {
  const endpoint = e.endpoint ?? s.endpoint
  return {
    status: "completed",
    endpoint,
    providerTier: e.providerTier,
    provider: e.providerTier === null || e.providerTier === "ollama" ? "ollama" : endpoint ?? e.providerTier,
    model: e.model ?? s.assignedModel,
    inputTokens: round(e.inputTokens),
    outputTokens: round(e.outputTokens),
    completedCostUsd: e.costUsd ?? null,
    paidFallbackReason: s.paidFallbackReason ?? e.fallbackReason ?? null,
    ...finish(s, event, round(e.durationMs))
  }
}

const failed = (s: RunState, event: ProjectionEvent, e: EventOf<"RunFailed">): Patch => ({
  status: "failed",
  error: e.message,
  errorCode: e.error,
  errorStatus: Math.round(e.status),
  paidFallbackReason: s.paidFallbackReason ?? e.fallbackReason ?? null,
  ...finish(s, event, Math.round(e.durationMs))
})

/** One event's effect, as the fields it changes (the derived fields are recomputed after). */
const step = (s: RunState, event: ProjectionEvent): Patch => {
  const e = decoded(event)
  switch (e._tag) {
    case "RunStarted":
      return {
        runId: e.runId,
        operation: e.operation,
        protocol: e.protocol ?? null,
        stream: e.stream,
        intent: e.intent,
        caller: e.caller,
        requestedModel: e.requestedModel,
        assignedModel: e.assignedModel ?? s.assignedModel,
        startedAt: event.occurredAt
      }
    case "RouteDecided": {
      const misses = e.plan.skipped.map((skip): Miss => ({ host: skip.host, kind: skip.reason.kind, text: skipWords(skip.host, skip.reason, "record") }))
      return { route: e.input.route.map((r) => r.host), assignedModel: s.assignedModel ?? e.input.model, ...addMisses(s, misses) }
    }
    case "AttemptStarted":
      return { attempts: s.attempts + 1 }
    case "AttemptFailed": {
      const host = e.host ?? e.provider ?? "?"
      return addMisses(s, [{ host, kind: e.kind, text: failureText(host, e.kind, round(e.durationMs)) }])
    }
    case "HostSkipped":
      return addMisses(s, [{ host: e.host, kind: e.reason, text: skipWords(e.host, { kind: e.reason }, "record") }])
    case "PaidFallbackRequested":
      return { paidFallbackReason: e.reason }
    case "BudgetDenied":
      return addMisses(s, [{ host: e.provider, kind: "budget-denied", text: `${e.provider} budget denied (${e.reason})` }])
    case "BudgetSettled":
      // costUsd null: the provider did not report usage; what the budget charged is not the cost.
      return e.costUsd === null
        ? { unknownSettlements: s.unknownSettlements + 1 }
        : { settledCostUsd: s.settledCostUsd + e.costUsd, settlements: s.settlements + 1 }
    case "PaidProviderSkipped":
      return addMisses(s, [{ host: e.provider, kind: "provider-skipped", text: `${e.provider} skipped (${e.reason})` }])
    case "RunCompleted":
      return s.status === "running" ? completed(s, event, e) : null
    case "RunFailed":
      return s.status === "running" ? failed(s, event, e) : null
    default:
      return null
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

/**
 * Applies `event` to `s` itself (the projector's batch fold works on its own copy of each state);
 * false, and `s` untouched, for a re-delivered event. `evolve` is this on a fresh copy.
 */
export const applyTo = (s: Mutable<RunState>, event: ProjectionEvent): boolean => {
  if (event.streamPosition <= s.lastPosition) return false
  const patch = step(s, event)
  if (patch !== null) Object.assign(s, patch)
  s.lastPosition = event.streamPosition
  s.lastEventAt = event.occurredAt
  if (s.traceId === null) s.traceId = event.traceId
  if (s.projectId === null) s.projectId = event.projectId
  if (s.lane === null) s.lane = event.lane
  s.costUsd = costOf(s)
  s.fallbackReason = fallbackOf(s)
  return true
}

export const evolve = (state: RunState | null, event: ProjectionEvent): RunState => {
  if (state !== null && event.streamPosition <= state.lastPosition) return state
  const next: Mutable<RunState> = state === null ? initial(event) : { ...state }
  applyTo(next, event)
  return next
}

export type MutableRunState = Mutable<RunState>

export type Mutable<T> = { -readonly [K in keyof T]: T[K] }

// ---------------------------------------------------------------------------------------------
// SQL
// ---------------------------------------------------------------------------------------------

export const table = "run_state"

/** A row as `selectList` reads it: numerics as text (exact), the status unchecked. */
type Row = Omit<RunState, "status" | "costUsd" | "completedCostUsd" | "settledCostUsd"> & {
  readonly status: string
  readonly costUsd: string | null
  readonly completedCostUsd: string | null
  readonly settledCostUsd: string
}

const numberOrNull = (v: string | null): number | null => (v === null ? null : Number(v))

export const fromRow = (r: Row): RunState => ({
  ...r,
  status: r.status as RunStatus,
  costUsd: numberOrNull(r.costUsd),
  completedCostUsd: numberOrNull(r.completedCostUsd),
  settledCostUsd: Number(r.settledCostUsd)
})

export const load = (
  sql: SqlClient.SqlClient,
  schema: string,
  streamIds: ReadonlyArray<string>
): Effect.Effect<Map<string, RunState>, SqlError> => loadStates<Row, RunState>(sql, schema, table, selectList, streamIds, fromRow)

export const loadOne = (sql: SqlClient.SqlClient, schema: string, streamId: string) =>
  Effect.map(load(sql, schema, [streamId]), (m) => m.get(streamId) ?? null)

/** The row is the state: every field has its column. */
const columns: ReadonlyArray<Column<RunState>> = [
  { name: "stream_id", type: "text", value: (r) => r.streamId },
  { name: "run_id", type: "text", value: (r) => r.runId },
  { name: "trace_id", type: "text", value: (r) => r.traceId },
  { name: "project_id", type: "text", value: (r) => r.projectId },
  { name: "caller", type: "text", value: (r) => r.caller },
  { name: "lane", type: "text", value: (r) => r.lane },
  { name: "status", type: "text", value: (r) => r.status },
  { name: "operation", type: "text", value: (r) => r.operation },
  { name: "protocol", type: "text", value: (r) => r.protocol },
  { name: "stream", type: "boolean", value: (r) => r.stream },
  { name: "intent", type: "text", value: (r) => r.intent },
  { name: "requested_model", type: "text", value: (r) => r.requestedModel },
  { name: "assigned_model", type: "text", value: (r) => r.assignedModel },
  { name: "model", type: "text", value: (r) => r.model },
  { name: "attempts", type: "integer", value: (r) => r.attempts },
  { name: "endpoint", type: "text", value: (r) => r.endpoint },
  { name: "provider_tier", type: "text", value: (r) => r.providerTier },
  { name: "provider", type: "text", value: (r) => r.provider },
  { name: "input_tokens", type: "bigint", value: (r) => r.inputTokens },
  { name: "output_tokens", type: "bigint", value: (r) => r.outputTokens },
  // numeric from the shortest decimal that reads back as the same double: exact round trips.
  { name: "cost_usd", type: "numeric", value: (r) => r.costUsd },
  { name: "completed_cost_usd", type: "numeric", value: (r) => r.completedCostUsd },
  { name: "settled_cost_usd", type: "numeric", value: (r) => r.settledCostUsd },
  { name: "settlements", type: "integer", value: (r) => r.settlements },
  { name: "unknown_settlements", type: "integer", value: (r) => r.unknownSettlements },
  { name: "fallback_reason", type: "text", value: (r) => r.fallbackReason },
  { name: "paid_fallback_reason", type: "text", value: (r) => r.paidFallbackReason },
  { name: "error", type: "text", value: (r) => r.error },
  { name: "error_code", type: "text", value: (r) => r.errorCode },
  { name: "error_status", type: "integer", value: (r) => r.errorStatus },
  { name: "started_at", type: "float8", value: (r) => r.startedAt, expr: fromMillis },
  { name: "finished_at", type: "float8", value: (r) => r.finishedAt, expr: fromMillis },
  { name: "duration_ms", type: "bigint", value: (r) => r.durationMs },
  { name: "route", type: "jsonb", value: (r) => jsonText(r.route) },
  { name: "misses", type: "jsonb", value: (r) => jsonText(r.misses) },
  { name: "last_position", type: "integer", value: (r) => r.lastPosition },
  { name: "last_event_at", type: "float8", value: (r) => r.lastEventAt, expr: fromMillis }
]

const camel = (name: string) => name.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase())

/** How a column reads back into its field, numbers exactly as stored (bigint as float8, numeric as text). */
const readBack = (c: Column<RunState>): string =>
  c.expr === fromMillis ? toMillis(c.name) : c.type === "bigint" ? `${c.name}::float8` : c.type === "numeric" ? `${c.name}::text` : c.name

/** The SELECT list that reads a row back into a RunState: derived from `columns`, so the two cannot drift. */
export const selectList = columns.map((c) => `${readBack(c)} AS "${camel(c.name)}"`).join(", ")

/** Writes whole states. */
export const upsert = (
  sql: SqlClient.SqlClient,
  schema: string,
  states: ReadonlyArray<RunState>
): Effect.Effect<void, SqlError> => upsertStates(sql, schema, table, columns, states)
