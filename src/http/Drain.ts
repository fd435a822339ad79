import { Effect, type Fiber, Ref } from "effect"

/**
 * In-flight handler count and the draining flag: SIGTERM refuses new work, then waits for the rest.
 * `requests` holds the fibers serving requests now, so the drain can interrupt those still running
 * at its timeout (their finalizers free the slots and journal the run's end) before the journal
 * is flushed and closed.
 */
export class Drain extends Effect.Service<Drain>()("awooop/Drain", {
  effect: Effect.gen(function*() {
    const inFlight = yield* Ref.make(0)
    const draining = yield* Ref.make(false)
    const requests = new Set<Fiber.RuntimeFiber<unknown, unknown>>()
    const track = (fiber: Fiber.RuntimeFiber<unknown, unknown>): void => {
      requests.add(fiber)
      fiber.addObserver(() => requests.delete(fiber))
    }
    return { inFlight, draining, requests: requests as ReadonlySet<Fiber.RuntimeFiber<unknown, unknown>>, track } as const
  })
}) {}
