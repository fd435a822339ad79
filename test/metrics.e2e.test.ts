/**
 * GET /metrics against the real gateway: the exposition parses with a strict Prometheus text-format
 * parser (written here: TYPE before samples, valid names and escapes, no duplicate series, histogram
 * buckets cumulative with le="+Inf" equal to _count), and its counters move as requests are sent.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { newTraceId, startTestGateway, type TestGateway } from "./support/TestGateway.ts"

// ---------------------------------------------------------------------------------------------
// A strict parser for the Prometheus text exposition format 0.0.4

type MetricType = "counter" | "gauge" | "histogram" | "summary" | "untyped"

interface Sample {
  readonly name: string
  readonly labels: Readonly<Record<string, string>>
  readonly value: number
}

interface Family {
  readonly name: string
  readonly type: MetricType
  help: string | null
  readonly samples: Array<Sample>
}

const metricName = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const labelName = /^[a-zA-Z_][a-zA-Z0-9_]*$/

const parseValue = (text: string, where: string): number => {
  if (text === "+Inf") return Infinity
  if (text === "-Inf") return -Infinity
  if (text === "NaN") return NaN
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`${where}: bad value ${JSON.stringify(text)}`)
  return Number(text)
}

/** Parses `{a="x",b="y"}` starting at `i` (on the "{"); returns the labels and the index after "}". */
const parseLabels = (line: string, i: number, where: string): [Record<string, string>, number] => {
  const labels: Record<string, string> = {}
  i++ // {
  while (line[i] !== "}") {
    const eq = line.indexOf("=", i)
    if (eq < 0) throw new Error(`${where}: label without "="`)
    const name = line.slice(i, eq)
    if (!labelName.test(name)) throw new Error(`${where}: bad label name ${JSON.stringify(name)}`)
    if (name in labels) throw new Error(`${where}: label ${name} twice`)
    if (line[eq + 1] !== "\"") throw new Error(`${where}: label value not quoted`)
    let value = ""
    let j = eq + 2
    for (;;) {
      const c = line[j]
      if (c === undefined) throw new Error(`${where}: unterminated label value`)
      if (c === "\"") break
      if (c === "\\") {
        const n = line[j + 1]
        if (n === "\\") value += "\\"
        else if (n === "\"") value += "\""
        else if (n === "n") value += "\n"
        else throw new Error(`${where}: bad escape \\${n}`)
        j += 2
      } else {
        value += c
        j++
      }
    }
    labels[name] = value
    i = j + 1
    if (line[i] === ",") i++
    else if (line[i] !== "}") throw new Error(`${where}: expected "," or "}" after a label`)
  }
  return [labels, i + 1]
}

const familyOf = (sample: string, families: Map<string, Family>): Family | undefined => {
  const direct = families.get(sample)
  if (direct !== undefined) return direct
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    if (sample.endsWith(suffix)) {
      const f = families.get(sample.slice(0, -suffix.length))
      if (f !== undefined && (f.type === "histogram" || (f.type === "summary" && suffix !== "_bucket"))) return f
    }
  }
  return undefined
}

