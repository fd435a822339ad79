/**
 * Live metrics for `GET /metrics` (Prometheus text format 0.0.4).
 *
 * Counters and histograms live in memory and are updated on the request path from the run's facts
 * (see RunObserver.ts): each update is a label string and one or two map lookups, never a database
 * query. Gauges (breaker state, slots, admission depth, journal queue, projector lag) are read from
 * the actors when the endpoint is scraped.
 *
 * Names follow OpenTelemetry's GenAI conventions translated the way the OTel Prometheus exporter
 * does (dots → underscores, unit suffix): `gen_ai.client.operation.duration` (s) becomes
 * `gen_ai_client_operation_duration_seconds`, `gen_ai.client.token.usage` ({token}) becomes
 * `gen_ai_client_token_usage`. Their buckets are the conventions' advice.
 *
 * The label sets match the `metrics` projection (src/projections/Metrics.ts), so the live numbers
 * and the journal-derived ones can be compared: a run's endpoint is the host or provider that
 * answered ("none" when none did), its outcome "success" or the error's tag.
 */
import { Effect } from "effect"

/** `gen_ai.client.operation.duration` and `…time_to_first_chunk`: 0.01 s … 81.92 s, doubling. */
export const durationBuckets: ReadonlyArray<number> = Array.from({ length: 14 }, (_, i) => 0.01 * 2 ** i)
/** `gen_ai.client.token.usage`: 1, 4, 16, … ×4. */
export const tokenBuckets: ReadonlyArray<number> = Array.from({ length: 14 }, (_, i) => 4 ** i)

export type Labels = Readonly<Record<string, string>>

const escapeLabel = (value: string): string =>
  /[\\"\n]/.test(value) ? value.replace(/\\/g, "\\\\").replace(/"/g, "\\\"").replace(/\n/g, "\\n") : value

/** `a="x",b="y"`: the series key and, as it is, the text between the braces. */
export const labelText = (labels: Labels): string => {
  let out = ""
  for (const key in labels) {
    out += `${out === "" ? "" : ","}${key}="${escapeLabel(labels[key]!)}"`
  }
  return out
}

const formatNumber = (n: number): string =>
  Number.isNaN(n) ? "NaN" : n === Infinity ? "+Inf" : n === -Infinity ? "-Inf" : String(n)

/** Bucket bounds as Prometheus prints them (`0.01`, `0.64`, `81.92`; no float noise). */
const formatBound = (n: number): string => String(Number(n.toPrecision(12)))

interface HistogramSeries {
  readonly labels: string
  /** Non-cumulative counts per bound, then the overflow (+Inf) bucket. */
  readonly counts: Array<number>
  sum: number
  count: number
}

class Counter {
  readonly series = new Map<string, number>()
  constructor(readonly name: string, readonly help: string) {}
  inc(labels: string, by = 1) {
    this.series.set(labels, (this.series.get(labels) ?? 0) + by)
  }
  render(out: Array<string>) {
    out.push(`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`)
    for (const [labels, value] of this.series) out.push(`${this.name}{${labels}} ${formatNumber(value)}`)
  }
}

class Histogram {
  readonly series = new Map<string, HistogramSeries>()
  private readonly bounds: ReadonlyArray<string>
  constructor(readonly name: string, readonly help: string, readonly buckets: ReadonlyArray<number>) {
    this.bounds = buckets.map(formatBound)
  }
  observe(labels: string, value: number) {
    let s = this.series.get(labels)
    if (s === undefined) {
      s = { labels, counts: new Array<number>(this.buckets.length + 1).fill(0), sum: 0, count: 0 }
      this.series.set(labels, s)
    }
    let i = 0
    while (i < this.buckets.length && value > this.buckets[i]!) i++
    s.counts[i]!++
    s.sum += value
    s.count++
  }
  render(out: Array<string>) {
    out.push(`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`)
    for (const s of this.series.values()) {
      const sep = s.labels === "" ? "" : ","
      let cumulative = 0
      for (let i = 0; i < this.bounds.length; i++) {
        cumulative += s.counts[i]!
        out.push(`${this.name}_bucket{${s.labels}${sep}le="${this.bounds[i]}"} ${cumulative}`)
      }
      out.push(`${this.name}_bucket{${s.labels}${sep}le="+Inf"} ${s.count}`)
      out.push(`${this.name}_sum{${s.labels}} ${formatNumber(s.sum)}`)
      out.push(`${this.name}_count{${s.labels}} ${s.count}`)
    }
  }
}

