/**
 * Operating the rollout beside the routing, built on the gateway's actors (routing/Gateway.ts):
 * keep-warm keepers, shadow mode, async runs. Lane safety (Health.ts) is a pure view, not a service.
 */
import { Layer } from "effect"
import { AsyncRuns } from "./async/AsyncRuns.ts"
import { KeepWarmLive } from "./KeepWarm.ts"
import { ShadowMode } from "./Shadow.ts"

export const OperationsLive = Layer.mergeAll(KeepWarmLive, ShadowMode.Default, AsyncRuns.Default)
