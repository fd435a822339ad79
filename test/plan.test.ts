import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { type HostView, plan, type PlanInput, type PlanStep } from "../src/routing/Plan.ts"
import { describeSkip, isUnavailability } from "../src/run/SkipReason.ts"
import { isHeavy, modelSizeB, parameterSizeFromTag, parseParameterSize } from "../src/routing/Policy.ts"

const NOW = 1_750_000_000_000

const up = (overrides: Partial<HostView> = {}): HostView => ({
  protected: false,
  health: "up",
  breaker: { status: "closed", reopensAt: null, probeInFlight: false },
  maintenance: { open: false, until: null },
  installed: [
    { name: "gemma3:4b", parameterSize: "4.3B" },
    { name: "qwen2.5-coder:7b", parameterSize: "7.6B" },
    { name: "qwen2.5:14b", parameterSize: "14.8B" }
  ],
  slots: { total: 4, inUse: 0, freeForLane: 4 },
  ...overrides
})
const down = (overrides: Partial<HostView> = {}) => up({ health: "down", ...overrides })
const open = (reopensAt = NOW + 30_000) => up({ breaker: { status: "open", reopensAt, probeInFlight: false } })
const step = (host: string, when: PlanStep["when"] = "always", timeoutMs = 45_000): PlanStep => ({ host, timeoutMs, when })

const alertRoute = [step("gcp-a"), step("gcp-b"), step("111", "always", 60_000)]
const reviewRoute = [step("111", "always", 120_000), step("gcp-b", "unavailable", 90_000)]

const input = (route: ReadonlyArray<PlanStep>, hosts: Record<string, HostView>, model = "gemma3:4b", heavyModelMinParamsB = 14): PlanInput => ({
  lane: "test-lane",
  model,
  route,
  hosts,
  policy: { heavyModelMinParamsB },
  now: NOW
})

describe("plan(): ordering", () => {
  it("healthy hosts are attempted in route order with their own timeouts", () => {
    const p = plan(input(alertRoute, { "gcp-a": up(), "gcp-b": up(), "111": up() }))
    expect(p).toEqual({
      attempts: [
        { host: "gcp-a", timeoutMs: 45_000, conditional: false },
        { host: "gcp-b", timeoutMs: 45_000, conditional: false },
        { host: "111", timeoutMs: 60_000, conditional: false }
      ],
      skipped: []
    })
  })

  it("an open breaker, a down host and a missing model are skipped with their reasons; the rest keeps its order", () => {
    const p = plan(input([...alertRoute, step("gpu-node")], {
      "gcp-a": open(NOW + 5_000),
      "gcp-b": down(),
      "111": up(),
      "gpu-node": up({ installed: [{ name: "bge-m3", parameterSize: "567M" }] })
    }))
    expect(p.attempts.map((a) => a.host)).toEqual(["111"])
    expect(p.skipped).toEqual([
      { host: "gcp-a", reason: { kind: "circuit-open", until: NOW + 5_000 } },
      { host: "gcp-b", reason: { kind: "host-down" } },
      { host: "gpu-node", reason: { kind: "model-not-installed" } }
    ])
    expect(p.skipped.map(describeSkip)).toEqual([
      expect.stringContaining("gcp-a circuit open until"),
      "gcp-b down",
      "gpu-node does not have the model"
    ])
  })

  it("half-open: attempted (it may be the probe) unless a probe is already in flight", () => {
    const halfOpen = up({ breaker: { status: "half-open", reopensAt: null, probeInFlight: false } })
    const probing = up({ breaker: { status: "half-open", reopensAt: null, probeInFlight: true } })
    expect(plan(input(alertRoute, { "gcp-a": halfOpen, "gcp-b": probing, "111": up() }))).toEqual({
      attempts: [{ host: "gcp-a", timeoutMs: 45_000, conditional: false }, { host: "111", timeoutMs: 60_000, conditional: false }],
      skipped: [{ host: "gcp-b", reason: { kind: "probe-in-flight" } }]
    })
  })

  it("a host never polled (health unknown, installed unknown) is tried: nothing rules it out", () => {
    const p = plan(input(alertRoute, { "gcp-a": up({ health: "unknown", installed: null }), "gcp-b": up(), "111": up() }))
    expect(p.attempts.map((a) => a.host)).toEqual(["gcp-a", "gcp-b", "111"])
  })

  it("no tag means :latest, as in Ollama: a lane model \"bge-m3\" is installed as \"bge-m3:latest\"", () => {
    const hosts = { "111": up({ installed: [{ name: "bge-m3:latest", parameterSize: "567M" }, { name: "qwen2.5:14b-instruct", parameterSize: "14.8B" }] }) }
    expect(plan(input([step("111")], hosts, "bge-m3")).attempts).toHaveLength(1)
    expect(plan(input([step("111")], hosts, "bge-m3:latest")).attempts).toHaveLength(1)
    expect(plan(input([step("111")], hosts, "qwen2.5:14b")).skipped).toEqual([{ host: "111", reason: { kind: "model-not-installed" } }])
    const listedBare = { "111": up({ installed: [{ name: "bge-m3", parameterSize: "567M" }] }) }
    expect(plan(input([step("111")], listedBare, "bge-m3:latest")).attempts).toHaveLength(1)
  })

  it("a route host missing from the snapshot counts as down", () => {
    const p = plan(input(alertRoute, { "gcp-a": up(), "111": up() }))
    expect(p.skipped).toEqual([{ host: "gcp-b", reason: { kind: "host-down" } }])
  })

  it("no host left: no attempts, every step skipped", () => {
    const p = plan(input(alertRoute, { "gcp-a": down(), "gcp-b": open(), "111": down() }))
    expect(p.attempts).toEqual([])
    expect(p.skipped.map((s) => s.host)).toEqual(["gcp-a", "gcp-b", "111"])
  })
})

