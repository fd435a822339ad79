/**
 * The health and residency view (runbook stage 1): per host what the poller, the breaker, the slots
 * and the maintenance window say; per lane whether it is safe to send it traffic now, and why, in
 * words an operator can act on:
 *
 *   "alert-fast: safe — gemma3:4b resident on gcp-a and gcp-b"
 *   "code-review: unsafe — 111 down, gcp-b circuit open"
 *
 * A lane is safe when plan(), run against the live view, would attempt at least one host that was
 * seen up; a lane that keeps its model warm (`keepWarm`) is safe only when the model is resident on
 * one of those hosts (a cold load would blow the lane's latency budget). A `paid` lane is safe when
 * the budget hard kill is not tripped and at least one of its providers is available (its API key's
 * variable is set). An `async` lane is unsafe while the run store cannot accept or record runs.
 * `laneSafety` is pure; the HTTP route feeds it the live state.
 */
import type { LaneConfig } from "../config/GatewayConfig.ts"
import { sameModel } from "../domain/OllamaApi.ts"
import { skipWords } from "../run/SkipReason.ts"
import type { Plan } from "../routing/Plan.ts"

export interface LaneSafety {
  readonly lane: string
  readonly safe: boolean
  /** One line: "<lane>: safe|unsafe — <why>". */
  readonly summary: string
  readonly reasons: ReadonlyArray<string>
  readonly model: string | null
  readonly mode: "active" | "shadow"
  readonly async: boolean
  /** Hosts plan() would try, in order. */
  readonly planned: ReadonlyArray<string>
  /** Planned hosts where the model is resident now. */
  readonly residentOn: ReadonlyArray<string>
}

export interface HostFacts {
  readonly status: "up" | "down" | "unknown"
  /** Resident models; null when never polled. */
  readonly resident: ReadonlyArray<string> | null
}

/** "a", "a and b", "a, b and c". */
export const listWords = (items: ReadonlyArray<string>, last = "and"): string =>
  items.length <= 1 ? (items[0] ?? "") : `${items.slice(0, -1).join(", ")} ${last} ${items[items.length - 1]}`

/** A paid provider as health reports it: unavailable when its API key's variable is not set. */
export interface ProviderFacts {
  readonly available: boolean
  /** Why not ("GEMINI_API_KEY is not set"); null when available. */
  readonly reason: string | null
}

export interface PaidFacts {
  readonly hardKillTripped: boolean | null
  /** Per configured provider; a provider missing here is taken as available (pure callers, old tests). */
  readonly providers?: Readonly<Record<string, ProviderFacts>>
}

const unavailableOf = (names: ReadonlyArray<string>, paid: PaidFacts): Array<string> =>
  names.flatMap((name) => {
    const p = paid.providers?.[name]
    return p === undefined || p.available ? [] : [`${name} unavailable (${p.reason ?? "not configured"})`]
  })

/** The verdict of one lane: its summary line says the reasons, and shadow mode when it is on. */
type Verdict = (safe: boolean, reasons: ReadonlyArray<string>, planned?: ReadonlyArray<string>, residentOn?: ReadonlyArray<string>) => LaneSafety

/** A paid lane: its providers' keys and the budget hard kill decide, not hosts. */
const paidLaneSafety = (config: LaneConfig, paid: PaidFacts, verdict: Verdict): LaneSafety => {
  const providers = `paid providers ${listWords(config.paid)}`
  const unavailable = unavailableOf(config.paid, paid)
  // Every provider of the lane without its key: each request would be refused, whatever the budget says.
  if (unavailable.length === config.paid.length) return verdict(false, [`no paid provider available: ${unavailable.join(", ")}`])
  if (paid.hardKillTripped === true) return verdict(false, [`${providers}: the budget hard kill is tripped`, ...unavailable])
  if (paid.hardKillTripped === null) return verdict(false, [`${providers}: the budget ledger is unreachable (fail closed)`, ...unavailable])
  const usable = config.paid.filter((name) => paid.providers?.[name]?.available !== false)
  return verdict(true, [`paid providers ${listWords(usable)} behind the budget (hard kill not tripped)`, ...unavailable])
}

/** What the lane's paid fallback adds to an Ollama lane's reasons. */
const fallbackWords = (config: LaneConfig, paid: PaidFacts): Array<string> => {
  if (config.paidFallback.length === 0) return []
  const usable = config.paidFallback.filter((name) => paid.providers?.[name]?.available !== false)
  return [
    ...(usable.length > 0 ? [`paid fallback ${listWords(usable)} would be asked (budget permitting)`] : []),
    ...unavailableOf(config.paidFallback, paid).map((u) => `paid fallback ${u}`)
  ]
}