export const parsePrometheus = (text: string): Map<string, Family> => {
  if (!text.endsWith("\n")) throw new Error("the exposition must end with a newline")
  const families = new Map<string, Family>()
  const seenTypes = new Set<string>()
  const seen = new Set<string>()
  const lines = text.split("\n").slice(0, -1)
  lines.forEach((line, n) => {
    const where = `line ${n + 1}`
    if (line.trim() === "") return
    if (line.startsWith("#")) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line)
      if (m === null) return // a plain comment
      const [, kind, name, rest] = m as unknown as [string, string, string, string]
      if (!metricName.test(name)) throw new Error(`${where}: bad metric name ${name}`)
      if (kind === "TYPE") {
        if (families.has(name) && families.get(name)!.samples.length > 0) throw new Error(`${where}: TYPE after samples of ${name}`)
        if (!["counter", "gauge", "histogram", "summary", "untyped"].includes(rest)) throw new Error(`${where}: bad type ${rest}`)
        if (families.has(name) && seenTypes.has(name)) throw new Error(`${where}: TYPE twice for ${name}`)
        seenTypes.add(name)
        families.set(name, { name, type: rest as MetricType, help: families.get(name)?.help ?? null, samples: [] })
      } else {
        const f = families.get(name)
        if (f?.help != null) throw new Error(`${where}: HELP twice for ${name}`)
        if (f === undefined) families.set(name, { name, type: "untyped", help: rest, samples: [] })
        else f.help = rest
      }
      return
    }
    const brace = line.indexOf("{")
    const space = line.indexOf(" ")
    const nameEnd = brace >= 0 && brace < space ? brace : space
    const name = line.slice(0, nameEnd)
    if (!metricName.test(name)) throw new Error(`${where}: bad metric name ${JSON.stringify(name)}`)
    let labels: Record<string, string> = {}
    let i = nameEnd
    if (line[i] === "{") [labels, i] = parseLabels(line, i, where)
    if (line[i] !== " ") throw new Error(`${where}: expected a space before the value`)
    const parts = line.slice(i + 1).split(" ")
    if (parts.length < 1 || parts.length > 2) throw new Error(`${where}: expected a value and an optional timestamp`)
    const value = parseValue(parts[0]!, where)
    const family = familyOf(name, families)
    if (family === undefined || !seenTypes.has(family.name)) throw new Error(`${where}: sample ${name} before its TYPE`)
    if ((family.type === "counter") && !(value >= 0)) throw new Error(`${where}: negative counter`)
    if (name.endsWith("_bucket") && family.type === "histogram" && labels.le === undefined) throw new Error(`${where}: bucket without le`)
    const key = `${name}{${Object.entries(labels).sort().map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(",")}}`
    if (seen.has(key)) throw new Error(`${where}: duplicate series ${key}`)
    seen.add(key)
    family.samples.push({ name, labels, value })
  })
  // Histograms: cumulative buckets ending in +Inf, which equals _count.
  for (const f of families.values()) {
    if (f.type !== "histogram") continue
    const series = new Map<string, Array<Sample>>()
    for (const s of f.samples) {
      const { le: _le, ...rest } = s.labels
      const k = JSON.stringify(Object.entries(rest).sort())
      series.set(k, [...(series.get(k) ?? []), s])
    }
    for (const [k, samples] of series) {
      const buckets = samples.filter((s) => s.name === `${f.name}_bucket`)
      const count = samples.find((s) => s.name === `${f.name}_count`)
      const sum = samples.find((s) => s.name === `${f.name}_sum`)
      if (count === undefined || sum === undefined) throw new Error(`${f.name} ${k}: _count or _sum missing`)
      const les = buckets.map((b) => parseValue(b.labels.le!, f.name))
      if (les[les.length - 1] !== Infinity) throw new Error(`${f.name} ${k}: no le="+Inf" bucket last`)
      for (let i = 1; i < buckets.length; i++) {
        if (!(les[i]! > les[i - 1]!)) throw new Error(`${f.name} ${k}: le not increasing`)
        if (buckets[i]!.value < buckets[i - 1]!.value) throw new Error(`${f.name} ${k}: buckets not cumulative`)
      }
      if (buckets[buckets.length - 1]!.value !== count.value) throw new Error(`${f.name} ${k}: +Inf bucket != _count`)
    }
  }
  return families
}

/** The value of one series (labels must match exactly), or undefined. */
const valueOf = (families: Map<string, Family>, name: string, labels: Record<string, string>): number | undefined => {
  for (const f of families.values()) {
    for (const s of f.samples) {
      if (s.name !== name) continue
      const keys = Object.keys(s.labels)
      if (keys.length === Object.keys(labels).length && keys.every((k) => s.labels[k] === labels[k])) return s.value
    }
  }
  return undefined
}

// ---------------------------------------------------------------------------------------------

let gw: TestGateway

const scrape = async () => {
  const res = await fetch(`${gw.url}/metrics`)
  expect(res.status).toBe(200)
  expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8")
  return parsePrometheus(await res.text())
}

const generate = (lane: string, body: Record<string, unknown> = {}) =>
  gw.post("/api/generate", { model: "gemma3:4b", prompt: "why is the alert firing?", stream: false, ...body }, { "x-awooop-lane": lane, "x-awooop-trace-id": newTraceId() })

beforeAll(async () => {
  gw = await startTestGateway({ projections: { intervalMs: 50 } })
}, 30_000)

afterAll(async () => {
  await gw?.close()
})

