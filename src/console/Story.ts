/**
 * A run's story, from the journal's `explain` (replay/Explain.ts): a one-line verdict, the
 * attempts as bars on a time axis (SVG, so no inline style is needed), each routing decision with
 * the host snapshot plan() was given, then every event. Reachable by run id and by trace id; a
 * trace shows each of its runs in turn.
 */
import { decodeEvent, type EventOf } from "../domain/Events.ts"
import type { RunExplanation, Step } from "../replay/Explain.ts"
import { clockTime, type Html, html, isoTime, seconds, usd } from "./Html.ts"

interface Bar {
  readonly attempt: number
  readonly host: string
  readonly start: number
  end: number | null
  outcome: "ok" | "failed" | "open"
  label: string
}

/** Attempts as [start, end] from AttemptStarted to its AttemptFailed / AttemptSucceeded. */
export const attemptBars = (steps: ReadonlyArray<Step>): ReadonlyArray<Bar> => {
  const bars: Array<Bar> = []
  for (const s of steps) {
    if (s.host !== null) continue
    const e = decodeEvent(s.type, s.data)
    if (e._tag === "AttemptStarted") {
      bars.push({ attempt: e.attempt, host: e.host, start: s.offsetMs, end: null, outcome: "open", label: "running" })
    } else if (e._tag === "AttemptFailed" || e._tag === "AttemptSucceeded") {
      const host = e.host ?? e.provider ?? "?"
      const bar = [...bars].reverse().find((b) => b.host === host && b.end === null)
      if (bar === undefined) continue
      bar.end = s.offsetMs
      bar.outcome = e._tag === "AttemptSucceeded" ? "ok" : "failed"
      bar.label = e._tag === "AttemptSucceeded" ? "answered" : e.kind
    }
  }
  return bars
}

/** "fell back to gcp-b: gcp-a timeout after 0.30s" — what an operator wants to know first. */
export const verdict = (r: RunExplanation): string => {
  const run = r.run
  const misses = run.misses.map((m) => m.text).join("; ")
  if (run.status === "completed") {
    return run.misses.length > 0
      ? `fell back to ${run.endpoint ?? "?"}: ${misses}`
      : `answered by ${run.endpoint ?? "?"} on the first try in ${seconds(run.durationMs)}`
  }
  if (run.status === "failed") {
    return `failed with ${run.errorStatus ?? "?"} ${run.errorCode ?? ""}: ${run.error ?? ""}${misses !== "" ? ` (${misses})` : ""}`
  }
  return `still running: ${run.attempts} attempt${run.attempts === 1 ? "" : "s"} so far`
}

/** Round axis steps: 1, 2, 5 × 10^n ms. */
const tickStep = (spanMs: number): number => {
  const raw = spanMs / 6
  const p = 10 ** Math.floor(Math.log10(Math.max(raw, 1)))
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? 10 * p
}

const timeline = (steps: ReadonlyArray<Step>): Html => {
  const bars = attemptBars(steps)
  const last = steps.length === 0 ? 0 : steps[steps.length - 1]!.offsetMs
  const span = Math.max(last, ...bars.map((b) => b.end ?? last), 1)
  const width = 900
  const left = 150
  const row = 24
  const height = 30 + bars.length * row + 10
  // Room on the right for the last bar's label.
  const x = (ms: number) => left + ((width - left - 130) * ms) / span
  const step = tickStep(span)
  const ticks: Array<number> = []
  for (let t = 0; t <= span + 0.0001; t += step) ticks.push(t)
  const marks = steps.filter((s) => s.host !== null && s.type.startsWith("Breaker"))
  const summary = bars.map((b) => `attempt ${b.attempt} on ${b.host}: ${b.label} from +${seconds(b.start)} to +${seconds(b.end)}`).join("; ")
  return html`<svg class="timeline" viewBox="0 0 ${width} ${height}" role="img" aria-label="${bars.length === 0 ? "no attempts" : summary}">
${ticks.map((t) => html`<line class="tick" x1="${x(t)}" x2="${x(t)}" y1="18" y2="${height - 6}"></line><text class="axis" x="${x(t)}" y="12" text-anchor="middle">+${seconds(t)}</text>`)}
${bars.map((b, i) => {
    const y = 24 + i * row
    const end = b.end ?? span
    return html`<g class="bar ${b.outcome}" data-attempt="${b.attempt}" data-host="${b.host}" data-outcome="${b.outcome}">
<text class="label" x="6" y="${y + 13}">#${b.attempt} ${b.host}</text>
<rect x="${x(b.start)}" y="${y}" width="${Math.max(2, x(end) - x(b.start))}" height="${row - 8}" rx="2"></rect>
<text class="label" x="${x(end) + 4}" y="${y + 13}">${b.label} ${seconds(end - b.start)}</text>
</g>`
  })}
${marks.map((m) => html`<line class="mark" x1="${x(m.offsetMs)}" x2="${x(m.offsetMs)}" y1="18" y2="${height - 6}"><title>${m.text}</title></line>`)}
</svg>`
}

