/**
 * The console's pure parts: the HTML template escapes everything it is not told is markup, the runs
 * filters round-trip through the URL, a story's attempts pair up by host, and the security headers
 * every page carries.
 */
import { describe, expect, it } from "vitest"
import { contentSecurityPolicy, html, join, securityHeaders } from "../src/console/Html.ts"
import { parseFilters, queryString, timeOf } from "../src/console/Runs.ts"
import { axisOf } from "../src/console/Series.ts"
import { attemptBars } from "../src/console/Story.ts"
import * as Events from "../src/domain/Events.ts"
import type { Step } from "../src/replay/Explain.ts"

describe("console html", () => {
  it("escapes values, keeps nested markup, and drops null/false", () => {
    const model = `qwen"><script>alert(1)</script>`
    const out = html`<td title="${model}">${model}${null}${false}${html`<b>${"&"}</b>`}${[html`<i>1</i>`, "<2>"]}</td>`
    expect(out.text).toBe(
      `<td title="qwen&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;">qwen&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;<b>&amp;</b><i>1</i>&lt;2&gt;</td>`
    )
    expect(join([html`<a>`, html`<b>`], ", ").text).toBe("<a>, <b>")
  })

  it("pages forbid inline script and style, framing, and other origins", () => {
    expect(contentSecurityPolicy).toMatch(/^default-src 'self'; script-src 'self'; style-src 'self';/)
    expect(contentSecurityPolicy).not.toContain("unsafe-inline")
    expect(contentSecurityPolicy).toContain("frame-ancestors 'none'")
    expect(securityHeaders["x-content-type-options"]).toBe("nosniff")
  })
})

describe("runs filters", () => {
  it("round-trip through the query string; unknown outcomes are dropped; since defaults to 1h", () => {
    const f = parseFilters({ lane: "alert-fast", outcome: "fallback", reason: "timeout", project: ["awoooi", "x"], junk: "1" })
    expect(f).toMatchObject({ lane: "alert-fast", outcome: "fallback", reason: "timeout", project: "awoooi", since: "1h", until: "" })
    expect(parseFilters(Object.fromEntries(new URLSearchParams(queryString(f))))).toEqual(f)
    expect(parseFilters({ outcome: "exploded" }).outcome).toBe("")
  })

  it("reads times as a duration back from now or an ISO time", () => {
    const now = Date.parse("2026-05-05T12:00:00Z")
    expect(timeOf("30m", now)).toBe(now - 1_800_000)
    expect(timeOf("2026-05-05T11:00:00Z", now)).toBe(now - 3_600_000)
    expect(timeOf("yesterday", now)).toBeNull()
  })
})

describe("chart axis", () => {
  it("covers the window in whole buckets ending with the current one", () => {
    const now = Date.parse("2026-05-05T12:00:30Z")
    const axis = axisOf("1h", now)
    expect(axis.t).toHaveLength(60)
    expect(axis.t[axis.t.length - 1]).toBe(Date.parse("2026-05-05T12:00:00Z") / 1000)
    expect(axis.to - axis.from).toBe(3_600_000)
  })
})

describe("story attempts", () => {
  const step = (offsetMs: number, event: Events.AnyEvent, host: string | null = null): Step =>
    ({ at: 1_000 + offsetMs, offsetMs, streamId: host === null ? "run-x" : `host-${host}`, host, ...Events.toRow(event), text: event._tag })

  it("pairs each attempt with its end, in order; host events do not count", () => {
    const bars = attemptBars([
      step(0, Events.RunStarted.make({
        runId: "x", operation: "generate", stream: false, requestedModel: "gemma3:4b", assignedModel: "gemma3:4b",
        intent: null, caller: null, legacy: false, traceMinted: false, parentSpanId: null
      })),
      step(1, Events.AttemptStarted.make({ attempt: 1, host: "gcp-a", timeoutMs: 300 })),
      step(300, Events.BreakerOpened.make({ host: "gcp-a", at: 1_300, consecutiveTimeouts: 2, until: 31_300, reason: "2 consecutive timeouts" }), "gcp-a"),
      step(301, Events.AttemptFailed.make({ attempt: 1, host: "gcp-a", kind: "timeout", message: "no answer" })),
      step(302, Events.AttemptStarted.make({ attempt: 2, host: "gcp-b", timeoutMs: 300 })),
      step(330, Events.AttemptSucceeded.make({ host: "gcp-b", durationMs: 28, firstChunkMs: null }))
    ])
    expect(bars.map((b) => [b.attempt, b.host, b.start, b.end, b.outcome, b.label])).toEqual([
      [1, "gcp-a", 1, 301, "failed", "timeout"],
      [2, "gcp-b", 302, 330, "ok", "answered"]
    ])
  })
})