describe("plan(): `when: unavailable`", () => {
  it("111 up: gcp-b is planned but conditional (only used if 111 turns out unavailable at run time)", () => {
    expect(plan(input(reviewRoute, { "111": up(), "gcp-b": up() }, "qwen2.5-coder:7b")).attempts).toEqual([
      { host: "111", timeoutMs: 120_000, conditional: false },
      { host: "gcp-b", timeoutMs: 90_000, conditional: true }
    ])
  })

  for (const [why, view] of [["down", down()], ["circuit-open", open()], ["probe in flight", up({ breaker: { status: "half-open", reopensAt: null, probeInFlight: true } })]] as const) {
    it(`111 ${why}: gcp-b is certainly needed (not conditional)`, () => {
      const p = plan(input(reviewRoute, { "111": view, "gcp-b": up() }, "qwen2.5-coder:7b"))
      expect(p.attempts).toEqual([{ host: "gcp-b", timeoutMs: 90_000, conditional: false }])
      expect(p.skipped.map((s) => s.host)).toEqual(["111"])
    })
  }

  it("111 refused by a rule (heavy model on a protected 111): the conditional step is skipped, not a fallback", () => {
    const p = plan(input(reviewRoute, { "111": up({ protected: true }), "gcp-b": up() }, "qwen2.5:14b"))
    expect(p.attempts).toEqual([])
    expect(p.skipped).toEqual([
      { host: "111", reason: { kind: "heavy-model-denied", sizeB: 14.8, minParamsB: 14 } },
      { host: "gcp-b", reason: { kind: "only-when-unavailable" } }
    ])
    expect(isUnavailability(p.skipped[0]!.reason)).toBe(false)
    expect(isUnavailability(p.skipped[1]!.reason)).toBe(false)
  })

  it("a conditional step after an attempted step stays conditional even if a later-listed host was down", () => {
    const route = [step("a"), step("b"), step("c", "unavailable")]
    const p = plan(input(route, { a: down(), b: up(), c: up() }))
    expect(p.attempts).toEqual([
      { host: "b", timeoutMs: 45_000, conditional: false },
      { host: "c", timeoutMs: 45_000, conditional: true }
    ])
  })
})

describe("plan(): heavy models on protected hosts", () => {
  const protectedUp = (overrides: Partial<HostView> = {}) => up({ protected: true, ...overrides })

  it("a 14B model is denied on protected hosts, allowed on the others", () => {
    const p = plan(input(alertRoute, { "gcp-a": protectedUp(), "gcp-b": protectedUp(), "111": up() }, "qwen2.5:14b"))
    expect(p.attempts.map((a) => a.host)).toEqual(["111"])
    expect(p.skipped).toEqual([
      { host: "gcp-a", reason: { kind: "heavy-model-denied", sizeB: 14.8, minParamsB: 14 } },
      { host: "gcp-b", reason: { kind: "heavy-model-denied", sizeB: 14.8, minParamsB: 14 } }
    ])
    expect(describeSkip(p.skipped[0]!)).toContain("protected")
  })

  it("an operator's open maintenance window lets it through", () => {
    const p = plan(input(alertRoute, { "gcp-a": protectedUp({ maintenance: { open: true, until: NOW + 60_000 } }), "gcp-b": protectedUp(), "111": up() }, "qwen2.5:14b"))
    expect(p.attempts.map((a) => a.host)).toEqual(["gcp-a", "111"])
  })

  it("the size comes from the tag when the host has not reported the model", () => {
    const p = plan(input([step("gcp-a")], { "gcp-a": protectedUp({ installed: null }) }, "qwen2.5:32b"))
    expect(p.skipped).toEqual([{ host: "gcp-a", reason: { kind: "heavy-model-denied", sizeB: 32, minParamsB: 14 } }])
  })

  it("the host's details.parameter_size wins over the tag: a custom tag cannot sneak a 14B model in", () => {
    const hosts = { "gcp-a": protectedUp({ installed: [{ name: "team/rca:latest", parameterSize: "14.8B" }] }) }
    expect(plan(input([step("gcp-a")], hosts, "team/rca:latest")).skipped)
      .toEqual([{ host: "gcp-a", reason: { kind: "heavy-model-denied", sizeB: 14.8, minParamsB: 14 } }])
    const lies = { "gcp-a": protectedUp({ installed: [{ name: "qwen2.5:7b", parameterSize: "14.8B" }] }) }
    expect(plan(input([step("gcp-a")], lies, "qwen2.5:7b")).attempts).toEqual([])
  })

  it("below the threshold is allowed; the threshold is configurable", () => {
    const hosts = { "gcp-a": protectedUp() }
    expect(plan(input([step("gcp-a")], hosts, "qwen2.5-coder:7b")).attempts).toHaveLength(1)
    expect(plan(input([step("gcp-a")], hosts, "qwen2.5-coder:7b", 7)).attempts).toHaveLength(0)
  })

  it("a model whose size nobody knows is not denied", () => {
    const hosts = { "gcp-a": protectedUp({ installed: [{ name: "bge-m3", parameterSize: null }] }) }
    expect(plan(input([step("gcp-a")], hosts, "bge-m3")).attempts).toHaveLength(1)
  })
})

