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

/**
 * The lease timings: renewals five times per lease period; a grant waits at most 2 s. Parking
 * (ParkedLeases.ts): a parked lease lingers 1 s; while any is parked the link syncs every 250 ms
 * (the entity's `wanted` lasts half a lease period, so two syncs hear it); a lease is parked or
 * reused only while its last confirmation is younger than the lease period less a renew period and
 * a call timeout, so it is still alive at the entity until the next renewal has had time to reach it.
 */
export const linkTimings = (leaseMs: number) => {
  const renewMs = Math.max(100, Math.floor(leaseMs / 5))
  const callTimeoutMs = Math.min(2_000, Math.max(200, Math.floor(leaseMs / 2)))
  return {
    renewMs,
    callTimeoutMs,
    retryMs: 100,
    park: { lingerMs: 1_000, syncMs: Math.min(250, renewMs), freshMs: Math.max(0, leaseMs - renewMs - callTimeoutMs) }
  }
}

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
