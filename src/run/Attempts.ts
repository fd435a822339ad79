/**
 * The lane's attempt loop as a pure decider: given the plan and the outcomes so far, what the lane
 * does next — try a host, skip one, wait for a slot, pay a provider, or fail with an error. The lane
 * (routing/Lane.ts) runs the effects (slots, upstream calls, journal) and feeds each outcome back
 * with `evolve`; nothing else steers the loop.
 *
 * Rounds: the plan's attempts are tried in order. A host with no free slot is "busy": the round
 * goes on to the hosts after it, and a "when: unavailable" step behind a busy host waits with it
 * (busy is not unavailable). When a round ends with busy hosts the lane waits for a slot on one of
 * them (within the lane's maxWait), then tries the busy and waiting steps again, in plan order.
 */
import { type CallerContext } from "../domain/CallerContext.ts"
import {
  AllAttemptsTimedOut,
  AllHostsUnavailable,
  CallerForbidden,
  type GatewayError,
  LaneSaturated,
  ModelDenied,
  ModelNotFound,
  UpstreamRejected
} from "../domain/Errors.ts"
import type { Plan, PlannedAttempt } from "../routing/Plan.ts"
import type { FailureKind } from "../upstream/OllamaUpstream.ts"
import { directReason, fallbackReason, type Miss } from "./Miss.ts"
import { describeSkip } from "./SkipReason.ts"

/** What the decider knows of the lane besides the plan. */
export interface AttemptsInput {
  readonly lane: string
  readonly model: string
  /** The lane's route, in order (the paid fallback's reason names hosts in route order). */
  readonly routeHosts: ReadonlyArray<string>
  readonly heavyModelMinParamsB: number
  readonly maxWaitMs: number
  readonly retryAfterSeconds: number
  /** Paid providers the lane may use: its `paid` list (direct) or its `paidFallback`; none without a paid route. */
  readonly paid: { readonly providers: ReadonlyArray<string>; readonly direct: boolean }
  readonly caller: Pick<CallerContext, "caller" | "mayPay">
  /** Attempts an earlier process made (an async run resumed): new ones are numbered after them. */
  readonly attemptsSoFar: number
}

/** What happened to the step the decider asked for. */
export type Outcome =
  | { readonly _tag: "Skipped"; readonly host: string }
  | { readonly _tag: "Busy"; readonly host: string }
  | { readonly _tag: "BreakerOpen"; readonly host: string }
  | {
    readonly _tag: "Failed"
    readonly host: string
    readonly kind: FailureKind
    readonly status: number | null
    readonly message: string
    /** The gateway's own event loop stalled this long during a timeout: not the host's failure. */
    readonly gatewayStallMs: number | null
  }
  | { readonly _tag: "Succeeded"; readonly host: string }
  | { readonly _tag: "SlotFreed" }
  /** The wait for a slot ended without one; `waited`: the whole maxWait went by (else the deadline had passed). */
  | { readonly _tag: "WaitExpired"; readonly waited: boolean }

/** What the lane does next. */
export type Next =
  | { readonly _tag: "Try"; readonly step: PlannedAttempt; readonly attempt: number }
  | { readonly _tag: "SkipConditional"; readonly host: string; readonly message: string }
  | { readonly _tag: "WaitForSlot"; readonly hosts: ReadonlyArray<string> }
  | { readonly _tag: "Done"; readonly host: string }
  | { readonly _tag: "Fail"; readonly error: GatewayError }
  /** Paid providers refused before any call (the caller may not pay): journaled, then `error`. */
  | { readonly _tag: "PaidRefused"; readonly error: GatewayError; readonly skipped: PaidSkipped }
  | { readonly _tag: "Pay"; readonly providers: ReadonlyArray<string>; readonly reason: string; readonly direct: boolean; readonly error: GatewayError; readonly attempts: number }

export interface PaidSkipped {
  readonly reason: string
  readonly providers: ReadonlyArray<string>
  readonly fallbackReason: string
  readonly caller: string | null
}