describe("Policy: model sizes", () => {
  it("reads Ollama's parameter_size", () => {
    expect(parseParameterSize("4.3B")).toBe(4.3)
    expect(parseParameterSize("567M")).toBe(0.567)
    expect(parseParameterSize("1.2T")).toBe(1200)
    expect(parseParameterSize("unknown")).toBeNull()
    expect(parseParameterSize(null)).toBeNull()
  })

  it("reads the size a tag states, never a family name", () => {
    expect(parameterSizeFromTag("qwen2.5:14b")).toBe(14)
    expect(parameterSizeFromTag("llama3:70b-instruct-q4_K_M")).toBe(70)
    expect(parameterSizeFromTag("mixtral:8x7b")).toBe(56)
    expect(parameterSizeFromTag("gemma3:270m")).toBe(0.27)
    expect(parameterSizeFromTag("qwen2.5")).toBeNull()
    expect(parameterSizeFromTag("bge-m3")).toBeNull()
    expect(parameterSizeFromTag("bge-m3:latest")).toBeNull()
  })

  it("the host's report wins; heavy is >= the threshold", () => {
    expect(modelSizeB("x:7b", "14.8B")).toBe(14.8)
    expect(modelSizeB("x:7b", null)).toBe(7)
    expect(isHeavy(14, 14)).toBe(true)
    expect(isHeavy(13.9, 14)).toBe(false)
    expect(isHeavy(null, 14)).toBe(false)
  })
})

describe("plan(): properties", () => {
  const hostNames = ["gcp-a", "gcp-b", "111", "gpu-node"]
  const view = fc.record({
    protected: fc.boolean(),
    health: fc.constantFrom("up" as const, "down" as const, "unknown" as const),
    breaker: fc.oneof(
      fc.constant({ status: "closed" as const, reopensAt: null, probeInFlight: false }),
      fc.constant({ status: "open" as const, reopensAt: NOW + 1_000, probeInFlight: false }),
      fc.boolean().map((probeInFlight) => ({ status: "half-open" as const, reopensAt: null, probeInFlight }))
    ),
    maintenance: fc.boolean().map((o) => ({ open: o, until: null })),
    installed: fc.option(fc.subarray([{ name: "gemma3:4b", parameterSize: "4.3B" }, { name: "qwen2.5:14b", parameterSize: "14.8B" }]), { nil: null }),
    slots: fc.constant({ total: 4, inUse: 0, freeForLane: 4 })
  })
  const arbInput = fc.record({
    route: fc.uniqueArray(fc.constantFrom(...hostNames), { minLength: 1, maxLength: 4 }).chain((hosts) =>
      fc.tuple(...hosts.map((h, i) => fc.constantFrom<PlanStep["when"]>(...(i === 0 ? ["always" as const] : ["always" as const, "unavailable" as const])).map((when) => step(h, when))))),
    hosts: fc.record(Object.fromEntries(hostNames.map((h) => [h, view])) as Record<string, typeof view>),
    model: fc.constantFrom("gemma3:4b", "qwen2.5:14b")
  })

  it("every route step is either attempted or skipped, exactly once, in route order", () => {
    fc.assert(fc.property(arbInput, ({ route, hosts, model }) => {
      const p = plan(input(route, hosts as Record<string, HostView>, model))
      const seen = [...p.attempts.map((a) => a.host), ...p.skipped.map((s) => s.host)]
      expect([...seen].sort()).toEqual(route.map((s) => s.host).sort())
      const order = route.map((s) => s.host)
      const attemptOrder = p.attempts.map((a) => order.indexOf(a.host))
      expect(attemptOrder).toEqual([...attemptOrder].sort((a, b) => a - b))
    }))
  })

  it("is deterministic (replay gives the same decision) and never attempts a denied heavy model on a protected host", () => {
    fc.assert(fc.property(arbInput, ({ route, hosts, model }) => {
      const i = input(route, hosts as Record<string, HostView>, model)
      expect(plan(structuredClone(i))).toEqual(plan(i))
      for (const a of plan(i).attempts) {
        const h = i.hosts[a.host]!
        if (model === "qwen2.5:14b" && h.protected) expect(h.maintenance.open).toBe(true)
        expect(h.health).not.toBe("down")
        expect(h.breaker.status).not.toBe("open")
      }
    }))
  })
})
