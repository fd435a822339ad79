/**
 * plan(): the routing decision as a pure function. Its whole input is journaled in RouteDecided, so
 * replay can run it again and prove the gateway decided what it says it decided.
 */
import { Schema } from "effect"
import { sameModel } from "../domain/OllamaApi.ts"
import { isUnavailability, Skip, type SkipReason } from "../run/SkipReason.ts"
import { isHeavy, modelSizeB } from "./Policy.ts"

/** plan()'s input and output are journaled (RouteDecided): Schemas, so the journal's catalogue decodes them. */
export const InstalledModel = Schema.Struct({ name: Schema.String, parameterSize: Schema.NullOr(Schema.String) })
export type InstalledModel = typeof InstalledModel.Type

export const HostView = Schema.Struct({
  protected: Schema.Boolean,
  /** "unknown" until the first poll answers; treated as up. */
  health: Schema.Literal("up", "down", "unknown"),
  breaker: Schema.Struct({
    status: Schema.Literal("closed", "open", "half-open"),
    reopensAt: Schema.NullOr(Schema.Number),
    probeInFlight: Schema.Boolean
  }),
  maintenance: Schema.Struct({ open: Schema.Boolean, until: Schema.NullOr(Schema.Number) }),
  /** Models installed (from /api/tags); null when never polled, so nothing can be ruled out. */
  installed: Schema.NullOr(Schema.Array(InstalledModel)),
  /** Recorded for the audit; slots are taken at attempt time, not planned. */
  slots: Schema.Struct({ total: Schema.Number, inUse: Schema.Number, freeForLane: Schema.Number })
})
export type HostView = typeof HostView.Type

export const PlanStep = Schema.Struct({
  host: Schema.String,
  timeoutMs: Schema.Number,
  when: Schema.Literal("always", "unavailable")
})
export type PlanStep = typeof PlanStep.Type

export const PlanInput = Schema.Struct({
  lane: Schema.String,
  model: Schema.String,
  route: Schema.Array(PlanStep),
  hosts: Schema.Record({ key: Schema.String, value: HostView }),
  policy: Schema.Struct({ heavyModelMinParamsB: Schema.Number }),
  now: Schema.Number
})
export type PlanInput = typeof PlanInput.Type

export const PlannedAttempt = Schema.Struct({
  host: Schema.String,
  timeoutMs: Schema.Number,
  /** Conditional attempts run only if every attempt before them failed for unavailability. */
  conditional: Schema.Boolean
})
export type PlannedAttempt = typeof PlannedAttempt.Type

export const Plan = Schema.Struct({ attempts: Schema.Array(PlannedAttempt), skipped: Schema.Array(Skip) })
export type Plan = typeof Plan.Type

const skipReason = (input: PlanInput, host: string): SkipReason | null => {
  const view = input.hosts[host]
  if (view === undefined) return { kind: "host-down" }
  if (view.protected && !view.maintenance.open) {
    const installed = view.installed?.find((m) => sameModel(m.name, input.model))
    const sizeB = modelSizeB(input.model, installed?.parameterSize)
    if (sizeB !== null && isHeavy(sizeB, input.policy.heavyModelMinParamsB)) {
      return { kind: "heavy-model-denied", sizeB, minParamsB: input.policy.heavyModelMinParamsB }
    }
  }
  if (view.health === "down") return { kind: "host-down" }
  if (view.installed !== null && !view.installed.some((m) => sameModel(m.name, input.model))) return { kind: "model-not-installed" }
  if (view.breaker.status === "open") return { kind: "circuit-open", until: view.breaker.reopensAt }
  if (view.breaker.status === "half-open" && view.breaker.probeInFlight) return { kind: "probe-in-flight" }
  return null
}

export const plan = (input: PlanInput): Plan => {
  const attempts: Array<PlannedAttempt> = []
  const skipped: Array<Skip> = []
  // Every step so far was skipped as unavailable: a "when: unavailable" step is then certainly needed.
  let allUnavailableSoFar = true
  let ruleRefusedEarlier = false
  for (const step of input.route) {
    const conditional = step.when === "unavailable"
    if (conditional && ruleRefusedEarlier) {
      skipped.push({ host: step.host, reason: { kind: "only-when-unavailable" } })
      continue
    }
    const reason = skipReason(input, step.host)
    if (reason !== null) {
      skipped.push({ host: step.host, reason })
      if (!isUnavailability(reason)) {
        allUnavailableSoFar = false
        ruleRefusedEarlier = true
      }
      continue
    }
    // Still conditional when an earlier host was planned: whether it turns out unavailable is known only at run time.
    attempts.push({ host: step.host, timeoutMs: step.timeoutMs, conditional: conditional && !allUnavailableSoFar })
    allUnavailableSoFar = false
  }
  return { attempts, skipped }
}