/** The planned hosts of an Ollama lane, as the verdict about residency needs them. */
interface Placement {
  readonly planned: ReadonlyArray<string>
  /** Unconditional steps; conditional ones (`when: unavailable`) are backups, described apart. */
  readonly primary: ReadonlyArray<string>
  readonly seenUp: ReadonlyArray<string>
  readonly residentOn: ReadonlyArray<string>
  readonly notes: Array<string>
}

/** Where the lane's model is (or would be loaded): resident, installed, and keep-warm's part in it. */
const residencyVerdict = (config: LaneConfig, hosts: Readonly<Record<string, HostFacts>>, p: Placement, verdict: Verdict): LaneSafety => {
  const model = config.model
  const { notes, planned, residentOn, seenUp } = p
  if (config.keepWarm.length > 0) {
    const keepWarm = config.keepWarm.filter((h) => p.primary.includes(h))
    const warm = residentOn.filter((h) => keepWarm.includes(h))
    if (warm.length === 0) {
      const cold = seenUp.length > 0 ? [`${listWords(seenUp)} would load it cold`] : []
      return verdict(false, [`${model} not resident on ${listWords(config.keepWarm, "or")} (keep-warm reloads it)`, ...cold, ...notes], planned, residentOn)
    }
    const coldKeepWarm = keepWarm.filter((h) => !warm.includes(h) && hosts[h]?.status === "up")
    if (coldKeepWarm.length > 0) notes.unshift(`not resident on ${listWords(coldKeepWarm)} (keep-warm reloads it)`)
    return verdict(true, [`${model} resident on ${listWords(warm)}`, ...notes], planned, residentOn)
  }
  const cold = seenUp.filter((h) => !residentOn.includes(h))
  const where = [
    ...(residentOn.length > 0 ? [`${model} resident on ${listWords(residentOn)}`] : []),
    ...(cold.length > 0 ? [`${residentOn.length > 0 ? "" : `${model} `}installed on ${listWords(cold)} (not resident: the first request loads it)`] : [])
  ]
  return verdict(true, [where.join(", "), ...notes], planned, residentOn)
}

/** An Ollama lane: safe when plan() would attempt a host seen up (with the model resident, for keep-warm lanes). */
const hostedLaneSafety = (config: LaneConfig, decision: Plan, hosts: Readonly<Record<string, HostFacts>>, paid: PaidFacts, verdict: Verdict): LaneSafety => {
  const skipped = decision.skipped.filter((s) => s.reason.kind !== "only-when-unavailable").map((s) => skipWords(s.host, s.reason, "operator"))
  const planned = decision.attempts.map((a) => a.host)
  const primary = decision.attempts.filter((a) => !a.conditional).map((a) => a.host)
  const seenUp = primary.filter((h) => hosts[h]?.status === "up")
  const residentOn = seenUp.filter((h) => (hosts[h]?.resident ?? []).some((m) => sameModel(m, config.model)))
  const backups = decision.attempts.filter((a) => a.conditional).map((a) => a.host)

  if (planned.length === 0) return verdict(false, [...(skipped.length > 0 ? [skipped.join(", ")] : ["no host on the route"]), ...fallbackWords(config, paid)])
  if (seenUp.length === 0) {
    return verdict(false, [`${listWords(primary, "or")} not polled yet`, ...(skipped.length > 0 ? [skipped.join(", ")] : [])], planned)
  }
  const notes: Array<string> = []
  if (skipped.length > 0) notes.push(skipped.join(", "))
  if (backups.length > 0) notes.push(`${listWords(backups)} only if the hosts before it are unavailable`)
  return residencyVerdict(config, hosts, { planned, primary, seenUp, residentOn, notes }, verdict)
}

export const laneSafety = (
  lane: string,
  config: LaneConfig,
  decision: Plan | null,
  hosts: Readonly<Record<string, HostFacts>>,
  paid: PaidFacts = { hardKillTripped: null },
  /** Why async runs cannot be accepted or recorded now (null: they can). */
  runStoreProblem: string | null = null
): LaneSafety => {
  const base = { lane, model: config.model === "" ? null : config.model, mode: config.mode, async: config.async }
  const verdict: Verdict = (safe, reasons, planned = [], residentOn = []) => ({
    ...base,
    safe,
    reasons,
    planned,
    residentOn,
    summary: `${lane}: ${safe ? "safe" : "unsafe"} — ${reasons.join("; ")}${config.mode === "shadow" ? " (shadow mode: decisions are journaled, nothing is executed)" : ""}`
  })
  if (config.paid.length > 0) return paidLaneSafety(config, paid, verdict)
  if (decision === null) return verdict(false, ["no route"])
  if (config.async && runStoreProblem !== null) return verdict(false, [`async runs: ${runStoreProblem}`], decision.attempts.map((a) => a.host))
  return hostedLaneSafety(config, decision, hosts, paid, verdict)
}
