/**
 * `journal explain <trace-id | run-id>`: the story of a trace from the journal alone — the
 * request, lane and model, each host tried or skipped and why, breaker transitions of those hosts
 * while the run was going on, the fallback and its reason, tokens and cost.
 *
 * The runs are folded from their events here (RunState.evolve), not read from run_state, so an
 * explanation never depends on the projector being current.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Data, Effect } from "effect"
import { type AnyEvent, decodeEvent, type EventOf, type HostEvent, isHostEvent } from "../domain/Events.ts"
import { hostStreamPrefix, isRunStream } from "../projections/Event.ts"
import * as History from "../projections/History.ts"
import type { HistoryEvent } from "../projections/History.ts"
import * as RunState from "../projections/RunState.ts"

export class ExplainNotFound extends Data.TaggedError("ExplainNotFound")<{ readonly id: string }> {
  override get message() {
    return `nothing in the journal for ${JSON.stringify(this.id)} (neither a trace id nor a run id)`
  }
}

export interface Step {
  /** epoch ms */
  readonly at: number
  /** ms since the run started */
  readonly offsetMs: number
  readonly streamId: string
  /** The host a host-stream event is about (breaker transitions, health). */
  readonly host: string | null
  readonly type: string
  readonly text: string
  readonly data: unknown
}

export interface RunExplanation {
  readonly run: RunState.RunState
  readonly summary: string
  readonly steps: ReadonlyArray<Step>
}

export interface Explanation {
  readonly query: string
  readonly traceId: string | null
  /** Set when the query named a run. */
  readonly runId: string | null
  readonly runs: ReadonlyArray<RunExplanation>
}

