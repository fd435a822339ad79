/**
 * The runs tail: the latest runs from run_state (the projector's table), filtered by lane, host,
 * model, outcome, fallback reason, project and time range. The filters are the page's query string,
 * so a filtered view is a link an operator can paste into an incident channel.
 *
 * run_state has no secondary index (each would slow the projector), so this is a scan bounded by
 * the time range and a LIMIT; the default range is the last hour.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect } from "effect"
import { parseDurationMs } from "../config/Duration.ts"
import type { GatewayConfig } from "../config/GatewayConfig.ts"
import { liveSchema } from "../projections/Projector.ts"
import * as RunState from "../projections/RunState.ts"
import { qualify } from "../projections/Sql.ts"
import { clockTime, type Html, html, isoTime, seconds, usd } from "./Html.ts"

type Params = Readonly<Record<string, string | ReadonlyArray<string> | undefined>>

export interface RunFilters {
  readonly lane: string
  readonly host: string
  readonly model: string
  readonly outcome: "" | "completed" | "failed" | "running" | "fallback"
  readonly reason: string
  readonly project: string
  /** "1h", "24h" … or an ISO time */
  readonly since: string
  readonly until: string
}

export const filterNames = ["lane", "host", "model", "outcome", "reason", "project", "since", "until"] as const

/** Reasons a run's first miss can have (RunState misses' kinds). */
export const missKinds = ["timeout", "circuit-open", "host-down", "refused", "busy", "error", "reset", "malformed", "heavy-model-denied", "model-not-installed", "budget-denied"]

const first = (params: Params, name: string): string => {
  const v = params[name]
  return (typeof v === "string" ? v : v?.[0] ?? "").trim().slice(0, 200)
}

export const parseFilters = (params: Params): RunFilters => {
  const outcome = first(params, "outcome")
  return {
    lane: first(params, "lane"),
    host: first(params, "host"),
    model: first(params, "model"),
    outcome: outcome === "completed" || outcome === "failed" || outcome === "running" || outcome === "fallback" ? outcome : "",
    reason: first(params, "reason"),
    project: first(params, "project"),
    since: first(params, "since") || "1h",
    until: first(params, "until")
  }
}

/** "1h" back from now or an ISO time → epoch ms; null when it is neither. */
export const timeOf = (text: string, now: number): number | null => {
  if (text === "") return null
  const back = parseDurationMs(text)
  if (back !== undefined) return now - back
  const at = /^\d{4}-\d{2}-\d{2}/.test(text) ? Date.parse(text) : NaN
  return Number.isFinite(at) ? at : null
}

export const queryString = (f: RunFilters): string => {
  const q = new URLSearchParams()
  for (const name of filterNames) if (f[name] !== "") q.set(name, f[name])
  return q.toString()
}

export const listLimit = 200

export const listRuns = (filters: RunFilters, now: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const since = timeOf(filters.since, now) ?? now - 3_600_000
    const until = timeOf(filters.until, now)
    const conditions = [sql`started_at >= to_timestamp(${since} / 1000.0)`]
    if (until !== null) conditions.push(sql`started_at <= to_timestamp(${until} / 1000.0)`)
    if (filters.lane !== "") conditions.push(sql`lane = ${filters.lane}`)
    if (filters.project !== "") conditions.push(sql`project_id = ${filters.project}`)
    if (filters.model !== "") conditions.push(sql`(model = ${filters.model} OR assigned_model = ${filters.model} OR requested_model = ${filters.model})`)
    if (filters.host !== "") conditions.push(sql`(endpoint = ${filters.host} OR route @> jsonb_build_array(${filters.host}::text))`)
    if (filters.outcome === "fallback") conditions.push(sql`status = 'completed' AND jsonb_array_length(misses) > 0`)
    else if (filters.outcome !== "") conditions.push(sql`status = ${filters.outcome}`)
    if (filters.reason !== "") conditions.push(sql`misses->0->>'kind' = ${filters.reason}`)
    const rows = yield* sql<Parameters<typeof RunState.fromRow>[0]>`
      SELECT ${sql.literal(RunState.selectList)} FROM ${sql.literal(qualify(liveSchema, RunState.table))}
      WHERE ${sql.and(conditions)} ORDER BY started_at DESC LIMIT ${listLimit}`
    return rows.map(RunState.fromRow)
  })

