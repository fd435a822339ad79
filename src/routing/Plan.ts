/**
 * plan(): the routing decision as a pure function. Its whole input is journaled in RouteDecided, so
 * replay can run it again and prove the gateway decided what it says it decided.
 */
import { sameModel } from "../domain/OllamaApi.ts"
import { isUnavailability, type Skip, type SkipReason } from "../run/SkipReason.ts"
import { isHeavy, modelSizeB } from "./Policy.ts"

export interface InstalledModel {
  readonly name: string
  readonly parameterSize: string | null
}

export interface HostView {
  readonly protected: boolean
  /** "unknown" until the first poll answers; treated as up. */
  readonly health: "up" | "down" | "unknown"
  readonly breaker: {
    readonly status: "closed" | "open" | "half-open"
    readonly reopensAt: number | null
    readonly probeInFlight: boolean
  }
  readonly maintenance: { readonly open: boolean; readonly until: number | null }
  /** Models installed (from /api/tags); null when never polled, so nothing can be ruled out. */
  readonly installed: ReadonlyArray<InstalledModel> | null
  /** Recorded for the audit; slots are taken at attempt time, not planned. */
  readonly slots: { readonly total: number; readonly inUse: number; readonly freeForLane: number }
}

export interface PlanStep {
  readonly host: string
  readonly timeoutMs: number
  readonly when: "always" | "unavailable"
}

export interface PlanInput {
  readonly lane: string
  readonly model: string
  readonly route: ReadonlyArray<PlanStep>
  readonly hosts: Readonly<Record<string, HostView>>
  readonly policy: { readonly heavyModelMinParamsB: number }
  readonly now: number
}

export interface PlannedAttempt {
  readonly host: string
  readonly timeoutMs: number
  /** Conditional attempts run only if every attempt before them failed for unavailability. */
  readonly conditional: boolean
}

export interface Plan {
  readonly attempts: ReadonlyArray<PlannedAttempt>
  readonly skipped: ReadonlyArray<Skip>
}

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
