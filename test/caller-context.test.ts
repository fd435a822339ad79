import { describe, expect, it } from "@effect/vitest"
import { type CallerContext, type LaneRules, mintTraceId, parseTraceparent, resolveCallerContext } from "../src/domain/CallerContext.ts"

const rules: LaneRules = {
  lanes: ["alert-fast", "code-review", "embedding", "deep-rca"],
  legacyProjectId: "awoooi",
  legacyLanes: { "gemma3:4b": "alert-fast", "qwen2.5-coder:7b": "code-review", "bge-m3": "embedding" }
}
const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
const PARENT = "00f067aa0ba902b7"

const ok = (result: ReturnType<typeof resolveCallerContext>): CallerContext => {
  if (!("traceId" in result)) throw new Error(`expected a caller context, got ${result._tag}: ${result.message}`)
  return result
}
const refused = (result: ReturnType<typeof resolveCallerContext>) => {
  if ("traceId" in result) throw new Error("expected a refusal")
  return result
}

describe("resolveCallerContext", () => {
  it("an AwoooP-aware caller: every header taken as given", () => {
    const c = ok(resolveCallerContext({
      "x-awooop-project-id": "awoooi",
      "x-awooop-trace-id": TRACE,
      "x-awooop-lane": "alert-fast",
      "x-awooop-intent": "DIAGNOSE"
    }, "gemma3:4b", rules))
    expect(c).toEqual({ projectId: "awoooi", traceId: TRACE, parentSpanId: null, lane: "alert-fast", intent: "DIAGNOSE", legacy: false, traceMinted: false })
  })

  it("a lane header wins over the legacy rules whatever the model", () => {
    const c = ok(resolveCallerContext({ "x-awooop-lane": "code-review" }, "gemma3:4b", rules))
    expect(c.lane).toBe("code-review")
    expect(c.legacy).toBe(false)
    expect(c.projectId).toBe("awoooi") // the bootstrap project when none is sent
  })

  it("a legacy caller (no lane header): project awoooi, lane by model, a minted trace id", () => {
    const c = ok(resolveCallerContext({}, "bge-m3", rules))
    expect(c).toMatchObject({ projectId: "awoooi", lane: "embedding", legacy: true, traceMinted: true, intent: null })
    expect(c.traceId).toMatch(/^[0-9a-f]{32}$/)
  })

  it("a legacy caller's model is matched the way Ollama names models (no tag = :latest)", () => {
    expect(ok(resolveCallerContext({}, "bge-m3:latest", rules)).lane).toBe("embedding")
    expect(ok(resolveCallerContext({}, "gemma3:4b", { ...rules, legacyLanes: { "gemma3:4b": "alert-fast" } })).lane).toBe("alert-fast")
    expect(ok(resolveCallerContext({}, "phi3", { ...rules, legacyLanes: { "phi3:latest": "code-review" } })).lane).toBe("code-review")
  })

  it("a legacy caller whose model has no lane is refused with a hint to send X-AwoooP-Lane", () => {
    const r = refused(resolveCallerContext({}, "mistral:7b", rules))
    expect(r._tag).toBe("BadRequest")
    expect(r.message).toContain("X-AwoooP-Lane")
    expect(r.message).toContain("mistral:7b")
  })

  it("a model named like an Object.prototype member is no lane (it once found the prototype's function: a 500)", () => {
    for (const model of ["valueOf", "constructor", "toString", "__proto__", "hasOwnProperty"]) {
      const r = refused(resolveCallerContext({}, model, rules))
      expect(r._tag).toBe("BadRequest")
      expect(r.message).toContain(`no lane for model ${JSON.stringify(model)}`)
    }
  })

  it("an unknown lane is refused naming it and the known ones", () => {
    const r = refused(resolveCallerContext({ "x-awooop-lane": "alert-slow" }, "gemma3:4b", rules))
    expect(r._tag).toBe("UnknownLane")
    expect(r.message).toContain("alert-slow")
    expect(r.message).toContain("alert-fast, code-review")
  })

  it("a malformed trace id is refused: not hex, upper case, wrong length, all zero", () => {
    for (const bad of ["xyz", TRACE.toUpperCase(), TRACE.slice(1), TRACE + "0", "0".repeat(32)]) {
      const r = refused(resolveCallerContext({ "x-awooop-trace-id": bad, "x-awooop-lane": "alert-fast" }, "gemma3:4b", rules))
      expect(r._tag).toBe("BadRequest")
      expect(r.message).toContain("X-AwoooP-Trace-ID")
    }
  })

  it("malformed project id or intent is refused naming the header", () => {
    expect(refused(resolveCallerContext({ "x-awooop-project-id": "a b" }, "gemma3:4b", rules)).message).toContain("X-AwoooP-Project-ID")
    expect(refused(resolveCallerContext({ "x-awooop-intent": "x".repeat(65) }, "gemma3:4b", rules)).message).toContain("X-AwoooP-Intent")
  })

  it("W3C traceparent: its trace id is used and its parent span kept", () => {
    const c = ok(resolveCallerContext({ traceparent: `00-${TRACE}-${PARENT}-01`, "x-awooop-lane": "alert-fast" }, "gemma3:4b", rules))
    expect(c).toMatchObject({ traceId: TRACE, parentSpanId: PARENT, traceMinted: false })
  })

  it("both headers: the AwoooP one wins; the parent span is kept only when they agree", () => {
    const other = "a".repeat(32)
    const same = ok(resolveCallerContext({ traceparent: `00-${TRACE}-${PARENT}-01`, "x-awooop-trace-id": TRACE, "x-awooop-lane": "alert-fast" }, undefined, rules))
    expect(same).toMatchObject({ traceId: TRACE, parentSpanId: PARENT })
    const differ = ok(resolveCallerContext({ traceparent: `00-${TRACE}-${PARENT}-01`, "x-awooop-trace-id": other, "x-awooop-lane": "alert-fast" }, undefined, rules))
    expect(differ).toMatchObject({ traceId: other, parentSpanId: null })
  })

  it("an invalid traceparent is ignored (a new trace is started), as the W3C spec says", () => {
    const c = ok(resolveCallerContext({ traceparent: "garbage", "x-awooop-lane": "alert-fast" }, undefined, rules))
    expect(c.traceMinted).toBe(true)
    expect(c.parentSpanId).toBeNull()
  })

  it("no model and no lane → model is required", () => {
    expect(refused(resolveCallerContext({}, undefined, rules)).message).toBe("model is required")
  })
})