export interface State {
  readonly input: AttemptsInput
  readonly plan: Plan
  /** This round's steps, in plan order. */
  readonly round: ReadonlyArray<PlannedAttempt>
  /** The steps of this round not yet tried. */
  readonly pending: ReadonlyArray<PlannedAttempt>
  /** Busy hosts of this round, and the conditional steps waiting behind them. */
  readonly busy: ReadonlyArray<PlannedAttempt>
  readonly deferred: ReadonlyArray<PlannedAttempt>
  readonly misses: ReadonlyArray<Miss>
  /** Every host that failed so far could not take the request (a "when: unavailable" step may run). */
  readonly onlyUnavailable: boolean
  /** Attempts started, counting an earlier process's. */
  readonly attempts: number
  /** Set by an outcome that ends the loop (a success, a 4xx, a wait that expired). */
  readonly over: "succeeded" | "rejected" | "exhausted" | null
  readonly last: Next | null
}

export const initial = (input: AttemptsInput, plan: Plan): State => ({
  input,
  plan,
  round: plan.attempts,
  pending: plan.attempts,
  busy: [],
  deferred: [],
  misses: plan.skipped.map((s) => ({ host: s.host, kind: s.reason.kind, text: describeSkip(s) })),
  onlyUnavailable: plan.skipped.every((s) => s.reason.kind !== "heavy-model-denied"),
  attempts: input.attemptsSoFar,
  over: null,
  last: null
})

/** Conditional steps at the head of the round that wait behind a busy host move aside. */
const settle = (s: State): State => {
  let i = 0
  while (i < s.pending.length && s.pending[i]!.conditional && s.onlyUnavailable && s.busy.length > 0) i++
  return i === 0 ? s : { ...s, pending: s.pending.slice(i), deferred: [...s.deferred, ...s.pending.slice(0, i)] }
}

/** The step `next` asked for is the head of the round (after `settle`): it is done with. */
const tried = (s: State): State => ({ ...s, pending: s.pending.slice(1) })

const failedMiss = (o: Extract<Outcome, { _tag: "Failed" }>): Miss =>
  o.gatewayStallMs !== null
    ? { host: o.host, kind: "gateway-stall", text: `${o.host} timed out while the gateway's event loop was blocked ${o.gatewayStallMs}ms` }
    : { host: o.host, kind: o.kind, text: `${o.host} ${o.kind === "timeout" ? "timed out" : "failed"}: ${o.message}` }

const failed = (s: State, o: Extract<Outcome, { _tag: "Failed" }>): State => ({
  ...tried(s),
  attempts: s.attempts + 1,
  misses: [...s.misses, failedMiss(o)],
  onlyUnavailable: s.onlyUnavailable && (o.kind === "refused" || o.kind === "busy" || o.kind === "not-found"),
  over: o.kind === "rejected" ? "rejected" : null,
  last: o.kind === "rejected"
    ? { _tag: "Fail", error: new UpstreamRejected({ host: o.host, upstreamStatus: o.status ?? 400, upstreamError: o.message.replace(/^\d+: /, "") }) }
    : null
})

const waitExpired = (s: State, waited: boolean): State => ({
  ...s,
  misses: [...s.misses, ...s.busy.map((b) => ({ host: b.host, kind: "saturated", text: `${b.host} all slots busy${waited ? ` for ${s.input.maxWaitMs / 1000}s` : ""}` }))],
  over: "exhausted"
})

/** The state after `outcome` of the step `next(state)` asked for. */
export const evolve = (state: State, outcome: Outcome): State => {
  const s = settle(state)
  switch (outcome._tag) {
    case "Skipped": return tried(s)
    case "Busy": return { ...tried(s), busy: [...s.busy, s.pending[0]!] }
    case "BreakerOpen": return { ...tried(s), misses: [...s.misses, { host: outcome.host, kind: "circuit-open", text: `${outcome.host} circuit open` }] }
    case "Failed": return failed(s, outcome)
    case "Succeeded": return { ...tried(s), attempts: s.attempts + 1, over: "succeeded", last: { _tag: "Done", host: outcome.host } }
    case "SlotFreed": {
      const again = s.round.filter((p) => s.busy.includes(p) || s.deferred.includes(p))
      return { ...s, round: again, pending: again, busy: [], deferred: [] }
    }
    case "WaitExpired": return waitExpired(s, outcome.waited)
  }
}

