/**
 * The gateway's actors, built from the config: one host actor per host and one lane actor per lane,
 * living as long as the service's scope (their pollers stop with it). The operations built on them
 * (keep-warm, shadow mode, async runs) are their own layers: operations/Operations.ts.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Config, Effect, Option, Redacted, Schedule } from "effect"
import { type GatewayConfig, GatewayConfigTag } from "../config/GatewayConfig.ts"
import type { LaneRules } from "../domain/CallerContext.ts"
import type { LaneEvent } from "../domain/Events.ts"
import { Journal } from "../journal/Journal.ts"
import { closeOrphanedRuns } from "../journal/Orphans.ts"
import { EventLoopLag } from "../observability/EventLoopLag.ts"
import { Metrics } from "../observability/Metrics.ts"
import * as RunObserver from "../observability/RunObserver.ts"
import { ClusterRole } from "../cluster/ClusterRole.ts"
import * as Instances from "../cluster/Instances.ts"
import { makeSharedStreamWriter } from "../cluster/SharedStreamWriter.ts"
import type { StreamBase } from "../journal/StreamWriter.ts"
import * as LaneModes from "../operations/LaneModes.ts"
import * as MaintenanceWindows from "../operations/MaintenanceWindows.ts"
import { OllamaUpstream } from "../upstream/OllamaUpstream.ts"
import { makeIdentify } from "./Callers.ts"
import { BodyBudget } from "../http/RequestLimits.ts"
import * as Host from "./Host.ts"
import { reservationsOn } from "./HostCoordination.ts"
import * as Lane from "./Lane.ts"
import * as LaneMode from "./LaneMode.ts"
import { PaidRoute } from "./PaidRoute.ts"

/** A single runner: at start-up every run of another instance is an orphan. Retried while Postgres is away. */
const startUpOrphans = (journal: Journal, sql: SqlClient.SqlClient) => {
  const close = closeOrphanedRuns(journal, sql, (instance) => instance === journal.instance)
  return close.pipe(
    Effect.asVoid,
    Effect.catchAll((error) =>
      Effect.zipRight(
        Effect.logError("Journal: closing orphaned runs failed; retrying in the background", error),
        Effect.forkScoped(close.pipe(Effect.retry(Schedule.spaced("10 seconds")), Effect.ignore))
      )
    )
  )
}

/** One host actor per configured host, each with the lanes' reservations on it. */
const makeHosts = (
  config: GatewayConfig,
  deps: Omit<Host.HostDeps, "breaker" | "pollIntervalMs" | "probeTimeoutMs" | "observe"> & {
    readonly observe: (host: string) => NonNullable<Host.HostDeps["observe"]>
  }
) =>
  Effect.gen(function*() {
    const hosts = new Map<string, Host.HostActor>()
    for (const [name, hostConfig] of Object.entries(config.hosts)) {
      hosts.set(name, yield* Host.make(name, hostConfig, reservationsOn(config, name), {
        ...deps,
        breaker: { consecutiveTimeouts: config.breaker.consecutiveTimeouts, cooldownMs: config.breaker.cooldown },
        pollIntervalMs: config.server.pollInterval,
        probeTimeoutMs: config.server.probeTimeout,
        observe: deps.observe(name)
      }))
    }
    return hosts
  })

/** Who may call which lane: the callers' keys (with the admin token), the legacy bootstrap rules. */
const makeLaneRules = (config: GatewayConfig, lanes: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const adminToken = yield* Config.option(Config.redacted("AWOOOP_ADMIN_TOKEN")).pipe(
      Effect.map(Option.match({ onNone: () => null, onSome: Redacted.value })),
      Effect.orElseSucceed(() => null)
    )
    const identify = makeIdentify(config.callers, config.anonymous, adminToken, config.legacy.projectId)
    if (identify === undefined) {
      yield* Effect.logWarning("no `callers:` in the config: open mode, any caller may use every lane and spend the paid budget")
    }
    return {
      lanes: [...lanes],
      legacyProjectId: config.legacy.projectId,
      legacyLanes: config.legacy.lanes,
      ...(identify === undefined ? {} : { identify })
    } satisfies LaneRules
  })

/** How soon a replica sees a window or a lane mode another one changed. */
const operatorStatePollMs = 1_000

export class Gateway extends Effect.Service<Gateway>()("awooop/Gateway", {
  scoped: Effect.gen(function*() {
    const config = yield* GatewayConfigTag
    const journal = yield* Journal
    const upstream = yield* OllamaUpstream
    const paid = yield* PaidRoute
    // Live metrics and spans follow every run's and host's journal facts.
    const metrics = yield* Metrics
    const observers = RunObserver.make(metrics, config)
    const lag = yield* EventLoopLag
    const sql = yield* SqlClient.SqlClient
    const windows = MaintenanceWindows.makeStore(sql)
    const role = yield* ClusterRole
    const clustered = role.runner !== null
    // In a cluster every replica polls the hosts for its own view; the holder of this singleton journals it.
    let healthJournaler = !clustered
    if (clustered) {
      yield* role.singleton("host-health", Effect.acquireRelease(Effect.sync(() => { healthJournaler = true }), () => Effect.sync(() => { healthJournaler = false })))
    }

    const hosts = yield* makeHosts(config, {
      journal,
      upstream,
      lag,
      observe: observers.host,
      windows,
      journalsHealth: () => healthJournaler,
      ...(clustered ? { sharedWriter: (base: StreamBase) => makeSharedStreamWriter(journal, sql, base) } : {})
    })
    // Windows opened before a restart or by another replica, before the first request is served.
    yield* MaintenanceWindows.follow(sql, hosts, clustered ? operatorStatePollMs : null)
    const lanes = new Map<string, Lane.LaneActor>()
    const modes = LaneModes.makeStore(sql)
    for (const [name, laneConfig] of Object.entries(config.lanes)) {
      const mode = yield* LaneMode.make(name, laneConfig.mode, {
        journal,
        store: modes,
        ...(clustered ? { sharedWriter: (base: StreamBase) => makeSharedStreamWriter<LaneEvent>(journal, sql, base) } : {})
      })
      lanes.set(name, yield* Lane.make(name, laneConfig, { journal, upstream, hosts, config, paid, lag, observe: observers.run, mode }))
    }
    // Lane modes the operator set before a restart or on another replica, before the first request is served.
    yield* LaneModes.follow(sql, lanes, clustered ? operatorStatePollMs : null)
    const laneRules = yield* makeLaneRules(config, [...lanes.keys()])
    // Unfinished request bodies, all routes together (http/RequestLimits.ts).
    const bodies = new BodyBudget(config.server)
    // Runs a killed process left open end now (after the budget's recovery, which may journal on them).
    // In a cluster the other processes may be alive: their runs end once their heartbeat stops.
    if (!clustered) yield* startUpOrphans(journal, sql)
    else {
      yield* Instances.heartbeat(sql, journal.instance, role.runner, Math.max(500, role.lockExpirationMs / 3))
      yield* role.singleton("orphan-release", Instances.releaseOrphans(journal, sql, role.lockExpirationMs))
    }
    return { config, hosts, lanes, laneRules, upstream, paid, metrics, bodies, lag } as const
  }),
  dependencies: [OllamaUpstream.Default, PaidRoute.Default, Metrics.Default, EventLoopLag.Default]
}) {}
