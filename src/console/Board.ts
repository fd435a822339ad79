/**
 * The live board: hosts × lanes in one dense table (HAProxy-stats style), then the lanes with their
 * safety in words. Built from the same health view as GET /awooop/health (http/HealthRoutes.ts) plus
 * the last keep-warm event of each (host, lane) from the host streams.
 *
 * The fragment is pushed over SSE (ConsoleRoutes.ts) and re-fetched by polling when SSE is down;
 * countdowns (breaker to half-open, maintenance end, residency expiry) carry their target time in
 * `data-until` and are ticked by the browser between updates.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Clock, Effect } from "effect"
import type { GatewayConfig } from "../config/GatewayConfig.ts"
import { healthView, type HostHealthView } from "../http/HealthRoutes.ts"
import { Gateway } from "../routing/Gateway.ts"
import { sameModel } from "../domain/OllamaApi.ts"
import { clockTime, type Html, html, join } from "./Html.ts"

export type BoardView = Effect.Effect.Success<typeof healthView>

export interface KeepWarmEvent {
  readonly host: string
  readonly lane: string
  readonly type: string
  readonly at: number
  readonly message: string | null
}

/** The latest keep-warm event per (host, lane) in the last day (host streams are indexed by time). */
export const keepWarmEvents = (hosts: ReadonlyArray<string>) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    hosts.length === 0
      ? Effect.succeed<ReadonlyArray<KeepWarmEvent>>([])
      : sql<KeepWarmEvent>`
        SELECT DISTINCT ON (stream_id, data->>'lane') substr(stream_id, 6) AS host, data->>'lane' AS lane, type,
          floor(extract(epoch FROM occurred_at) * 1000)::float8 AS at,
          COALESCE(data->>'message', data->>'error', data->>'reason') AS message
        FROM step_journal
        WHERE stream_id IN (SELECT 'host-' || jsonb_array_elements_text(${JSON.stringify(hosts)}::jsonb))
          AND stream_id LIKE 'host-%' AND occurred_at > now() - interval '1 day'
          AND type IN ('KeepWarmLoaded', 'KeepWarmFailed', 'KeepWarmSkipped', 'ModelEvicted')
        ORDER BY stream_id, data->>'lane', occurred_at DESC`)

const until = (iso: string | null, prefix: string, done: string) =>
  iso === null ? "" : html`<span class="countdown" data-until="${Date.parse(iso)}" data-prefix="${prefix}" data-done="${done}">${prefix} ${clockTime(Date.parse(iso))}</span>`

const statusCell = (h: HostHealthView) => {
  const cls = h.status === "up" ? "up" : h.status === "down" ? "down" : "unknown"
  return html`<td class="state ${cls}"><span class="badge ${cls}">${h.status.toUpperCase()}</span>${
    h.lastError !== null && h.status === "down" ? html`<span class="why">${h.lastError}</span>` : ""
  }</td>`
}

const breakerCell = (h: HostHealthView) => {
  const b = h.breaker
  if (b.status === "closed") {
    return html`<td class="breaker closed" data-breaker="closed"><span class="badge ok">closed</span>${
      b.consecutiveTimeouts > 0 ? html` <span class="why">${b.consecutiveTimeouts} timeout${b.consecutiveTimeouts === 1 ? "" : "s"} in a row</span>` : ""
    }</td>`
  }
  if (b.status === "open") {
    return html`<td class="breaker open" data-breaker="open"><span class="badge down">OPEN</span> ${until(b.reopensAt, "half-open in", "half-open now")}</td>`
  }
  return html`<td class="breaker half-open" data-breaker="half-open"><span class="badge warn">half-open</span> <span class="why">${
    b.probeInFlight ? "probe in flight" : "next request probes"
  }</span></td>`
}

