/**
 * GET /awooop/health — the stage-1 health and residency view: per host what the poller last saw
 * (up/down, latency, version, resident and installed models), its breaker, its slots (in use, shared
 * and reserved per lane) and its maintenance window; per lane whether it is safe and why
 * (operations/Health.ts), plus the lane's mode (active | shadow) and whether it is async; per paid provider
 * whether it is available (its API key's variable set).
 */
import { HttpRouter } from "@effect/platform"
import { Clock, Effect } from "effect"
import { ClusterRole } from "../cluster/ClusterRole.ts"
import { Journal } from "../journal/Journal.ts"
import { AsyncRuns } from "../operations/async/AsyncRuns.ts"
import { Gateway } from "../routing/Gateway.ts"
import type { HostActor } from "../routing/Host.ts"
import { type HostFacts, type LaneSafety, laneSafety, type ProviderFacts } from "../operations/Health.ts"
import { jsonResponse } from "./ErrorResponse.ts"

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString())

/** One host as the health view (and the console's board) shows it. */
export interface HostHealthView {
  readonly status: "up" | "down" | "unknown"
  readonly protected: boolean
  readonly lastCheckedAt: string | null
  readonly lastLatencyMs: number | null
  readonly lastError: string | null
  readonly version: string | null
  readonly breaker: {
    readonly status: "closed" | "open" | "half-open"
    readonly consecutiveTimeouts: number
    readonly openedAt: string | null
    readonly reopensAt: string | null
    readonly probeInFlight: boolean
  }
  readonly slots: {
    readonly total: number
    readonly inUse: number
    readonly shared: { readonly total: number; readonly inUse: number }
    readonly reserved: Readonly<Record<string, { readonly total: number; readonly inUse: number }>>
  }
  readonly resident: ReadonlyArray<{ readonly name: string; readonly expiresAt: string | null; readonly sizeVram: number | null }> | null
  readonly installed: ReadonlyArray<{ readonly name: string; readonly parameterSize: string | null }> | null
  readonly maintenance: { readonly open: boolean; readonly reason: string | null; readonly until: string | null }
}

/** One host: what the routing facts need of it, and its health view. */
const hostHealth = (host: HostActor) =>
  Effect.gen(function*() {
    const h = yield* host.health
    const b = yield* host.breaker.snapshot
    const s = yield* host.slots.snapshot
    const m = yield* host.maintenance
    const facts: HostFacts = { status: h.status, resident: h.resident?.map((r) => r.name) ?? null }
    const view: HostHealthView = {
      status: h.status,
      protected: host.config.protected,
      lastCheckedAt: iso(h.lastCheckedAt),
      lastLatencyMs: h.lastLatencyMs,
      lastError: h.lastError,
      version: h.version,
      breaker: { status: b.status, consecutiveTimeouts: b.consecutiveTimeouts, openedAt: iso(b.openedAt), reopensAt: iso(b.reopensAt), probeInFlight: b.probeInFlight },
      slots: { total: s.total, inUse: s.inUse, shared: s.shared, reserved: s.reserved },
      resident: h.resident?.map((r) => ({ name: r.name, expiresAt: r.expiresAt, sizeVram: r.sizeVram })) ?? null,
      installed: h.installed?.map((i) => ({ name: i.name, parameterSize: i.parameterSize })) ?? null,
      maintenance: { open: m.open, reason: m.reason, until: iso(m.until) }
    }
    return { facts, view }
  })

/**
 * The journal: "degraded" while Postgres cannot take writes and events spill to local disk;
 * "unavailable" while the spill refuses too (new runs are refused with 503). Adds its lines to `summary`.
 */