/** A gauge family read at scrape time. */
export interface Gauge {
  readonly name: string
  readonly help: string
  /** Default "gauge"; "counter" for a monotonic value another service keeps (its name ends in _total). */
  readonly type?: "gauge" | "counter"
  readonly samples: ReadonlyArray<{ readonly labels: Labels; readonly value: number }>
}

/** The GenAI attributes that label the `gen_ai_*` series. */
export interface GenAiLabels {
  /** chat | text_completion | embeddings */
  readonly operation: string
  /** ollama | gcp.gemini | anthropic */
  readonly provider: string
  readonly model: string
  readonly lane: string
}

const genAi = (g: GenAiLabels) => `gen_ai_operation_name="${escapeLabel(g.operation)}",gen_ai_provider_name="${escapeLabel(g.provider)}",gen_ai_request_model="${escapeLabel(g.model)}",awooop_lane="${escapeLabel(g.lane)}"`

export const make = () => {
  const duration = new Histogram(
    "gen_ai_client_operation_duration_seconds",
    "GenAI operation duration: each upstream attempt (Ollama host or paid provider), by outcome.",
    durationBuckets
  )
  const firstChunk = new Histogram(
    "gen_ai_client_operation_time_to_first_chunk_seconds",
    "Time from the start of a streaming attempt to its first chunk.",
    durationBuckets
  )
  const tokens = new Histogram(
    "gen_ai_client_token_usage",
    "Tokens per completed request as the model reported them, by gen_ai_token_type (input|output).",
    tokenBuckets
  )
  const requests = new Counter("awooop_requests_total", "Requests by lane, answering endpoint (none when none answered) and outcome (success or the error).")
  const fallbacks = new Counter(
    "awooop_fallbacks_total",
    "Requests answered by a later host than the route's first, or by a paid provider; reason is the first miss's kind or \"paid\"."
  )
  const cost = new Counter("awooop_cost_usd_total", "Cost in USD of answered requests, by lane, provider tier and endpoint.")
  const breakerTransitions = new Counter("awooop_breaker_transitions_total", "Circuit breaker transitions per host.")

  return {
    /** One upstream attempt ended (`errorType` null: it answered). */
    attempt: (g: GenAiLabels, endpoint: string, errorType: string | null, seconds: number) =>
      duration.observe(
        `${genAi(g)},awooop_endpoint="${escapeLabel(endpoint)}"${errorType === null ? "" : `,error_type="${escapeLabel(errorType)}"`}`,
        seconds
      ),
    firstChunk: (g: GenAiLabels, endpoint: string, seconds: number) =>
      firstChunk.observe(`${genAi(g)},awooop_endpoint="${escapeLabel(endpoint)}"`, seconds),
    tokens: (g: GenAiLabels, input: number | null, output: number | null) => {
      const base = genAi(g)
      if (input !== null) tokens.observe(`${base},gen_ai_token_type="input"`, input)
      if (output !== null) tokens.observe(`${base},gen_ai_token_type="output"`, output)
    },
    request: (lane: string, endpoint: string, outcome: string) =>
      requests.inc(`lane="${escapeLabel(lane)}",endpoint="${escapeLabel(endpoint)}",outcome="${escapeLabel(outcome)}"`),
    fallback: (lane: string, endpoint: string, reason: string) =>
      fallbacks.inc(`lane="${escapeLabel(lane)}",endpoint="${escapeLabel(endpoint)}",reason="${escapeLabel(reason)}"`),
    cost: (lane: string, tier: string, endpoint: string, usd: number) =>
      cost.inc(`lane="${escapeLabel(lane)}",provider_tier="${escapeLabel(tier)}",endpoint="${escapeLabel(endpoint)}"`, usd),
    breakerTransition: (host: string, transition: string) =>
      breakerTransitions.inc(`host="${escapeLabel(host)}",transition="${escapeLabel(transition)}"`),
    /** The exposition: the live families, then the gauges read for this scrape. */
    render: (gauges: ReadonlyArray<Gauge>): string => {
      const out: Array<string> = []
      for (const family of [duration, firstChunk, tokens]) family.render(out)
      for (const family of [requests, fallbacks, cost, breakerTransitions]) family.render(out)
      for (const g of gauges) {
        out.push(`# HELP ${g.name} ${g.help}`, `# TYPE ${g.name} ${g.type ?? "gauge"}`)
        for (const s of g.samples) out.push(`${g.name}{${labelText(s.labels)}} ${formatNumber(s.value)}`)
      }
      return out.join("\n") + "\n"
    }
  }
}

export type MetricsRegistry = ReturnType<typeof make>

/** One registry per process; the lanes write to it and `GET /metrics` reads it. */
export class Metrics extends Effect.Service<Metrics>()("awooop/Metrics", {
  sync: make
}) {}