/** One cell per slot: reserved per lane (in use / free), then the shared pool (in use / free). */
const slotBar = (h: HostHealthView) => {
  const cells: Array<Html> = []
  const words: Array<string> = []
  for (const [lane, r] of Object.entries(h.slots.reserved)) {
    for (let i = 0; i < r.total; i++) cells.push(html`<span class="slot ${i < r.inUse ? "used" : "reserved"}" title="reserved for ${lane}${i < r.inUse ? ", in use" : ", free"}"></span>`)
    words.push(`${lane} reserved ${r.inUse}/${r.total}`)
  }
  for (let i = 0; i < h.slots.shared.total; i++) {
    cells.push(html`<span class="slot ${i < h.slots.shared.inUse ? "used" : "free"}" title="shared${i < h.slots.shared.inUse ? ", in use" : ", free"}"></span>`)
  }
  words.push(`shared ${h.slots.shared.inUse}/${h.slots.shared.total}`)
  const label = `${h.slots.inUse} of ${h.slots.total} slots in use: ${words.join(", ")}`
  return html`<td class="slots"><span class="slotbar" role="img" aria-label="${label}">${cells}</span> <span class="num">${h.slots.inUse}/${h.slots.total}</span></td>`
}

const maintenanceCell = (h: HostHealthView) =>
  h.maintenance.open
    ? html`<td class="maint"><span class="badge maint">MAINT</span> ${until(h.maintenance.until, "ends in", "ending")}<span class="why">${h.maintenance.reason ?? ""}</span></td>`
    : html`<td class="maint"><span class="dim">—</span></td>`

const residentCell = (h: HostHealthView, now: number) =>
  h.resident === null
    ? html`<td class="resident"><span class="dim">not polled</span></td>`
    : h.resident.length === 0
    ? html`<td class="resident"><span class="dim">none</span></td>`
    : html`<td class="resident">${
      h.resident.map((r) => {
        const exp = r.expiresAt === null ? NaN : Date.parse(r.expiresAt)
        // Ollama says "forever" with a date centuries ahead.
        const forever = !Number.isFinite(exp) || exp - now > 365 * 86_400_000
        return html`<span class="chip">${r.name}${
          forever ? html` <small>kept</small>` : html` <small class="countdown" data-until="${exp}" data-prefix="exp" data-done="expired">exp ${clockTime(exp)}</small>`
        }</span>`
      })
    }</td>`

/** The (host, lane) cell: the host's place in the lane's route, its reserved slots, keep-warm. */
const laneCell = (config: GatewayConfig, lane: string, hostName: string, h: HostHealthView, warm: ReadonlyArray<KeepWarmEvent>) => {
  const l = config.lanes[lane]!
  const index = l.route.findIndex((s) => s.host === hostName)
  const r = h.slots.reserved[lane]
  const keeps = l.keepWarm.includes(hostName)
  if (index < 0 && r === undefined && !keeps) return html`<td class="lane-cell"><span class="dim">·</span></td>`
  const parts: Array<Html> = []
  if (index >= 0) {
    const step = l.route[index]!
    parts.push(html`<span class="step" title="step ${index + 1} of the route, timeout ${step.timeout} ms${step.when === "unavailable" ? ", only if the hosts before are unavailable" : ""}">#${index + 1}${step.when === "unavailable" ? "?" : ""}</span>`)
  }
  if (r !== undefined) parts.push(html`<span class="res" title="reserved slots in use">R ${r.inUse}/${r.total}</span>`)
  if (keeps) {
    const resident = (h.resident ?? []).some((m) => sameModel(m.name, l.model))
    const last = warm.find((w) => w.host === hostName && w.lane === lane)
    const state = resident ? "warm" : last?.type === "KeepWarmFailed" ? "load failed" : last?.type === "KeepWarmSkipped" ? "skipped" : "cold"
    const cls = resident ? "ok" : state === "cold" ? "warn" : "down"
    const detail = last === undefined ? "no keep-warm event today" : `${last.type} at ${clockTime(last.at)}${last.message !== null ? `: ${last.message}` : ""}`
    parts.push(html`<span class="kw ${cls}" title="${detail}">${state}</span>`)
  }
  return html`<td class="lane-cell">${join(parts, " ")}</td>`
}