const journalHealth = (summary: Array<string>) =>
  Effect.map(Effect.flatMap(Journal, (journal) => journal.stats), (j) => {
    if (j.unavailable) {
      summary.push(`journal: UNAVAILABLE — neither Postgres nor the local spill takes writes; new runs are refused (503); ${j.queued} events held`)
    } else if (j.degraded) summary.push(`journal: degraded — Postgres is not taking writes; ${j.spilled} events spilled to local disk, to be written once it is back`)
    const lostTotal = j.lost.dropped + j.lost.torn + j.lost.shutdown
    if (lostTotal > 0) summary.push(`journal: ${lostTotal} events lost since start (dropped ${j.lost.dropped}, torn ${j.lost.torn}); the log has an ERROR for each`)
    return {
      status: j.unavailable ? "unavailable" : j.degraded ? "degraded" : "ok",
      spilled: j.spilled,
      queued: j.queued,
      written: j.written,
      spillFailing: j.spillFailing,
      lost: j.lost
    }
  })

/** Whether the budget's hard kill is tripped; null when no lane pays, or the ledger does not answer. */
const hardKillOf = (gateway: Gateway) =>
  [...gateway.lanes.values()].some((l) => l.config.paid.length > 0)
    ? gateway.paid.budget.status.pipe(
      Effect.map((s): boolean | null => s.hardKill.tripped),
      // A black-holed database must not hang the health view: unknown → fail closed (null).
      Effect.disconnect,
      Effect.timeout("1 second"),
      Effect.orElseSucceed(() => null)
    )
    : Effect.succeed(null)

/** A paid provider without its key cannot serve anything: unavailable, and said so. */
const providersOf = (gateway: Gateway) => {
  const providers: Record<string, ProviderFacts & { readonly kind: string; readonly model: string }> = {}
  for (const [name, p] of gateway.paid.providers) {
    const env = gateway.config.providers[name]?.apiKeyEnv ?? "its API key variable"
    providers[name] = { kind: p.kind, model: p.model, available: p.configured, reason: p.configured ? null : `${env} is not set` }
  }
  return providers
}

/** Host → the runner whose entity holds its slots and breaker (null until its first answer). */
export const hostOwners = (gateway: Gateway) =>
  Effect.map(Effect.forEach([...gateway.hosts.values()], (h) => Effect.map(h.owner, (owner) => [h.name, owner] as const)), Object.fromEntries<string | null>)

export const healthView = Effect.gen(function*() {
  const gateway = yield* Gateway
  const now = yield* Clock.currentTimeMillis
  const hosts: Record<string, HostHealthView> = {}
  const facts: Record<string, HostFacts> = {}
  for (const host of gateway.hosts.values()) {
    const one = yield* hostHealth(host)
    facts[host.name] = one.facts
    hosts[host.name] = one.view
  }
  const hardKillTripped = yield* hardKillOf(gateway)
  const providers = providersOf(gateway)
  const lanes: Record<string, Omit<LaneSafety, "lane">> = {}
  const summary: Array<string> = []
  for (const [name, p] of Object.entries(providers)) if (!p.available) summary.push(`paid provider ${name}: unavailable — ${p.reason}`)
  const asyncRuns = yield* AsyncRuns
  const runStoreProblem = yield* asyncRuns.storeProblem
  for (const lane of gateway.lanes.values()) {
    const decision = lane.config.route.length > 0 ? (yield* lane.decide).plan : null
    const { lane: _, ...rest } = laneSafety(lane.name, lane.config, decision, facts, { hardKillTripped, providers }, runStoreProblem)
    lanes[lane.name] = rest
    summary.push(rest.summary)
  }
  const journal = yield* journalHealth(summary)
  const cluster = yield* (yield* ClusterRole).view
  const owners = cluster === null ? {} : yield* hostOwners(gateway)
  return {
    checkedAt: iso(now),
    summary,
    hosts,
    providers,
    lanes,
    journal,
    asyncRuns: { queuedOrRunning: yield* asyncRuns.pending, store: runStoreProblem === null ? "ok" : "unavailable", problem: runStoreProblem },
    // Only in a cluster: this runner, the cluster's runners, who runs each singleton ("host-health"
    // journals the hosts' health), and which runner's entity counts each host's slots (`hosts`).
    ...(cluster === null ? {} : { cluster: { ...cluster, hosts: owners } })
  }
})

export const healthRoutes = HttpRouter.empty.pipe(
  HttpRouter.get("/awooop/health", Effect.map(healthView, (view) => jsonResponse(view)))
)
