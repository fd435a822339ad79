/**
 * The lane's attempt loop as a decider (src/run/Attempts.ts), given/when/then: given the plan and
 * the outcomes so far, when the lane asks what next, then this step. Every branch of the loop:
 * success, failover, breaker skips, busy hosts and the wait for a slot, "when: unavailable" steps,
 * the errors a lane ends with, the paid fallback and its refusals.
 */
import { describe, expect, it } from "@effect/vitest"
import { decide, type AttemptsInput, type Next, type Outcome } from "../src/run/Attempts.ts"
import type { Plan, PlannedAttempt } from "../src/routing/Plan.ts"
import type { SkipReason } from "../src/run/SkipReason.ts"

const input = (over: Partial<AttemptsInput> = {}): AttemptsInput => ({
  lane: "alert-fast",
  model: "gemma3:4b",
  routeHosts: ["gcp-a", "gcp-b", "111"],
  heavyModelMinParamsB: 20,
  maxWaitMs: 2_000,
  retryAfterSeconds: 2,
  paid: { providers: [], direct: false },
  caller: { caller: null, mayPay: true },
  attemptsSoFar: 0,
  ...over
})

const step = (host: string, conditional = false): PlannedAttempt => ({ host, timeoutMs: 300, conditional })
const planOf = (attempts: ReadonlyArray<PlannedAttempt>, skipped: ReadonlyArray<{ host: string; reason: SkipReason }> = []): Plan => ({ attempts, skipped })
const threeHosts = planOf([step("gcp-a"), step("gcp-b"), step("111")])

const failed = (host: string, kind: Extract<Outcome, { _tag: "Failed" }>["kind"], message = "boom", status: number | null = null, gatewayStallMs: number | null = null): Outcome =>
  ({ _tag: "Failed", host, kind, status, message, gatewayStallMs })
const busy = (host: string): Outcome => ({ _tag: "Busy", host })

/** given the plan (and input) and these outcomes, when the lane decides: the next step. */
const given = (plan: Plan, outcomes: ReadonlyArray<Outcome>, over: Partial<AttemptsInput> = {}): Next => decide(input(over), plan, outcomes)

const errorOf = (next: Next) => {
  if (next._tag !== "Fail" && next._tag !== "PaidRefused" && next._tag !== "Pay") throw new Error(`expected an end, got ${next._tag}`)
  return next.error
}