describe("parseTraceparent", () => {
  it("accepts the W3C format and a future version with extra fields", () => {
    expect(parseTraceparent(`00-${TRACE}-${PARENT}-01`)).toEqual({ traceId: TRACE, parentSpanId: PARENT })
    expect(parseTraceparent(`01-${TRACE}-${PARENT}-01-extra`)).toEqual({ traceId: TRACE, parentSpanId: PARENT })
  })

  it("rejects all-zero ids, version ff, upper case, extra fields on version 00 and short parts", () => {
    for (const bad of [
      `00-${"0".repeat(32)}-${PARENT}-01`,
      `00-${TRACE}-${"0".repeat(16)}-01`,
      `ff-${TRACE}-${PARENT}-01`,
      `00-${TRACE.toUpperCase()}-${PARENT}-01`,
      `00-${TRACE}-${PARENT}-01-extra`,
      `00-${TRACE}-${PARENT}`,
      undefined,
      ""
    ]) expect(parseTraceparent(bad)).toBeNull()
  })
})

it("mintTraceId: 32 lowercase hex, never all zero, never twice the same", () => {
  const ids = new Set(Array.from({ length: 1_000 }, mintTraceId))
  expect(ids.size).toBe(1_000)
  for (const id of ids) expect(id).toMatch(/^[0-9a-f]{32}$/)
})
