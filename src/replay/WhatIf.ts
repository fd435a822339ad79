/**
 * `journal what-if --config other.yaml [--since ISO]`: replays every recorded decision under
 * another config — its lanes' models, routes and timeouts, its host protection and its policy —
 * against the host state recorded at the time, and summarises what would have changed.
 *
 * The recorded snapshot only has the hosts of the old route. A host the new route adds was not
 * observed; it is taken as "unknown" (up, breaker closed, installed models unknown), the same
 * benefit of the doubt plan() gives a host that has not been polled yet. The summary says so.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect, Either } from "effect"
import type { GatewayConfig } from "../config/GatewayConfig.ts"
import { fields } from "../projections/Event.ts"
import type { HostView, Plan, PlanInput } from "../routing/Plan.ts"
import { inputOf, type RecordedDecision, replay, scanDecisions } from "./Decisions.ts"

export interface LaneWhatIf {
  readonly lane: string
  readonly decisions: number
  readonly unchanged: number
  /** "gcp-a → 111": decisions whose first host would change (a null side is "no host to try"). */
  readonly firstHostChanged: Readonly<Record<string, number>>
  /** Of those, which endpoint actually answered at the time (run_state). */
  readonly answeredBy: Readonly<Record<string, number>>
  /** Same first host; other hosts, order, timeouts or conditions differ. */
  readonly otherwiseChanged: number
  /** Hosts the new route names that the recorded snapshot did not (assumed up). */
  readonly unobservedHosts: ReadonlyArray<string>
  readonly laneMissing: boolean
  readonly model: { readonly from: string; readonly to: string } | null
  /** Recorded decisions whose input could not be replayed. */
  readonly unreadable: number
}

export interface WhatIfReport {
  readonly since: number | null
  readonly decisions: number
  readonly changed: number
  readonly lanes: ReadonlyArray<LaneWhatIf>
}

const unobserved = (config: GatewayConfig, host: string): HostView => {
  const h = config.hosts[host]
  return {
    protected: h?.protected ?? false,
    health: "unknown",
    breaker: { status: "closed", reopensAt: null, probeInFlight: false },
    maintenance: { open: false, until: null },
    installed: null,
    slots: { total: h?.slots ?? 0, inUse: 0, freeForLane: h?.slots ?? 0 }
  }
}

/** The recorded input as the other config would have built it. */
export const reinput = (
  recorded: PlanInput,
  config: GatewayConfig
): { readonly input: PlanInput; readonly unobserved: ReadonlyArray<string> } | null => {
  const lane = config.lanes[recorded.lane]
  if (lane === undefined) return null
  const route = lane.route.map((s) => ({ host: s.host, timeoutMs: s.timeout, when: s.when }))
  const hosts: Record<string, HostView> = {}
  const missing: Array<string> = []
  // The journal records each host's installed list for the recorded model only (routing/Lane.ts):
  // under another model, whether it was installed is unknown — as for a host never polled.
  const sameModel = lane.model === recorded.model
  for (const step of route) {
    if (hosts[step.host] !== undefined) continue
    const seen = recorded.hosts[step.host]
    if (seen === undefined) missing.push(step.host)
    hosts[step.host] = seen === undefined
      ? unobserved(config, step.host)
      : {
        ...seen,
        protected: config.hosts[step.host]?.protected ?? seen.protected,
        installed: sameModel ? seen.installed : null
      }
  }
  return {
    input: {
      ...recorded,
      model: lane.model,
      route,
      hosts,
      policy: { heavyModelMinParamsB: config.policy.heavyModelMinParamsB }
    },
    unobserved: missing
  }
}

const firstHost = (p: Plan | null): string | null => p?.attempts[0]?.host ?? null

const sameAttempts = (a: Plan, b: Plan) =>
  a.attempts.length === b.attempts.length &&
  a.attempts.every((x, i) => {
    const y = b.attempts[i]!
    return x.host === y.host && x.timeoutMs === y.timeoutMs && x.conditional === y.conditional
  })

interface Acc {
  decisions: number
  unchanged: number
  firstHostChanged: Record<string, number>
  answeredBy: Record<string, number>
  otherwiseChanged: number
  unobserved: Set<string>
  laneMissing: boolean
  models: Map<string, string>
  unreadable: number
}

const emptyAcc = (): Acc => ({
  decisions: 0, unchanged: 0, firstHostChanged: {}, answeredBy: {}, otherwiseChanged: 0,
  unobserved: new Set(), laneMissing: false, models: new Map(), unreadable: 0
})

const count = (tally: Record<string, number>, key: string) => {
  tally[key] = (tally[key] ?? 0) + 1
}

