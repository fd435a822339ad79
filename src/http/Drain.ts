import { Effect, type Fiber, Ref } from "effect"

const plusOne = (n: number) => n + 1
const minusOne = (n: number) => n - 1

/**
 * In-flight handler count and the draining flag: SIGTERM refuses new work, then waits for the rest.
 * `requests` holds the fibers serving requests now, so the drain can interrupt those still running
 * at its timeout (their finalizers free the slots and journal the run's end) before the journal
 * is flushed and closed. Every route — fast path and platform router — is counted by `admit`.
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
    /** Serves a request, counted while it runs; once the drain has begun, `refuse` answers instead. */
    const admit = <A, E, R, A2>(refuse: Effect.Effect<A2>, serve: Effect.Effect<A, E, R>): Effect.Effect<A | A2, E, R> =>
      Effect.flatMap(Ref.get(draining), (closed): Effect.Effect<A | A2, E, R> =>
        closed ? refuse : Effect.zipRight(Ref.update(inFlight, plusOne), Effect.ensuring(serve, Ref.update(inFlight, minusOne))))
    return { inFlight, draining, requests: requests as ReadonlySet<Fiber.RuntimeFiber<unknown, unknown>>, track, admit } as const
  })
}) {}
