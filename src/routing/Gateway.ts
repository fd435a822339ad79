/**
 * The gateway's actors, built from the config: one host actor per host and one lane actor per lane,
 * living as long as the service's scope (their pollers stop with it).
 */
import { Effect } from "effect"
import { GatewayConfigTag } from "../config/GatewayConfig.ts"
import type { LaneRules } from "../domain/CallerContext.ts"
import { Journal } from "../journal/Journal.ts"
import { OllamaUpstream } from "../upstream/OllamaUpstream.ts"
import * as Host from "./Host.ts"
import * as Lane from "./Lane.ts"

export class Gateway extends Effect.Service<Gateway>()("awooop/Gateway", {
  scoped: Effect.gen(function*() {
    const config = yield* GatewayConfigTag
    const journal = yield* Journal
    const upstream = yield* OllamaUpstream

    const hosts = new Map<string, Host.HostActor>()
    for (const [name, hostConfig] of Object.entries(config.hosts)) {
      const reservations: Record<string, number> = {}
      for (const [laneName, lane] of Object.entries(config.lanes)) {
        const n = lane.reserved[name]
        if (n !== undefined && n > 0) reservations[laneName] = n
      }
      hosts.set(name, yield* Host.make(name, hostConfig, reservations, {
        journal,
        upstream,
        breaker: { consecutiveTimeouts: config.breaker.consecutiveTimeouts, cooldownMs: config.breaker.cooldown },
        pollIntervalMs: config.server.pollInterval,
        probeTimeoutMs: config.server.probeTimeout
      }))
    }
    const lanes = new Map<string, Lane.LaneActor>()
    for (const [name, laneConfig] of Object.entries(config.lanes)) {
      lanes.set(name, yield* Lane.make(name, laneConfig, { journal, upstream, hosts, config }))
    }
    const laneRules: LaneRules = {
      lanes: [...lanes.keys()],
      legacyProjectId: config.legacy.projectId,
      legacyLanes: config.legacy.lanes
    }
    return { config, hosts, lanes, laneRules, upstream } as const
  }),
  dependencies: [OllamaUpstream.Default]
}) {}
