/**
 * Shadow mode (runbook stage 2): the gateway computes its routing decision for a mirrored request,
 * does NOT execute it, and journals both choices and whether they agree.
 *
 * A request is shadowed when it carries `X-AwoooP-Shadow: 1`, or when its lane is in shadow mode now
 * (its config's `mode: shadow`, or the operator's switch at runtime, routing/LaneMode.ts: stages 3–4
 * move lanes to `active` one at a time; rolling one back is one call setting `shadow` again).
 * `X-AwoooP-Legacy-Endpoint` names what the legacy path called (a host name of the config or its
 * URL), `X-AwoooP-Legacy-Model` the model it used (default: the body's model).
 *
 * The decision is plan() against the live host view (the same call a real request makes), journaled
 * as `ShadowDecided` on a stream of its own (`shadow-<uuid>`, with the caller's trace and project).
 * Agreement: the gateway's first choice is the legacy endpoint's host and the models match.
 * Disagreements carry reasons by kind: `endpoint`, `model`, `legacy-endpoint-unknown`, or the rule
 * that would have refused the request (`heavy-model-denied`, `host-down`, `circuit-open`, …).
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect } from "effect"
import { type GatewayConfig, GatewayConfigTag } from "../config/GatewayConfig.ts"
import type { CallerContext } from "../domain/CallerContext.ts"
import type { ShadowEvent } from "../domain/Events.ts"
import type { Operation } from "../domain/OllamaApi.ts"
import { Journal } from "../journal/Journal.ts"
import { makeStreamWriter } from "../journal/StreamWriter.ts"
import { skipWords } from "../run/SkipReason.ts"
import type { LaneActor } from "../routing/Lane.ts"
import type { Plan, PlanInput } from "../routing/Plan.ts"
import { timeOrderedUuid } from "../domain/TimeOrderedId.ts"

export const ShadowHeaders = {
  shadow: "x-awooop-shadow",
  legacyEndpoint: "x-awooop-legacy-endpoint",
  legacyModel: "x-awooop-legacy-model"
} as const

/** `X-AwoooP-Shadow: 1` (or true/yes). */
export const isShadowRequested = (value: string | undefined): boolean =>
  value !== undefined && /^(1|true|yes)$/i.test(value.trim())

export interface ShadowReason {
  readonly kind: string
  readonly text: string
}

export interface ShadowDecision {
  readonly shadowId: string
  readonly lane: string
  /** "header" (a mirrored request) or "lane" (the lane is in shadow mode). */
  readonly via: "header" | "lane"
  readonly gateway: {
    readonly host: string | null
    readonly model: string | null
    readonly attempts: ReadonlyArray<string>
    readonly skipped: ReadonlyArray<{ readonly host: string; readonly kind: string; readonly text: string }>
  }
  readonly legacy: { readonly endpoint: string | null; readonly host: string | null; readonly model: string | null }
  /** null: the legacy choice is not known, so there is nothing to compare. */
  readonly agree: boolean | null
  readonly reasons: ReadonlyArray<ShadowReason>
}

const hostPort = (url: URL): string => {
  const port = url.port !== "" ? url.port : url.protocol === "https:" ? "443" : "80"
  return `${url.hostname.toLowerCase()}:${port}`
}

const parseUrl = (text: string): URL | null => {
  try {
    return new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `http://${text}`)
  } catch {
    return null
  }
}

/** The configured host a legacy endpoint names: by name, or by host and port of its URL. */
export const legacyHostOf = (endpoint: string, hosts: Readonly<Record<string, { readonly url: string }>>): string | null => {
  const trimmed = endpoint.trim()
  if (trimmed in hosts) return trimmed
  const url = parseUrl(trimmed)
  if (url === null) return null
  const key = hostPort(url)
  for (const [name, host] of Object.entries(hosts)) {
    const h = parseUrl(host.url)
    if (h !== null && hostPort(h) === key) return name
  }
  return null
}

/** Both choices side by side. Pure. */
export const compare = (
  lane: string,
  laneModel: string | null,
  decision: Plan | null,
  legacy: { readonly endpoint: string | null; readonly model: string | null },
  hosts: Readonly<Record<string, { readonly url: string }>>,
  /** A `paid` lane's providers: its choice is the first of them (named like hosts in the endpoint header). */
  paid: ReadonlyArray<string> = []
): Pick<ShadowDecision, "gateway" | "legacy" | "agree" | "reasons"> => {
  const attempts = decision === null && paid.length > 0 ? [...paid] : decision?.attempts.map((a) => a.host) ?? []
  const skipped = (decision?.skipped ?? []).map((s) => ({ host: s.host, kind: s.reason.kind, text: skipWords(s.host, s.reason, "operator") }))
  const gateway = { host: attempts[0] ?? null, model: laneModel, attempts, skipped }
  const legacyHost = legacy.endpoint === null
    ? null
    : paid.includes(legacy.endpoint.trim()) ? legacy.endpoint.trim() : legacyHostOf(legacy.endpoint, hosts)
  const legacyView = { endpoint: legacy.endpoint, host: legacyHost, model: legacy.model }
  if (legacy.endpoint === null) return { gateway, legacy: legacyView, agree: null, reasons: [] }

  const reasons: Array<ShadowReason> = []
  if (gateway.host === null) {
    // The gateway would not have served it at all: the rule (or outage) that refuses is the reason.
    const kinds = [...new Set(skipped.map((s) => s.kind).filter((k) => k !== "only-when-unavailable"))]
    if (kinds.length === 0) reasons.push({ kind: "no-route", text: `lane ${lane} has no host to try` })
    for (const kind of kinds) {
      reasons.push({ kind, text: `the gateway would refuse: ${skipped.filter((s) => s.kind === kind).map((s) => s.text).join(", ")}` })
    }
  } else if (legacyHost === null) {
    reasons.push({ kind: "legacy-endpoint-unknown", text: `legacy endpoint ${legacy.endpoint} is none of the configured hosts; the gateway picks ${gateway.host}` })
  } else if (legacyHost !== gateway.host) {
    reasons.push({ kind: "endpoint", text: `the gateway picks ${gateway.host}, legacy used ${legacyHost}` })
  }
  if (legacy.model !== null && laneModel !== null && legacy.model !== laneModel) {
    reasons.push({ kind: "model", text: `lane ${lane} assigns ${laneModel}, legacy used ${legacy.model}` })
  }
  return { gateway, legacy: legacyView, agree: reasons.length === 0, reasons }
}

