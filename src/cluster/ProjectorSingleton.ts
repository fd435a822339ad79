/**
 * The projector once per cluster (issue 13), wrapped from outside: in a cluster every replica's
 * Projector keeps its API (catch-up on demand, lag, status) with its background loop off, and the
 * holder of the "projector" singleton runs that loop — the same catch-up at the same interval.
 * Catch-ups already lock the checkpoint row, so a moment of overlap during a hand-over is harmless.
 */
import { Effect, Layer, Schedule } from "effect"
import { Projector, ProjectorConfig, ProjectorConfigFromEnv } from "../projections/Projector.ts"
import { ClusterRole } from "./ClusterRole.ts"

/** The env's projector config; in a cluster with the replica's own loop off. */
export const ProjectorConfigLive = Layer.unwrapEffect(
  Effect.map(ClusterRole, (role) =>
    role.runner === null
      ? ProjectorConfigFromEnv
      : Layer.effect(ProjectorConfig, Effect.map(ProjectorConfig, (c) => ({ ...c, enabled: false }))).pipe(Layer.provide(ProjectorConfigFromEnv))
  )
)

/** In a cluster, the "projector" singleton (when the env enables projecting). */
export const ProjectorSingletonLive = Layer.scopedDiscard(Effect.gen(function*() {
  const role = yield* ClusterRole
  if (role.runner === null) return
  const config = yield* ProjectorConfig.pipe(Effect.provide(ProjectorConfigFromEnv))
  if (!config.enabled) return
  const projector = yield* Projector
  const tick = projector.catchUp.pipe(Effect.catchAll((error) => Effect.logWarning("Projector: catch-up failed; retrying every interval", error)))
  yield* role.singleton("projector", Effect.asVoid(Effect.repeat(tick, Schedule.spaced(config.interval))))
}))