describe("the attempt decider", () => {
  it("given no outcome, tries the plan's first host as attempt 1", () => {
    expect(given(threeHosts, [])).toEqual({ _tag: "Try", step: step("gcp-a"), attempt: 1 })
  })

  it("given an async run resumed after 2 attempts, numbers the next one 3", () => {
    expect(given(threeHosts, [], { attemptsSoFar: 2 })).toMatchObject({ _tag: "Try", attempt: 3 })
  })

  it("given a success, the loop is done with that host", () => {
    expect(given(threeHosts, [{ _tag: "Succeeded", host: "gcp-a" }])).toEqual({ _tag: "Done", host: "gcp-a" })
  })

  it("given a timeout, tries the next host as the next attempt", () => {
    expect(given(threeHosts, [failed("gcp-a", "timeout")])).toEqual({ _tag: "Try", step: step("gcp-b"), attempt: 2 })
  })

  it("given a breaker that opened since plan(), skips the host without counting an attempt", () => {
    expect(given(threeHosts, [{ _tag: "BreakerOpen", host: "gcp-a" }])).toEqual({ _tag: "Try", step: step("gcp-b"), attempt: 1 })
  })

  it("given every host timing out, fails AllAttemptsTimedOut naming each host", () => {
    const error = errorOf(given(threeHosts, [failed("gcp-a", "timeout", "no answer within 0.3s"), failed("gcp-b", "timeout", "x"), failed("111", "timeout", "y")]))
    expect(error._tag).toBe("AllAttemptsTimedOut")
    expect(error.message).toContain("gcp-a timed out: no answer within 0.3s")
  })

  it("given timeouts the gateway's own stall caused, they are not timeouts of the hosts (AllHostsUnavailable, no paid fallback)", () => {
    const next = given(planOf([step("gcp-a")]), [failed("gcp-a", "timeout", "x", null, 250)], { paid: { providers: ["gemini"], direct: false } })
    expect(next._tag).toBe("Fail")
    expect(errorOf(next)._tag).toBe("AllHostsUnavailable")
    expect(errorOf(next).message).toContain("gcp-a timed out while the gateway's event loop was blocked 250ms")
  })

  it("given a 4xx from a host, fails at once with UpstreamRejected and its status (no failover, no paid)", () => {
    const next = given(threeHosts, [failed("gcp-a", "rejected", "400: invalid options", 400)], { paid: { providers: ["gemini"], direct: false } })
    expect(next._tag).toBe("Fail")
    expect(errorOf(next)).toMatchObject({ _tag: "UpstreamRejected", host: "gcp-a", upstreamStatus: 400, upstreamError: "invalid options" })
  })

  it("given refusals and busy 503s only, fails AllHostsUnavailable with Retry-After", () => {
    const error = errorOf(given(threeHosts, [failed("gcp-a", "refused"), failed("gcp-b", "busy"), failed("111", "refused")]))
    expect(error).toMatchObject({ _tag: "AllHostsUnavailable", retryAfterSeconds: 2 })
  })

  it("given a model missing on every host tried, fails ModelNotFound", () => {
    const error = errorOf(given(planOf([step("gcp-a")], [{ host: "gcp-b", reason: { kind: "model-not-installed" } }]), [failed("gcp-a", "not-found")]))
    expect(error).toMatchObject({ _tag: "ModelNotFound", hosts: ["gcp-b", "gcp-a"] })
  })

  describe("a plan with no attempt", () => {
    it("every host denies the heavy model: ModelDenied naming the rule", () => {
      const denied = { kind: "heavy-model-denied", sizeB: 32, minParamsB: 20 } as const
      const error = errorOf(given(planOf([], [{ host: "111", reason: denied }]), []))
      expect(error).toMatchObject({ _tag: "ModelDenied", rule: "policy.heavyModelMinParamsB=20 on protected hosts", hosts: ["111"] })
    })
    it("no host has the model: ModelNotFound", () => {
      expect(errorOf(given(planOf([], [{ host: "gcp-a", reason: { kind: "model-not-installed" } }]), []))._tag).toBe("ModelNotFound")
    })
    it("hosts down or circuit-open: AllHostsUnavailable, and the paid fallback with its reason", () => {
      const plan = planOf([], [{ host: "gcp-a", reason: { kind: "host-down" } }, { host: "gcp-b", reason: { kind: "circuit-open", until: null } }])
      expect(errorOf(given(plan, []))._tag).toBe("AllHostsUnavailable")
      const next = given(plan, [], { paid: { providers: ["gemini", "claude"], direct: false }, attemptsSoFar: 1 })
      expect(next).toMatchObject({ _tag: "Pay", providers: ["gemini", "claude"], direct: false, attempts: 1, reason: "all Ollama endpoints failed: gcp-a down, gcp-b circuit open" })
    })
  })

  describe("busy hosts", () => {
    it("given a busy host, the round goes on to the next host", () => {
      expect(given(threeHosts, [busy("gcp-a")])).toEqual({ _tag: "Try", step: step("gcp-b"), attempt: 1 })
    })
    it("given the round ends with busy hosts, waits for a slot on them", () => {
      expect(given(threeHosts, [busy("gcp-a"), failed("gcp-b", "timeout"), busy("111")])).toEqual({ _tag: "WaitForSlot", hosts: ["gcp-a", "111"] })
    })
    it("given a slot freed, tries the busy hosts again in plan order", () => {
      expect(given(threeHosts, [busy("gcp-a"), failed("gcp-b", "timeout"), busy("111"), { _tag: "SlotFreed" }])).toEqual({ _tag: "Try", step: step("gcp-a"), attempt: 2 })
    })
    it("given the wait expired with every host busy, fails LaneSaturated saying for how long", () => {
      const error = errorOf(given(threeHosts, [busy("gcp-a"), busy("gcp-b"), busy("111"), { _tag: "WaitExpired", waited: true }]))
      expect(error).toMatchObject({ _tag: "LaneSaturated", reason: "gcp-a all slots busy for 2s; gcp-b all slots busy for 2s; 111 all slots busy for 2s" })
    })
    it("given the deadline had passed before the wait, the saturation says so without a duration", () => {
      const error = errorOf(given(planOf([step("gcp-a")]), [busy("gcp-a"), { _tag: "WaitExpired", waited: false }]))
      expect(error).toMatchObject({ _tag: "LaneSaturated", reason: "gcp-a all slots busy" })
    })
    it("given the wait expired on a lane with a paid fallback, pays, saying the host was saturated", () => {
      const next = given(planOf([step("gcp-a")]), [busy("gcp-a"), { _tag: "WaitExpired", waited: true }], { paid: { providers: ["gemini"], direct: false } })
      expect(next).toMatchObject({ _tag: "Pay", reason: "all Ollama endpoints failed: gcp-a saturated", attempts: 0 })
      expect(errorOf(next)._tag).toBe("LaneSaturated")
    })
  })

  describe('"when: unavailable" steps', () => {
    const review = planOf([step("111"), step("gcp-b", true)])
    it("given the host before it unavailable (refused), the conditional step runs", () => {
      expect(given(review, [failed("111", "refused")])).toEqual({ _tag: "Try", step: step("gcp-b", true), attempt: 2 })
    })
    it("given the host before it timed out (not unavailable), the conditional step is skipped, then the lane fails", () => {
      const outcomes = [failed("111", "timeout")]
      expect(given(review, outcomes)).toMatchObject({ _tag: "SkipConditional", host: "gcp-b" })
      expect(errorOf(given(review, [...outcomes, { _tag: "Skipped", host: "gcp-b" }]))._tag).toBe("AllAttemptsTimedOut")
    })
    it("given the host before it merely busy, the conditional step waits with it instead of spilling", () => {
      expect(given(review, [busy("111")])).toEqual({ _tag: "WaitForSlot", hosts: ["111"] })
      expect(given(review, [busy("111"), { _tag: "SlotFreed" }])).toEqual({ _tag: "Try", step: step("111"), attempt: 1 })
    })
    it("given a rule refused a host in the plan, only-unavailable is off from the start", () => {
      const denied = { kind: "heavy-model-denied", sizeB: 32, minParamsB: 20 } as const
      const plan = planOf([step("gcp-a"), step("gcp-b", true)], [{ host: "111", reason: denied }])
      expect(given(plan, [failed("gcp-a", "refused")])).toMatchObject({ _tag: "SkipConditional", host: "gcp-b" })
    })
  })

  describe("the paid route", () => {
    const paid = { paid: { providers: ["gemini"], direct: false } }
    it("given every host failed, pays with the reason naming each failure, attempts numbered after the Ollama ones", () => {
      const next = given(planOf([step("gcp-a"), step("gcp-b")]), [failed("gcp-a", "timeout"), failed("gcp-b", "server-error")], paid)
      expect(next).toMatchObject({ _tag: "Pay", providers: ["gemini"], attempts: 2, reason: "all Ollama endpoints failed: gcp-a timeout, gcp-b error" })
      expect(errorOf(next)._tag).toBe("AllHostsUnavailable")
    })
    it("given a rule's refusal among the misses, does not pay", () => {
      const denied = { kind: "heavy-model-denied", sizeB: 32, minParamsB: 20 } as const
      const next = given(planOf([step("gcp-a")], [{ host: "111", reason: denied }]), [failed("gcp-a", "timeout")], paid)
      expect(next._tag).toBe("Fail")
    })
    it("a paid lane pays directly, with the direct reason", () => {
      const next = given(planOf([]), [], { routeHosts: [], paid: { providers: ["claude"], direct: true }, lane: "paid-emergency" })
      expect(next).toMatchObject({ _tag: "Pay", direct: true, reason: "lane paid-emergency calls paid providers directly (no Ollama route)" })
    })
    it("a caller that may not pay: the fallback is refused and the Ollama error stands", () => {
      const next = given(planOf([step("gcp-a")]), [failed("gcp-a", "timeout")], { ...paid, caller: { caller: "ci", mayPay: false } })
      expect(next).toMatchObject({ _tag: "PaidRefused", skipped: { reason: "caller ci may not spend money on paid providers (paidFallback: false)", providers: ["gemini"], caller: "ci" } })
      expect(errorOf(next)._tag).toBe("AllAttemptsTimedOut")
    })
    it("a caller that may not pay, on a paid lane: CallerForbidden", () => {
      const next = given(planOf([]), [], { routeHosts: [], paid: { providers: ["claude"], direct: true }, lane: "paid-emergency", caller: { caller: null, mayPay: false } })
      expect(errorOf(next)).toMatchObject({ _tag: "CallerForbidden", caller: "anonymous" })
    })
  })
})
