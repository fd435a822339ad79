/**
 * How every replica keeps the operator's state stored in Postgres (maintenance windows, lane modes:
 * MaintenanceWindows.ts, LaneModes.ts): it loads it before the gateway serves (retried in the
 * background while Postgres is away), then — in a cluster — follows the other replicas' changes
 * every `intervalMs`. A single runner (`null`) is the only writer of its state: it loads it once and
 * does not poll.
 */
import { Effect, Schedule } from "effect"

export const follow = <E, R>(what: string, poll: Effect.Effect<void, E, R>, intervalMs: number | null) => {
  if (intervalMs === null) {
    return poll.pipe(
      Effect.catchAll((error) =>
        Effect.zipRight(
          Effect.logError(`${what}: not loaded at start (Postgres unavailable); retrying`, error),
          Effect.forkScoped(poll.pipe(Effect.retry(Schedule.spaced("5 seconds")), Effect.ignore))
        )),
      Effect.asVoid
    )
  }
  const loop = poll.pipe(
    Effect.catchAll((error) => Effect.logWarning(`${what}: reading the stored state failed`, error)),
    Effect.repeat(Schedule.spaced(intervalMs)),
    Effect.forkScoped
  )
  return poll.pipe(
    Effect.catchAll((error) => Effect.logError(`${what}: not loaded at start (Postgres unavailable); retrying`, error)),
    Effect.zipRight(loop)
  )
}