describe("the parser", () => {
  it("refuses what Prometheus would refuse", () => {
    expect(() => parsePrometheus("x 1\n")).toThrow(/before its TYPE/)
    expect(() => parsePrometheus("# TYPE x counter\nx{a=\"1\"} 1\nx{a=\"1\"} 2\n")).toThrow(/duplicate/)
    expect(() => parsePrometheus("# TYPE x counter\nx{a=1} 1\n")).toThrow(/not quoted/)
    expect(() => parsePrometheus("# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n")).toThrow(/cumulative/)
    expect(() => parsePrometheus("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 2\n")).toThrow(/_count/)
    expect(() => parsePrometheus("# TYPE x gauge\nx 1")).toThrow(/newline/)
    expect(parsePrometheus("# HELP x a \\\"quoted\\\" help\n# TYPE x gauge\nx{a=\"q\\\"\\\\\\n\"} 1.5e3\n").get("x")!.samples[0]).toEqual({ name: "x", labels: { a: "q\"\\\n" }, value: 1500 })
  })
})

describe("GET /metrics", () => {
  it("parses, and its counters and histograms move as requests are sent", async () => {
    const before = await scrape()
    const requestsBefore = valueOf(before, "awooop_requests_total", { lane: "alert-fast", endpoint: "gcp-a", outcome: "success" }) ?? 0

    for (let i = 0; i < 3; i++) expect((await generate("alert-fast")).status).toBe(200)
    const streamed = await gw.post("/api/chat", { model: "gemma3:4b", messages: [{ role: "user", content: "hi" }] }, { "x-awooop-lane": "alert-fast" })
    expect(streamed.status).toBe(200)
    await streamed.text()
    expect((await generate("no-such-lane")).status).toBe(400)

    const after = await scrape()
    expect(valueOf(after, "awooop_requests_total", { lane: "alert-fast", endpoint: "gcp-a", outcome: "success" })).toBe(requestsBefore + 4)
    expect(valueOf(after, "awooop_requests_total", { lane: "none", endpoint: "none", outcome: "UnknownLane" })).toBe(1)

    const g = { gen_ai_operation_name: "text_completion", gen_ai_provider_name: "ollama", gen_ai_request_model: "gemma3:4b", awooop_lane: "alert-fast" }
    expect(valueOf(after, "gen_ai_client_operation_duration_seconds_count", { ...g, awooop_endpoint: "gcp-a" })).toBe(3)
    expect(valueOf(after, "gen_ai_client_token_usage_count", { ...g, gen_ai_token_type: "input" })).toBe(3)
    expect(valueOf(after, "gen_ai_client_token_usage_count", { ...g, gen_ai_token_type: "output" })).toBe(3)
    expect(valueOf(after, "gen_ai_client_token_usage_sum", { ...g, gen_ai_token_type: "output" })).toBeGreaterThan(0)
    // The conventions' buckets.
    const les = after.get("gen_ai_client_operation_duration_seconds")!.samples
      .filter((s) => s.name.endsWith("_bucket") && s.labels.awooop_endpoint === "gcp-a" && s.labels.gen_ai_operation_name === "text_completion")
      .map((s) => s.labels.le)
    expect(les).toEqual(["0.01", "0.02", "0.04", "0.08", "0.16", "0.32", "0.64", "1.28", "2.56", "5.12", "10.24", "20.48", "40.96", "81.92", "+Inf"])
    const tokenLes = after.get("gen_ai_client_token_usage")!.samples.filter((s) => s.name.endsWith("_bucket")).slice(0, 15).map((s) => s.labels.le)
    expect(tokenLes).toEqual(["1", "4", "16", "64", "256", "1024", "4096", "16384", "65536", "262144", "1048576", "4194304", "16777216", "67108864", "+Inf"])
    // A streamed chat: time to first chunk, operation "chat".
    expect(valueOf(after, "gen_ai_client_operation_time_to_first_chunk_seconds_count", { ...g, gen_ai_operation_name: "chat", awooop_endpoint: "gcp-a" })).toBe(1)

    // Gauges read from the actors.
    for (const host of ["gcp-a", "gcp-b", "111", "gpu-node"]) {
      expect(valueOf(after, "awooop_breaker_state", { host, state: "closed" })).toBe(1)
      expect(valueOf(after, "awooop_breaker_state", { host, state: "open" })).toBe(0)
      expect(valueOf(after, "awooop_host_up", { host })).toBe(1)
    }
    expect(valueOf(after, "awooop_host_slots", { host: "gcp-a" })).toBe(4)
    expect(valueOf(after, "awooop_host_slots_reserved", { host: "gcp-a", lane: "alert-fast" })).toBe(2)
    expect(valueOf(after, "awooop_host_slots_in_use", { host: "gcp-a" })).toBe(0)
    expect(valueOf(after, "awooop_lane_admitted", { lane: "alert-fast" })).toBe(0)
    expect(valueOf(after, "awooop_lane_admission_capacity", { lane: "alert-fast" })).toBe(256)
    expect(valueOf(after, "awooop_journal_queue_depth", {})).toBeGreaterThanOrEqual(0)
    // The journal writes in the background (group commit): the counter moves once the requests' events are committed.
    let written = valueOf(after, "awooop_journal_events_written_total", {})
    for (const deadline = Date.now() + 5_000; (written ?? 0) === 0 && Date.now() < deadline;) {
      await new Promise((r) => setTimeout(r, 50))
      written = valueOf(await scrape(), "awooop_journal_events_written_total", {})
    }
    expect(written).toBeGreaterThan(0)
    expect(valueOf(after, "awooop_projector_lag_events", {})).toBeGreaterThanOrEqual(0)
  })

  it("shows a request in flight: admission depth and slots in use", async () => {
    // A stream that drips a chunk every 150 ms (within the 300 ms step timeout): in flight for ~1 s.
    gw.fakes["gcp-a"]!.setMode("drip", { delayMs: 150, chunks: 6 })
    const pending = generate("alert-fast", { stream: true }).then(async (res) => ({ status: res.status, text: await res.text() }))
    await new Promise((r) => setTimeout(r, 400))
    const during = await scrape()
    expect(valueOf(during, "awooop_lane_admitted", { lane: "alert-fast" })).toBe(1)
    expect(valueOf(during, "awooop_host_slots_in_use", { host: "gcp-a" })).toBe(1)
    expect(valueOf(during, "awooop_host_slots_reserved_in_use", { host: "gcp-a", lane: "alert-fast" })).toBe(1)
    const done = await pending
    expect(done.status).toBe(200)
    expect(done.text).toContain("\"done\":true")
    gw.fakes["gcp-a"]!.setMode("ok")
    const after = await scrape()
    expect(valueOf(after, "awooop_lane_admitted", { lane: "alert-fast" })).toBe(0)
  })

  it("counts a fallback by its reason, failed attempts by error type, and breaker transitions", async () => {
    const before = await scrape()
    gw.fakes["gcp-a"]!.setMode("hang")
    try {
      // Two timeouts on gcp-a open its breaker (the test topology's 300 ms steps); gcp-b answers both.
      for (let i = 0; i < 2; i++) {
        const res = await generate("alert-fast")
        expect(res.status).toBe(200)
        expect(res.headers.get("x-awooop-endpoint")).toBe("gcp-b")
      }
      const after = await scrape()
      const fallbacks = (valueOf(after, "awooop_fallbacks_total", { lane: "alert-fast", endpoint: "gcp-b", reason: "timeout" }) ?? 0) -
        (valueOf(before, "awooop_fallbacks_total", { lane: "alert-fast", endpoint: "gcp-b", reason: "timeout" }) ?? 0)
      expect(fallbacks).toBe(2)
      const g = { gen_ai_operation_name: "text_completion", gen_ai_provider_name: "ollama", gen_ai_request_model: "gemma3:4b", awooop_lane: "alert-fast" }
      expect(valueOf(after, "gen_ai_client_operation_duration_seconds_count", { ...g, awooop_endpoint: "gcp-a", error_type: "timeout" })).toBe(2)
      expect(valueOf(after, "awooop_breaker_state", { host: "gcp-a", state: "open" })).toBe(1)
      expect(valueOf(after, "awooop_breaker_transitions_total", { host: "gcp-a", transition: "BreakerOpened" })).toBe(1)
      expect(valueOf(after, "awooop_requests_total", { lane: "alert-fast", endpoint: "gcp-b", outcome: "success" })).toBeGreaterThanOrEqual(2)
    } finally {
      gw.fakes["gcp-a"]!.setMode("ok")
    }
  })

  it("counts failed requests by their error", async () => {
    for (const name of ["gcp-a", "gcp-b", "111"]) gw.fakes[name]!.setMode("busy503")
    try {
      const res = await generate("alert-fast")
      expect(res.status).toBe(503)
      const after = await scrape()
      expect(valueOf(after, "awooop_requests_total", { lane: "alert-fast", endpoint: "none", outcome: "AllHostsUnavailable" })).toBe(1)
    } finally {
      for (const name of ["gcp-a", "gcp-b", "111"]) gw.fakes[name]!.setMode("ok")
    }
  })
})