const outcomeBadge = (r: RunState.RunState) =>
  r.status === "completed"
    ? r.misses.length > 0 ? html`<span class="badge warn">fallback</span>` : html`<span class="badge ok">ok</span>`
    : r.status === "failed"
    ? html`<span class="badge down">failed ${r.errorStatus ?? ""}</span>`
    : html`<span class="badge unknown">running</span>`

export const runRows = (runs: ReadonlyArray<RunState.RunState>): Html =>
  runs.length === 0
    ? html`<tr><td colspan="11" class="dim">no runs match these filters</td></tr>`
    : html`${
      runs.map((r) =>
        html`<tr data-run="${r.runId}" data-status="${r.status}">
<td><time datetime="${r.startedAt === null ? "" : new Date(r.startedAt).toISOString()}" title="${isoTime(r.startedAt)}">${clockTime(r.startedAt)}</time></td>
<td>${outcomeBadge(r)}</td>
<td>${r.lane ?? "—"}</td>
<td>${r.projectId ?? "—"}</td>
<td>${r.model ?? r.assignedModel ?? "—"}</td>
<td>${r.endpoint ?? "—"}${r.providerTier === "paid" ? html` <span class="tag">paid</span>` : ""}</td>
<td class="num">${r.attempts}</td>
<td class="num">${seconds(r.durationMs)}</td>
<td class="num">${r.status === "running" ? "—" : usd(r.costUsd)}</td>
<td class="reason">${r.fallbackReason ?? r.error ?? ""}</td>
<td><a href="/console/runs/${r.runId}" aria-label="story of run ${r.runId}">${r.runId.slice(0, 8)}</a></td>
</tr>`
      )
    }`

const select = (name: string, label: string, value: string, options: ReadonlyArray<string>) =>
  html`<label>${label} <select name="${name}"><option value="">any</option>${
    options.map((o) => html`<option${o === value ? html` selected` : ""}>${o}</option>`)
  }</select></label>`

const text = (name: string, label: string, value: string, placeholder: string) =>
  html`<label>${label} <input name="${name}" value="${value}" placeholder="${placeholder}" size="10"></label>`

export const runsPage = (config: GatewayConfig, filters: RunFilters, runs: ReadonlyArray<RunState.RunState>) => {
  const models = [...new Set(Object.values(config.lanes).map((l) => l.model).filter((m) => m !== ""))]
  return html`<h1>Runs</h1>
<form class="filters" method="get" action="/console/runs" id="run-filters">
${select("lane", "lane", filters.lane, Object.keys(config.lanes))}
${select("host", "host", filters.host, Object.keys(config.hosts))}
${select("model", "model", filters.model, models)}
${select("outcome", "outcome", filters.outcome, ["completed", "fallback", "failed", "running"])}
${select("reason", "fallback reason", filters.reason, missKinds)}
${text("project", "project", filters.project, "any")}
${text("since", "since", filters.since, "1h or ISO")}
${text("until", "until", filters.until, "now")}
<button type="submit">Apply</button> <a href="/console/runs">clear</a>
<label class="live"><input type="checkbox" id="live-tail" checked> live tail</label>
</form>
<table class="grid runs" data-rows-url="/console/runs/rows?${queryString(filters)}">
<caption>Latest ${listLimit} runs started since ${filters.since}${filters.until !== "" ? ` until ${filters.until}` : ""}, newest first</caption>
<thead><tr><th scope="col">started</th><th scope="col">outcome</th><th scope="col">lane</th><th scope="col">project</th><th scope="col">model</th><th scope="col">answered by</th><th scope="col">att.</th><th scope="col">took</th><th scope="col">cost</th><th scope="col">fallback reason / error</th><th scope="col">run</th></tr></thead>
<tbody id="run-rows">${runRows(runs)}</tbody>
</table>`
}