/** Adds one recorded decision, replayed under `config`, to its lane's tally. */
const tally = (acc: Acc, d: RecordedDecision, input: PlanInput | null, config: GatewayConfig): void => {
  acc.decisions++
  if (input === null) {
    acc.unreadable++
    return
  }
  const before = fields(d.data).plan as Plan
  const next = reinput(input, config)
  if (next === null) {
    acc.laneMissing = true
    return
  }
  for (const h of next.unobserved) acc.unobserved.add(h)
  if (next.input.model !== input.model) acc.models.set(input.model, next.input.model)
  const after = replay(next.input)
  if (Either.isLeft(after)) {
    acc.unreadable++
    return
  }
  const from = firstHost(before)
  const to = firstHost(after.right)
  if (from !== to) {
    count(acc.firstHostChanged, `${from ?? "(no host)"} → ${to ?? "(no host)"}`)
    count(acc.answeredBy, d.endpoint ?? (d.status === null ? "(not projected)" : "(no answer)"))
  } else if (!sameAttempts(before, after.right)) {
    acc.otherwiseChanged++
  } else {
    acc.unchanged++
  }
}

const laneReport = (lane: string, acc: Acc): LaneWhatIf => {
  const [model] = acc.models.entries()
  return {
    lane,
    decisions: acc.decisions,
    unchanged: acc.unchanged,
    firstHostChanged: acc.firstHostChanged,
    answeredBy: acc.answeredBy,
    otherwiseChanged: acc.otherwiseChanged,
    unobservedHosts: [...acc.unobserved].sort(),
    laneMissing: acc.laneMissing,
    model: model === undefined ? null : { from: model[0], to: model[1] },
    unreadable: acc.unreadable
  }
}

export const whatIf = (
  sql: SqlClient.SqlClient,
  config: GatewayConfig,
  options: { readonly since?: number | undefined } = {}
): Effect.Effect<WhatIfReport, SqlError> =>
  Effect.gen(function*() {
    const lanes = new Map<string, Acc>()
    const decisions = yield* scanDecisions(sql, (batch) =>
      Effect.sync(() => {
        for (const d of batch) {
          const input = inputOf(d.data)
          const lane = input?.lane ?? d.lane ?? "?"
          const acc = lanes.get(lane) ?? emptyAcc()
          lanes.set(lane, acc)
          tally(acc, d, input, config)
        }
      }), { since: options.since, outcomes: true })
    const report = [...lanes.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([lane, acc]) => laneReport(lane, acc))
    return {
      since: options.since ?? null,
      decisions,
      changed: report.reduce((n, l) => n + l.decisions - l.unchanged, 0),
      lanes: report
    }
  })

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`

export const renderText = (r: WhatIfReport, configName: string): string => {
  const lines = [
    `what-if under ${configName}: ${plural(r.decisions, "recorded decision")}` +
      `${r.since === null ? "" : ` since ${new Date(r.since).toISOString()}`} replayed; ${r.changed} would change.`
  ]
  for (const l of r.lanes) {
    if (l.laneMissing) {
      lines.push(`${l.lane}: the lane is not in ${configName}: ${plural(l.decisions, "request")} would be refused as an unknown lane`)
      continue
    }
    if (l.model !== null) {
      lines.push(`${l.lane}: model ${l.model.from} → ${l.model.to} (whether the hosts had ${l.model.to} installed is not in the journal; assumed yes)`)
    }
    for (const [change, n] of Object.entries(l.firstHostChanged).sort(([, a], [, b]) => b - a)) {
      const [from, to] = change.split(" → ")
      const what = to === "(no host)"
        ? `would have had no host to try (refused; first host was ${from})`
        : from === "(no host)"
        ? `refused at the time would have gone to ${to}`
        : `would have gone to ${to} first (was ${from})`
      lines.push(`${l.lane}: ${plural(n, "request")} of ${l.decisions} ${what}`)
    }
    const answered = Object.entries(l.answeredBy)
    if (answered.length > 0) {
      lines.push(`  (those were answered at the time by ${answered.sort(([, a], [, b]) => b - a).map(([h, n]) => `${h} ${n}`).join(", ")})`)
    }
    if (l.otherwiseChanged > 0) {
      lines.push(`${l.lane}: ${plural(l.otherwiseChanged, "request")} keep the first host but would try other hosts, order or timeouts after it`)
    }
    if (l.unchanged === l.decisions) lines.push(`${l.lane}: no change (${plural(l.decisions, "request")})`)
    if (l.unobservedHosts.length > 0) {
      lines.push(`  note: ${l.unobservedHosts.join(", ")} ${l.unobservedHosts.length === 1 ? "was" : "were"} not in the recorded host state; assumed up`)
    }
    if (l.unreadable > 0) lines.push(`  note: ${plural(l.unreadable, "recorded decision")} could not be replayed (see \`journal verify\`)`)
  }
  return lines.join("\n")
}