const bool = (v: boolean) => (v ? "yes" : "no")

/** The host snapshot a RouteDecided was made on (its plan() input), and what plan() made of it. */
const decision = (s: Step, d: EventOf<"RouteDecided">): Html => {
  const attempts = d.plan.attempts.map((a) => a.host)
  const skipped = new Map(d.plan.skipped.map((k) => [k.host, k.reason.kind]))
  return html`<table class="grid snapshot">
<caption>Decided at ${clockTime(s.at)} (+${seconds(s.offsetMs)}) on this snapshot: try ${attempts.length === 0 ? "nothing" : attempts.join(" → ")}</caption>
<thead><tr><th scope="col">host</th><th scope="col">health</th><th scope="col">breaker</th><th scope="col">slots in use / total (free for lane)</th><th scope="col">maintenance</th><th scope="col">protected</th><th scope="col">plan</th></tr></thead>
<tbody>${
    Object.entries(d.input.hosts).map(([name, h]) => {
      const b = h.breaker
      const sl = h.slots
      const outcome = attempts.includes(name) ? `attempt ${attempts.indexOf(name) + 1}` : skipped.has(name) ? `skipped: ${skipped.get(name)}` : "not on route"
      return html`<tr><th scope="row">${name}</th><td>${h.health}</td><td>${b.status}${b.reopensAt !== null ? ` until ${clockTime(b.reopensAt)}` : ""}${b.probeInFlight ? " (probe in flight)" : ""}</td>
<td class="num">${sl.inUse} / ${sl.total} (${sl.freeForLane})</td><td>${bool(h.maintenance.open)}</td><td>${bool(h.protected)}</td><td>${outcome}</td></tr>`
    })
  }</tbody>
</table>`
}

const eventRows = (steps: ReadonlyArray<Step>): Html =>
  html`${
    steps.map((s) =>
      html`<tr class="${s.host !== null ? "host-event" : ""}" data-type="${s.type}">
<td><time datetime="${new Date(s.at).toISOString()}">${new Date(s.at).toISOString().slice(11, 23)}</time></td>
<td class="num">+${(s.offsetMs / 1000).toFixed(3)}s</td>
<td>${s.host !== null ? `host ${s.host}` : "run"}</td>
<td><code>${s.type}</code></td>
<td>${s.text}<details><summary>data</summary><pre>${JSON.stringify(s.data, null, 2)}</pre></details></td>
</tr>`
    )
  }`

export const runStory = (r: RunExplanation, index: number, total: number, asked: boolean): Html => {
  const run = r.run
  const cls = run.status === "failed" ? "down" : run.misses.length > 0 ? "warn" : run.status === "completed" ? "ok" : "unknown"
  return html`<section class="story" data-run="${run.runId}" aria-labelledby="run-${run.runId}">
<h2 id="run-${run.runId}">Run ${index + 1} of ${total}: <code>${run.runId}</code>${asked ? " (the run asked about)" : ""}</h2>
<p class="verdict ${cls}"><span class="badge ${cls}">${run.status}</span> <span class="verdict-text">${verdict(r)}</span></p>
<dl class="facts">
<dt>lane</dt><dd>${run.lane ?? "—"}</dd><dt>project</dt><dd>${run.projectId ?? "—"}</dd><dt>intent</dt><dd>${run.intent ?? "—"}</dd>
<dt>model</dt><dd>${run.requestedModel ?? "(none)"} → ${run.assignedModel ?? "?"}${run.model !== null && run.model !== run.assignedModel ? ` (answered by ${run.model})` : ""}</dd>
<dt>trace</dt><dd>${run.traceId === null ? "—" : html`<a href="/console/traces/${run.traceId}">${run.traceId}</a>`}</dd>
<dt>started</dt><dd>${isoTime(run.startedAt)}</dd><dt>took</dt><dd>${seconds(run.durationMs)}</dd>
<dt>tokens</dt><dd>${run.inputTokens ?? "?"} in / ${run.outputTokens ?? "?"} out</dd><dt>cost</dt><dd>${run.status === "running" ? "—" : usd(run.costUsd)}</dd>
</dl>
<h3>Attempts</h3>
${timeline(r.steps)}
<h3>Decisions and the host snapshot each was made on</h3>
${r.steps.map((s) => [s, decodeEvent(s.type, s.data)] as const).flatMap(([s, e]) => (e._tag === "RouteDecided" ? [decision(s, e)] : []))}
<h3>Every event</h3>
<table class="grid events">
<caption>${r.steps.length} events of the run and of its hosts while it ran</caption>
<thead><tr><th scope="col">time (UTC)</th><th scope="col">offset</th><th scope="col">stream</th><th scope="col">type</th><th scope="col">what happened</th></tr></thead>
<tbody>${eventRows(r.steps)}</tbody>
</table>
</section>`
}