export const renderBoard = (view: BoardView, config: GatewayConfig, warm: ReadonlyArray<KeepWarmEvent>, now: number): Html => {
  const laneNames = Object.keys(config.lanes)
  const hosts = Object.entries(view.hosts)
  const up = hosts.filter(([, h]) => h.status === "up").length
  const unsafe = Object.values(view.lanes).filter((l) => !l.safe).length
  return html`<div id="board" data-now="${now}">
<p class="strip">
  <span><b>${up}/${hosts.length}</b> hosts up</span>
  <span><b>${laneNames.length - unsafe}/${laneNames.length}</b> lanes safe</span>
  <span>journal <span class="badge ${view.journal.status === "ok" ? "ok" : "down"}">${view.journal.status}</span>${view.journal.spilled > 0 ? ` ${view.journal.spilled} spilled` : ""}</span>
  <span>async runs queued or running <b>${view.asyncRuns.queuedOrRunning}</b></span>
  <span>checked <time datetime="${view.checkedAt ?? ""}">${clockTime(now)}Z</time></span>
</p>
<table class="grid board">
<caption>Hosts × lanes</caption>
<thead><tr><th scope="col">host</th><th scope="col">state</th><th scope="col">breaker</th><th scope="col">slots</th><th scope="col">maintenance</th><th scope="col">resident</th><th scope="col">latency</th>${
    laneNames.map((l) => html`<th scope="col" class="lane-head">${l}</th>`)
  }</tr></thead>
<tbody>${
    hosts.map(([name, h]) =>
      html`<tr data-host="${name}" class="${h.maintenance.open ? "in-maint" : h.status}">
<th scope="row">${name}${h.protected ? html` <span class="tag" title="protected: heavy models denied outside maintenance">prot</span>` : ""}</th>
${statusCell(h)}${breakerCell(h)}${slotBar(h)}${maintenanceCell(h)}${residentCell(h, now)}
<td class="num">${h.lastLatencyMs === null ? "—" : `${h.lastLatencyMs} ms`}${h.version !== null ? html`<span class="why">v${h.version}</span>` : ""}</td>
${laneNames.map((l) => laneCell(config, l, name, h, warm))}
</tr>`
    )
  }</tbody>
</table>
<p class="legend" aria-hidden="true"><span class="slot used"></span> in use <span class="slot reserved"></span> reserved for a lane, free <span class="slot free"></span> shared, free · #n route step (? only when the ones before are unavailable) · R reserved in use/total · warm/cold keep-warm</p>
<table class="grid lanes">
<caption>Lanes</caption>
<thead><tr><th scope="col">lane</th><th scope="col">safety</th><th scope="col">mode</th><th scope="col">model</th><th scope="col">would try</th><th scope="col">why</th></tr></thead>
<tbody>${
    Object.entries(view.lanes).map(([name, l]) =>
      html`<tr data-lane="${name}">
<th scope="row">${name}</th>
<td><span class="badge ${l.safe ? "ok" : "down"}">${l.safe ? "safe" : "UNSAFE"}</span></td>
<td>${l.mode}${l.modeChange === null ? "" : html` <span class="tag" title="set by the operator (${l.modeChange.by}, ${l.modeChange.at}): ${l.modeChange.reason}">operator</span>`}${l.async ? " · async" : ""}</td>
<td>${l.model ?? html`<span class="dim">paid</span>`}</td>
<td>${l.planned.length === 0 ? html`<span class="dim">—</span>` : l.planned.join(" → ")}</td>
<td class="reason">${l.reasons.join("; ")}</td>
</tr>`
    )
  }</tbody>
</table>
</div>`
}

/** The board fragment as of now; `warm` is the (cached) keep-warm read. */
export const boardFragment = (warm: Effect.Effect<ReadonlyArray<KeepWarmEvent>>) =>
  Effect.gen(function*() {
    const gateway = yield* Gateway
    const view = yield* healthView
    const events = yield* warm
    return renderBoard(view, gateway.config, events, yield* Clock.currentTimeMillis)
  })
