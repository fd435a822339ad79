/**
 * The "Fallbacks and cost" and "Shadow" pages: chart frames that console.js fills with uPlot from
 * the series (Series.ts) carried in a data attribute (no inline script under the CSP) and refreshed
 * from /console/api/…; beside every chart a table of the same numbers, which is also what a screen
 * reader gets.
 */
import { clockTime, html, isoTime, usd } from "./Html.ts"
import { type CostSeries, type ShadowSeries, total, windows } from "./Series.ts"

export const costDimensions = ["lane", "provider", "project"] as const
export type CostDimension = (typeof costDimensions)[number]

const windowLinks = (path: string, current: string, extra: string) =>
  html`<nav class="windows" aria-label="Time window">window: ${
    Object.keys(windows).map((w) => html`<a href="${path}?window=${w}${extra}"${w === current ? html` aria-current="true"` : ""}>${w}</a> `)
  }</nav>`

const totalsTable = (caption: string, series: Readonly<Record<string, ReadonlyArray<number | null>>>, format: (v: number) => string) => {
  const entries = Object.entries(series).map(([k, v]) => [k, total(v)] as const).sort((a, b) => b[1] - a[1])
  return html`<table class="grid totals"><caption>${caption}</caption><tbody>${
    entries.length === 0
      ? html`<tr><td class="dim">nothing in this window</td></tr>`
      : entries.map(([k, v]) => html`<tr><th scope="row">${k}</th><td class="num">${format(v)}</td></tr>`)
  }</tbody></table>`
}

const marksList = (marks: CostSeries["marks"]) =>
  marks.trips.length === 0 && marks.bands.length === 0
    ? html`<p class="dim">No breaker trips or maintenance windows in this window.</p>`
    : html`<ul class="marks">${marks.trips.map((m) => html`<li><span class="key trip"></span>${clockTime(m.t * 1000)} ${m.text}</li>`)}${
      marks.bands.map((b) => html`<li><span class="key band"></span>${clockTime(b.from * 1000)}–${clockTime(b.to * 1000)} ${b.text}</li>`)
    }</ul>`

const chart = (id: string, title: string, options: { readonly series: string; readonly unit?: string; readonly dimension?: string }) =>
  html`<figure class="chart-box"><figcaption>${title}</figcaption><div class="chart" id="chart-${id}" data-chart="${id}" data-series="${options.series}" data-unit="${options.unit ?? ""}" aria-hidden="true"></div></figure>`

const count = (v: number) => String(Math.round(v))

export const costPage = (s: CostSeries, dimension: CostDimension) => {
  const budget = s.budget
  return html`<h1>Fallbacks and cost</h1>
<div class="toolbar">${windowLinks("/console/cost", s.window, `&by=${dimension}`)}
<nav class="windows" aria-label="Cost grouped by">cost by: ${
    costDimensions.map((d) => html`<a href="/console/cost?window=${s.window}&by=${d}"${d === dimension ? html` aria-current="true"` : ""}>${d}</a> `)
  }</nav>
<span class="dim">buckets of ${s.axis.bucketMs / 60_000 >= 1 ? `${s.axis.bucketMs / 60_000} min` : `${s.axis.bucketMs / 1000} s`} · red lines: breaker trips · shaded: maintenance</span></div>
<div id="series" data-kind="cost" data-src="/console/api/cost?window=${s.window}" data-by="${dimension}" data-json="${JSON.stringify(s)}"></div>
<div class="charts">
<section class="pair">${chart("requests", "Requests finished per bucket", { series: "requests" })}${totalsTable("Requests", s.requests, count)}</section>
<section class="pair">${chart("fallbacks", "Fallbacks by reason (first miss)", { series: "fallbacks" })}${totalsTable("Fallbacks by reason", s.fallbacks, count)}</section>
<section class="pair">${chart("cost", `Cost by ${dimension} (USD per bucket)`, { series: `cost.${dimension}`, unit: "$" })}${totalsTable(`Cost by ${dimension}`, s.cost[dimension], usd)}</section>
<section class="pair">${
    budget === null
      ? html`<figure class="chart-box"><figcaption>Budget</figcaption><p class="dim">No budget is configured (no paid lanes).</p></figure>`
      : chart("budget", `Budget burn-down this ${budget.period}: remaining of ${usd(budget.capUsd)} until the hard kill`, { series: "budget", unit: "$" })
  }${
    budget === null ? "" : html`<table class="grid totals"><caption>Budget this ${budget.period}</caption><tbody>
<tr><th scope="row">cap (hard kill at)</th><td class="num">${usd(budget.capUsd)}</td></tr>
<tr><th scope="row">spent or reserved</th><td class="num">${usd(budget.spentUsd)}</td></tr>
<tr><th scope="row">remaining</th><td class="num">${usd(Math.max(0, budget.capUsd - budget.spentUsd))}</td></tr>
<tr><th scope="row">period</th><td>${isoTime(budget.from * 1000)} → ${isoTime(budget.to * 1000)}</td></tr>
${budget.kills.map((k) => html`<tr><th scope="row">${clockTime(k.t * 1000)}</th><td>${k.text}</td></tr>`)}
</tbody></table>`
  }</section>
</div>
<h2>Marked on the time axis</h2>
${marksList(s.marks)}`
}

export const shadowPage = (s: ShadowSeries) =>
  html`<h1>Shadow agreement</h1>
<div class="toolbar">${windowLinks("/console/shadow", s.window, "")}<span class="dim">share of compared shadow decisions that chose what the legacy path chose</span></div>
<div id="series" data-kind="shadow" data-src="/console/api/shadow?window=${s.window}" data-json="${JSON.stringify(s)}"></div>
<section class="pair">${chart("agreement", "Agreement per lane (1 = all agreed)", { series: "agreement" })}${
    totalsTable("Decisions compared", s.compared, count)
  }</section>
<h2>Disagreements</h2>
<table class="grid disagreements">
<caption>Latest ${s.disagreements.length} disagreements in the window, newest first</caption>
<thead><tr><th scope="col">time</th><th scope="col">lane</th><th scope="col">gateway chose</th><th scope="col">legacy chose</th><th scope="col">why they differ</th><th scope="col">trace</th></tr></thead>
<tbody>${
    s.disagreements.length === 0
      ? html`<tr><td colspan="6" class="dim">no disagreements in this window</td></tr>`
      : s.disagreements.map((d) =>
        html`<tr data-lane="${d.lane}"><td>${clockTime(d.at)}</td><td>${d.lane}</td><td>${d.gateway}</td><td>${d.legacy}</td><td class="reason">${d.reasons.join("; ")}</td><td>${
          d.traceId === null ? "—" : html`<a href="/console/traces/${d.traceId}">${d.traceId.slice(0, 8)}</a>`
        }</td></tr>`
      )
  }</tbody>
</table>`

