import { Effect, Ref } from "effect"

/** In-flight handler count and the draining flag: SIGTERM refuses new work, then waits for the rest. */
export class Drain extends Effect.Service<Drain>()("awooop/Drain", {
  effect: Effect.gen(function*() {
    const inFlight = yield* Ref.make(0)
    const draining = yield* Ref.make(false)
    return { inFlight, draining } as const
  })
}) {}