/** The Ollama error once no host is left: what the misses have in common. */
const exhaustedError = (s: State): GatewayError => {
  const { lane, model, retryAfterSeconds } = s.input
  if (s.plan.attempts.length === 0) {
    const kinds = new Set(s.plan.skipped.map((k) => k.reason.kind))
    const hosts = s.plan.skipped.map((k) => k.host)
    if (kinds.size === 1 && kinds.has("heavy-model-denied")) {
      return new ModelDenied({ lane, model, rule: `policy.heavyModelMinParamsB=${s.input.heavyModelMinParamsB} on protected hosts`, hosts })
    }
    if (kinds.size === 1 && kinds.has("model-not-installed")) return new ModelNotFound({ lane, model, hosts })
    return new AllHostsUnavailable({ lane, reasons: s.misses.map((m) => m.text), retryAfterSeconds })
  }
  const misses = s.misses.filter((m) => m.kind !== "only-when-unavailable")
  const all = (test: (m: Miss) => boolean) => misses.length > 0 && misses.every(test)
  if (all((m) => m.kind === "saturated")) return new LaneSaturated({ lane, reason: misses.map((m) => m.text).join("; "), retryAfterSeconds })
  if (all((m) => m.kind === "timeout")) return new AllAttemptsTimedOut({ lane, reasons: misses.map((m) => m.text) })
  if (all((m) => m.kind === "not-found" || m.kind === "model-not-installed")) return new ModelNotFound({ lane, model, hosts: misses.map((m) => m.host) })
  return new AllHostsUnavailable({ lane, reasons: s.misses.map((m) => m.text), retryAfterSeconds })
}

/**
 * Every Ollama step failed (or the lane has none): the lane's paid providers when it has any and the
 * failures allow it (runbook: every endpoint failed or is circuit-open; a rule's refusal never falls
 * back to paying); otherwise the Ollama error as it is.
 */
const exhausted = (s: State): Next => {
  const error = exhaustedError(s)
  const { paid, caller, lane } = s.input
  const reason = paid.direct ? directReason(lane) : fallbackReason(s.misses, s.input.routeHosts)
  if (paid.providers.length === 0 || reason === null) return { _tag: "Fail", error }
  if (caller.mayPay === false) {
    // The caller's entry (anonymous.paidFallback: false by default) never spends money.
    const who = caller.caller ?? "anonymous"
    const skipped = { reason: `caller ${who} may not spend money on paid providers (paidFallback: false)`, providers: paid.providers, fallbackReason: reason, caller: caller.caller ?? null }
    const refusal = paid.direct ? new CallerForbidden({ caller: who, reason: `may not use the paid lane ${lane} (paidFallback: false)` }) : error
    return { _tag: "PaidRefused", error: refusal, skipped }
  }
  return { _tag: "Pay", providers: paid.providers, reason, direct: paid.direct, error, attempts: s.attempts }
}

/** What the lane does next, in `state`. */
export const next = (state: State): Next => {
  if (state.last !== null) return state.last
  if (state.over === "exhausted") return exhausted(state)
  const s = settle(state)
  const step = s.pending[0]
  if (step !== undefined) {
    if (step.conditional && !s.onlyUnavailable) {
      return { _tag: "SkipConditional", host: step.host, message: `${step.host} is used only when the hosts before it are unavailable` }
    }
    return { _tag: "Try", step, attempt: s.attempts + 1 }
  }
  if (s.busy.length > 0) return { _tag: "WaitForSlot", hosts: s.busy.map((b) => b.host) }
  return exhausted(s)
}

/** Given the plan and the outcomes so far: the next step (the lane keeps the state instead of replaying). */
export const decide = (input: AttemptsInput, plan: Plan, outcomes: ReadonlyArray<Outcome>): Next =>
  next(outcomes.reduce(evolve, initial(input, plan)))
