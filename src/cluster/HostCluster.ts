/**
 * The cluster's hosts (issue 13): the host entity registered on this runner (it may own any host)
 * and the host coordination every host actor of this replica uses (HostLink.ts), both built from
 * the gateway's config, which every replica shares.
 */
import { Duration, Effect, Layer } from "effect"
import { GatewayConfigTag, type GatewayConfig } from "../config/GatewayConfig.ts"
import { defaultConfig } from "../routing/Breaker.ts"
import { HostCoordination, reservationsOn } from "../routing/HostCoordination.ts"
import * as HostEntity from "./HostEntity.ts"
import * as HostLink from "./HostLink.ts"
import type { RunnerConfig } from "./Runner.ts"
import { defaultSlotLease, describe } from "./Runner.ts"

/** Each host's slots, reservations, breaker and longest attempt timeout, from the config. */
export const hostSettings = (config: GatewayConfig): Record<string, HostEntity.HostSettings> =>
  Object.fromEntries(Object.entries(config.hosts).map(([name, host]) => {
    const timeouts = Object.values(config.lanes).flatMap((lane) => lane.route.filter((s) => s.host === name).map((s) => s.timeout))
    return [name, {
      slots: host.slots,
      reservations: reservationsOn(config, name),
      breaker: { ...defaultConfig, consecutiveTimeouts: config.breaker.consecutiveTimeouts, cooldown: config.breaker.cooldown },
      longestTimeoutMs: Math.max(0, ...timeouts)
    }]
  }))

/** The lease timings: renewals five times per lease period; a grant waits at most 2 s. */
export const linkTimings = (leaseMs: number) => ({
  renewMs: Math.max(100, Math.floor(leaseMs / 5)),
  callTimeoutMs: Math.min(2_000, Math.max(200, Math.floor(leaseMs / 2))),
  retryMs: 100
})

/** The entity on this runner and this replica's coordination through it; needs Sharding and the config. */
export const layer = (runner: RunnerConfig) => {
  const leaseMs = Duration.toMillis(runner.slotLease ?? defaultSlotLease)
  const coordination = Layer.effect(
    HostCoordination,
    Effect.map(HostEntity.HostEntity.client, (client) =>
      HostLink.make(client, { replica: `${describe(runner)}#${crypto.randomUUID().slice(0, 8)}`, ...linkTimings(leaseMs) }))
  )
  const entity = Layer.unwrapEffect(Effect.map(GatewayConfigTag, (config) => HostEntity.layer({ hosts: hostSettings(config), leaseMs })))
  return Layer.merge(coordination, entity)
}