const runIdPattern = /^(?:run-)?([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/i

/** "run-<uuid>" or "<uuid>" → the run's stream id; anything else is taken as a trace id. */
export const runStreamOf = (id: string): string | null => {
  const m = runIdPattern.exec(id.trim())
  return m === null ? null : `run-${m[1]!.toLowerCase()}`
}

// ---------------------------------------------------------------------------------------------
// Texts
// ---------------------------------------------------------------------------------------------

const time = (ms: number | null): string => (ms === null ? "?" : new Date(ms).toISOString())
const clock = (ms: number): string => new Date(ms).toISOString().slice(11, 23)
const secs = (ms: number | null): string => (ms === null ? "?" : `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)}s`)
const usd = (v: number | null): string => (v === null ? "unknown" : `$${v.toFixed(6)}`)
const tokens = (v: number | null): string => (v === null ? "unknown" : String(v))

const compact = (data: unknown): string => {
  const text = JSON.stringify(data) ?? ""
  return text.length > 160 ? `${text.slice(0, 157)}...` : text
}

/** A skipped host, with when its breaker opened if that is in the journal. */
/** When the breaker of `host` last opened at or before `at`, if the journal says. */
export type OpenedLookup = (host: string, at: number) => HistoryEvent | undefined

const skipDetail = (host: string, reason: { readonly kind: string; readonly until?: number | null; readonly sizeB?: number; readonly minParamsB?: number }, at: number, openedAt: OpenedLookup): string => {
  switch (reason.kind) {
    case "circuit-open": {
      const opened = openedAt(host, at)
      const od = opened === undefined ? null : decodeEvent(opened.type, opened.data)
      const since = opened === undefined
        ? ""
        : ` since ${time(opened.occurredAt)}${od?._tag === "BreakerOpened" ? ` (after ${od.consecutiveTimeouts} consecutive timeouts)` : ""}`
      const until = reason.until ?? null
      return `${host} skipped: circuit open${since}${until !== null ? `, until ${time(until)}` : ""}`
    }
    case "probe-in-flight": return `${host} skipped: circuit half-open and its one probe is in flight`
    case "host-down": return `${host} skipped: host down`
    case "heavy-model-denied":
      return `${host} skipped: denied by rule policy.heavyModelMinParamsB (a ${reason.sizeB ?? "?"}B model on a protected host, limit ${reason.minParamsB ?? "?"}B, no maintenance window)`
    case "model-not-installed": return `${host} skipped: the model is not installed there`
    case "only-when-unavailable": return `${host} skipped: used only when the hosts before it are unavailable, and one was refused by a rule`
    default: return `${host} skipped: ${reason.kind}`
  }
}

const failure = (d: EventOf<"AttemptFailed">): string => {
  const kind = d.kind
  const what = kind === "timeout"
    ? `timed out after ${secs(round(d.durationMs))}`
    : kind === "refused"
    ? "connection refused (host down)"
    : `${kind}${d.status != null ? ` (${Math.round(d.status)})` : ""}`
  const detail = kind !== "timeout" ? `: ${d.message}` : ""
  return `${what}${detail}${d.afterFirstChunk === true ? " — after the first chunk reached the caller, so no failover" : ""}`
}

const round = (n: number | null | undefined): number | null => (n === null || n === undefined ? null : Math.round(n))
const list = (v: ReadonlyArray<string>) => (v.length > 0 ? v.join(", ") : "none")

/** One line for one run event. */
const describeRun = (e: Exclude<AnyEvent, HostEvent>, row: HistoryEvent, openedAt: OpenedLookup): string => {
  switch (e._tag) {
    case "RunStarted": {
      const parts = [
        `request: ${e.operation}${e.stream ? " (streaming)" : ""}${e.protocol !== undefined && e.protocol !== "ollama" ? ` via ${e.protocol}` : ""} on lane ${row.lane ?? "?"}`,
        `model ${e.requestedModel ?? "(none)"} requested, ${e.assignedModel ?? "?"} assigned`
      ]
      if (e.intent !== null) parts.push(`intent ${e.intent}`)
      if (row.projectId !== null) parts.push(`project ${row.projectId}${e.legacy ? " (legacy caller, bootstrap rules)" : ""}`)
      return parts.join(", ")
    }
    case "RouteDecided": {
      const attempts = e.plan.attempts.map((a) => `${a.host} (${secs(a.timeoutMs)}${a.conditional ? ", only if the ones before are unavailable" : ""})`)
      const skipped = e.plan.skipped.map((s) => skipDetail(s.host, s.reason, row.occurredAt, openedAt))
      const head = attempts.length === 0 ? "route decided: no host to try" : `route decided: try ${attempts.join(" → ")}`
      return skipped.length === 0 ? head : `${head}; ${skipped.join("; ")}`
    }
    case "AttemptStarted":
      return `attempt ${Math.round(e.attempt)}: ${e.host} (timeout ${secs(e.timeoutMs)}${e.slotPool !== undefined ? `, ${e.slotPool} slot` : ""})`
    case "AttemptFailed":
      return `attempt ${Math.round(e.attempt)} on ${e.host ?? e.provider ?? "?"} failed: ${failure(e)}`
    case "AttemptSucceeded": {
      const first = round(e.firstChunkMs)
      return `${e.host} answered in ${secs(Math.round(e.durationMs))}${first !== null ? ` (first chunk after ${secs(first)})` : ""}`
    }
    case "HostSkipped":
      return skipDetail(e.host, { kind: e.reason, until: e.until ?? null }, row.occurredAt, openedAt) + (e.probeInFlight === true ? " (a probe is in flight)" : "")
    case "PaidFallbackRequested":
      return `paid fallback requested: ${e.reason}`
    case "BudgetReserved":
      return `budget reserved: ${usd(e.amountUsd)} for ${e.provider}`
    case "BudgetSettled":
      return e.costUsd === null
        ? `budget settled: cost unknown (the provider reported no usage), charged ${usd(e.chargedUsd)}`
        : `budget settled: ${usd(e.costUsd)}`
    case "PaidFallbackSkipped":
      return `paid fallback not attempted: ${e.reason}`
    case "PaidProviderSkipped":
      return `${e.provider} skipped: ${e.reason}`
    case "BudgetReleased":
      return `budget reservation released: ${e.reason}`
    case "BudgetDenied":
      return `paid fallback denied by the budget: ${e.reason}`
    case "RunCompleted":
      return `completed by ${e.endpoint ?? "?"} (${e.providerTier ?? "?"}) in ${secs(round(e.durationMs))}` +
        ` · tokens ${tokens(round(e.inputTokens))} in / ${tokens(round(e.outputTokens))} out · cost ${usd(e.costUsd ?? null)}`
    case "RunFailed":
      return `failed: ${Math.round(e.status)} ${e.error} after ${secs(Math.round(e.durationMs))}: ${e.message}`
    default:
      return `${row.type} ${compact(row.data)}`
  }
}

/** One line for one host event. */
const describeHost = (e: HostEvent, row: HistoryEvent): string => {
  const host = e.host
  switch (e._tag) {
    case "BreakerOpened":
      return `[host ${host}] circuit breaker OPENED after ${e.consecutiveTimeouts} consecutive timeouts, until ${time(e.until)}`
    case "BreakerHalfOpened":
      return `[host ${host}] circuit breaker half-open: one probe admitted`
    case "BreakerClosed":
      return `[host ${host}] circuit breaker closed`
    case "HostDown":
      return `[host ${host}] marked down: ${e.error}`
    case "HostUp":
      return `[host ${host}] up again`
    case "ResidencyChanged":
      return `[host ${host}] resident models: ${list(e.resident)} (loaded ${list(e.loaded)}, evicted ${list(e.evicted)})`
    case "MaintenanceOpened":
      return `[host ${host}] maintenance opened: ${e.reason}${e.until !== null ? ` until ${time(e.until)}` : ""}`
    case "MaintenanceClosed":
      return `[host ${host}] maintenance closed`
    default:
      return `${row.type} ${compact(row.data)}`
  }
}

/** One line for one event. */
export const describe = (row: HistoryEvent, openedAt: OpenedLookup = () => undefined): string => {
  const e = decodeEvent(row.type, row.data)
  if (e._tag === "UnknownEvent") return `${row.type} ${compact(row.data)}`
  return isHostEvent(e) ? describeHost(e, row) : describeRun(e, row, openedAt)
}

const summaryOf = (run: RunState.RunState): string => {
  const head = run.status === "completed"
    ? `COMPLETED by ${run.endpoint ?? "?"} (${run.providerTier ?? "?"}${run.model !== null ? `, ${run.model}` : ""}) in ${secs(run.durationMs)}`
    : run.status === "failed"
    ? `FAILED ${run.errorStatus ?? "?"} ${run.errorCode ?? ""} after ${secs(run.durationMs)}: ${run.error ?? ""}`
    : `still RUNNING (last event ${time(run.lastEventAt)})`
  const parts = [head, `${run.attempts} attempt${run.attempts === 1 ? "" : "s"}`]
  if (run.status === "completed") parts.push(`tokens ${tokens(run.inputTokens)} in / ${tokens(run.outputTokens)} out`)
  if (run.status !== "running") parts.push(`cost ${usd(run.costUsd)}`)
  if (run.fallbackReason !== null) parts.push(`fallback because: ${run.fallbackReason}`)
  return parts.join(" · ")
}

// ---------------------------------------------------------------------------------------------
// Building an explanation
// ---------------------------------------------------------------------------------------------

/**
 * Host events are shown with a run while it ran. A breaker opens in the same instant as the
 * timeout that opened it (before the attempt's failure is journaled), so no slack is needed after
 * the run's last event — and none is wanted: back-to-back runs would each claim the next one's.
 */
const afterRunMs = 0

/** Hosts a run's events name (route, plan, attempts, skips). */
const hostsOf = (events: ReadonlyArray<HistoryEvent>): Set<string> => {
  const hosts = new Set<string>()
  for (const row of events) {
    const e = decodeEvent(row.type, row.data)
    if ("host" in e && typeof e.host === "string") hosts.add(e.host)
    if (e._tag === "RouteDecided") for (const step of e.input.route) hosts.add(step.host)
  }
  return hosts
}

const circuitOpenSkips = (events: ReadonlyArray<HistoryEvent>): Set<string> => {
  const hosts = new Set<string>()
  for (const row of events) {
    const e = decodeEvent(row.type, row.data)
    if (e._tag === "HostSkipped" && e.reason === "circuit-open") hosts.add(e.host)
    if (e._tag === "RouteDecided") {
      for (const s of e.plan.skipped) if (s.reason.kind === "circuit-open") hosts.add(s.host)
    }
  }
  return hosts
}

const explainEvents = (sql: SqlClient.SqlClient, events: ReadonlyArray<HistoryEvent>) =>
  Effect.gen(function*() {
    const byRun = new Map<string, Array<HistoryEvent>>()
    for (const e of events) {
      if (!isRunStream(e.streamId)) continue
      const list = byRun.get(e.streamId) ?? []
      list.push(e)
      byRun.set(e.streamId, list)
    }
    const runs = [...byRun.values()].map((list) => {
      const sorted = [...list].sort((a, b) => a.streamPosition - b.streamPosition)
      return { events: sorted, state: sorted.reduce<RunState.RunState | null>(RunState.evolve, null)! }
    })
    if (runs.length === 0) return []

    // Host events while the runs were going on, and when the breakers they found open had opened.
    const hosts = new Set<string>()
    const openHosts = new Set<string>()
    let from = Infinity
    let to = -Infinity
    for (const r of runs) {
      for (const h of hostsOf(r.events)) hosts.add(`${hostStreamPrefix}${h}`)
      for (const h of circuitOpenSkips(r.events)) openHosts.add(`${hostStreamPrefix}${h}`)
      from = Math.min(from, r.events[0]!.occurredAt)
      to = Math.max(to, r.events[r.events.length - 1]!.occurredAt + afterRunMs)
    }
    const hostEvents = yield* History.streamsBetween(sql, [...hosts], from, to)
    // Openings before the trace began, plus those during it.
    const openings = [
      ...(yield* History.latestOfType(sql, [...openHosts], "BreakerOpened", from)),
      ...hostEvents.filter((e) => e.type === "BreakerOpened")
    ]
    const openedAt: OpenedLookup = (host, at) => {
      let best: HistoryEvent | undefined
      for (const e of openings) {
        if (e.streamId === `${hostStreamPrefix}${host}` && e.occurredAt <= at && (best === undefined || e.occurredAt >= best.occurredAt)) best = e
      }
      return best
    }

    return runs.map(({ events: runEvents, state }): RunExplanation => {
      const start = runEvents[0]!.occurredAt
      const end = runEvents[runEvents.length - 1]!.occurredAt + afterRunMs
      const mine = new Set([...hostsOf(runEvents)].map((h) => `${hostStreamPrefix}${h}`))
      const merged = [
        ...runEvents,
        ...hostEvents.filter((e) => mine.has(e.streamId) && e.occurredAt >= start && e.occurredAt <= end)
      ].sort((a, b) => a.occurredAt - b.occurredAt || a.globalPosition - b.globalPosition)
      const steps = merged.map((e): Step => ({
        at: e.occurredAt,
        offsetMs: e.occurredAt - start,
        streamId: e.streamId,
        host: e.streamId.startsWith(hostStreamPrefix) ? e.streamId.slice(hostStreamPrefix.length) : null,
        type: e.type,
        text: describe(e, openedAt),
        data: e.data
      }))
      return { run: state, summary: summaryOf(state), steps }
    })
  })

export const explain = (sql: SqlClient.SqlClient, id: string): Effect.Effect<Explanation, SqlError | ExplainNotFound> =>
  Effect.gen(function*() {
    const stream = runStreamOf(id)
    let traceId: string | null = id.trim()
    let runId: string | null = null
    if (stream !== null) {
      const first = yield* History.firstOfStream(sql, stream)
      if (first === null) return yield* new ExplainNotFound({ id })
      runId = stream.slice("run-".length)
      traceId = first.traceId
    }
    const events = traceId === null ? yield* History.streamEvents(sql, stream!) : yield* History.traceEvents(sql, traceId)
    const runs = yield* explainEvents(sql, events)
    if (runs.length === 0) return yield* new ExplainNotFound({ id })
    return { query: id, traceId, runId, runs }
  })

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

export const renderText = (x: Explanation): string => {
  const lines: Array<string> = []
  const first = x.runs[0]!.run
  const last = x.runs[x.runs.length - 1]!.run
  lines.push(
    `trace ${x.traceId ?? "(none)"}: ${x.runs.length} run${x.runs.length === 1 ? "" : "s"}, ` +
      `${time(first.startedAt)} → ${time(last.finishedAt ?? last.lastEventAt)}` +
      (first.projectId !== null ? `, project ${first.projectId}` : "")
  )
  x.runs.forEach((r, i) => {
    const marker = x.runId !== null && r.run.runId === x.runId ? "  ← the run asked about" : ""
    lines.push("")
    lines.push(`run ${i + 1} of ${x.runs.length}: ${r.run.runId} · lane ${r.run.lane ?? "?"} · ${r.summary}${marker}`)
    for (const s of r.steps) {
      lines.push(`  ${clock(s.at)}  +${(s.offsetMs / 1000).toFixed(3).padStart(8)}s  ${s.text}`)
    }
  })
  return lines.join("\n")
}

/** The machine form (`--json`): the same content, times as ISO strings. */
export const toJson = (x: Explanation) => ({
  query: x.query,
  traceId: x.traceId,
  runId: x.runId,
  runs: x.runs.map((r) => ({
    runId: r.run.runId,
    streamId: r.run.streamId,
    lane: r.run.lane,
    projectId: r.run.projectId,
    intent: r.run.intent,
    status: r.run.status,
    protocol: r.run.protocol,
    requestedModel: r.run.requestedModel,
    assignedModel: r.run.assignedModel,
    model: r.run.model,
    attempts: r.run.attempts,
    endpoint: r.run.endpoint,
    providerTier: r.run.providerTier,
    provider: r.run.provider,
    inputTokens: r.run.inputTokens,
    outputTokens: r.run.outputTokens,
    costUsd: r.run.costUsd,
    fallbackReason: r.run.fallbackReason,
    error: r.run.error,
    errorCode: r.run.errorCode,
    errorStatus: r.run.errorStatus,
    startedAt: r.run.startedAt === null ? null : time(r.run.startedAt),
    finishedAt: r.run.finishedAt === null ? null : time(r.run.finishedAt),
    durationMs: r.run.durationMs,
    misses: r.run.misses,
    summary: r.summary,
    steps: r.steps.map((s) => ({
      at: time(s.at),
      offsetMs: s.offsetMs,
      streamId: s.streamId,
      host: s.host,
      type: s.type,
      text: s.text,
      data: s.data
    }))
  }))
})