export interface ShadowRequest {
  readonly lane: LaneActor
  readonly operation: Operation
  readonly caller: CallerContext
  readonly requestedModel: string | null
  readonly via: "header" | "lane"
  readonly legacyEndpoint: string | null
  readonly legacyModel: string | null
}

export interface Shadow {
  /** Decides and journals; never calls a host. */
  readonly decide: (request: ShadowRequest) => Effect.Effect<ShadowDecision>
  /** Agreement per lane since `since` (epoch ms), disagreements counted by reason. */
  readonly report: (options: { readonly lane: string | null; readonly since: number }) => Effect.Effect<ShadowReport, SqlError>
}

export interface ShadowLaneReport {
  readonly lane: string
  readonly decisions: number
  /** Decisions with a legacy choice to compare with. */
  readonly compared: number
  readonly agreed: number
  readonly disagreed: number
  /** agreed / compared; null when nothing was compared. */
  readonly agreement: number | null
  readonly disagreementsByReason: Readonly<Record<string, number>>
}

export interface ShadowReport {
  readonly since: string
  readonly lanes: ReadonlyArray<ShadowLaneReport>
}

export const make = (deps: { readonly config: GatewayConfig; readonly journal: Journal; readonly sql: SqlClient.SqlClient }): Shadow => {
  const decide = (request: ShadowRequest) =>
    Effect.gen(function*() {
      const shadowId = timeOrderedUuid()
      const lane = request.lane
      const hasRoute = lane.config.route.length > 0
      const decided: { readonly input: PlanInput; readonly plan: Plan } | null = hasRoute ? yield* lane.decide : null
      const legacyModel = request.legacyModel ?? request.requestedModel
      const laneModel = lane.config.model === "" ? null : lane.config.model
      const result = compare(lane.name, laneModel, decided?.plan ?? null, { endpoint: request.legacyEndpoint, model: legacyModel }, deps.config.hosts, lane.config.paid)
      const decision: ShadowDecision = { shadowId, lane: lane.name, via: request.via, ...result }
      const writer = makeStreamWriter<ShadowEvent>(deps.journal, {
        streamId: `shadow-${shadowId}`,
        traceId: request.caller.traceId,
        projectId: request.caller.projectId,
        lane: lane.name
      })
      yield* writer.append({
        _tag: "ShadowDecided",
        ...decision,
        operation: request.operation,
        requestedModel: request.requestedModel,
        intent: request.caller.intent,
        legacyCaller: request.caller.legacy,
        // The whole plan() input, so replay can recompute the gateway's side.
        ...(decided !== null ? { input: decided.input, plan: decided.plan } : {})
      })
      return decision
    })

  const report = (options: { readonly lane: string | null; readonly since: number }) =>
    Effect.gen(function*() {
      const since = new Date(options.since).toISOString()
      const laneFilter = options.lane === null ? deps.sql.literal("TRUE") : deps.sql.and([deps.sql`lane = ${options.lane}`])
      const totals = yield* deps.sql<{ lane: string; decisions: number; compared: number; agreed: number; disagreed: number }>`
        SELECT lane, count(*)::int AS decisions,
          count(*) FILTER (WHERE jsonb_typeof(data->'agree') = 'boolean')::int AS compared,
          count(*) FILTER (WHERE data->'agree' = 'true'::jsonb)::int AS agreed,
          count(*) FILTER (WHERE data->'agree' = 'false'::jsonb)::int AS disagreed
        FROM step_journal
        WHERE type = 'ShadowDecided' AND occurred_at >= ${since}::timestamptz AND ${laneFilter}
        GROUP BY lane ORDER BY lane`
      const reasons = yield* deps.sql<{ lane: string; kind: string; n: number }>`
        SELECT lane, r->>'kind' AS kind, count(DISTINCT stream_id)::int AS n
        FROM step_journal, jsonb_array_elements(data->'reasons') AS r
        WHERE type = 'ShadowDecided' AND occurred_at >= ${since}::timestamptz AND ${laneFilter}
          AND data->'agree' = 'false'::jsonb
        GROUP BY lane, r->>'kind' ORDER BY lane, kind`
      return {
        since,
        lanes: totals.map((t): ShadowLaneReport => {
          const byReason: Record<string, number> = {}
          for (const r of reasons) if (r.lane === t.lane) byReason[r.kind] = r.n
          return {
            lane: t.lane,
            decisions: t.decisions,
            compared: t.compared,
            agreed: t.agreed,
            disagreed: t.disagreed,
            agreement: t.compared === 0 ? null : t.agreed / t.compared,
            disagreementsByReason: byReason
          }
        })
      }
    })

  return { decide, report }
}

/** Shadow mode as a service: the shadow routes and the inference paths' shadow decisions. */
export class ShadowMode extends Effect.Service<ShadowMode>()("awooop/ShadowMode", {
  effect: Effect.gen(function*() {
    return make({ config: yield* GatewayConfigTag, journal: yield* Journal, sql: yield* SqlClient.SqlClient })
  })
}) {}
