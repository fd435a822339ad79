/**
 * Where a host's slots and breaker are kept. The default is this process: a local semaphore
 * (Slots.ts) and a local breaker (Breaker.ts), exactly the single-runner gateway. In a cluster
 * (AWOOOP_RUNNER_PORT set) cluster/HostLink.ts provides the same two interfaces backed by the host's
 * entity, so every replica shares one count of the host's slots and one breaker; the lane and the
 * attempt loop do not know which they use.
 */
import { Context, Effect, type Scope } from "effect"
import type { GatewayConfig } from "../config/GatewayConfig.ts"
import * as Breaker from "./Breaker.ts"
import * as Slots from "./Slots.ts"

export interface HostParts {
  readonly slots: Slots.Slots
  readonly breaker: Breaker.Breaker
  /** The runner that counts this host's slots; null when this process does (the single runner). */
  readonly owner: Effect.Effect<string | null>
}

export interface HostCoordinationShape {
  readonly make: (
    host: string,
    slots: number,
    reservations: Readonly<Record<string, number>>,
    breaker: Breaker.BreakerConfig,
    onTransition: (t: Breaker.BreakerTransition) => Effect.Effect<void>
  ) => Effect.Effect<HostParts, never, Scope.Scope>
}

const local: HostCoordinationShape = {
  make: (host, slots, reservations, breaker, onTransition) =>
    Effect.zipWith(
      Slots.make(slots, reservations),
      Breaker.make(host, breaker, onTransition),
      (slots, breaker) => ({ slots, breaker, owner: Effect.succeed(null) })
    )
}

export class HostCoordination extends Context.Reference<HostCoordination>()("awooop/HostCoordination", { defaultValue: () => local }) {}

/** The lanes' reserved slots on `host` (lanes that reserve none are left out). */
export const reservationsOn = (config: GatewayConfig, host: string): Record<string, number> => {
  const reservations: Record<string, number> = {}
  for (const [laneName, lane] of Object.entries(config.lanes)) {
    const n = lane.reserved[host]
    if (n !== undefined && n > 0) reservations[laneName] = n
  }
  return reservations
}
