/**
 * A host's concurrency slots: a counting semaphore split into per-lane reserved pools and one shared
 * pool. A lane takes its own reserved slot first, then a shared one. A reserved slot is never lent
 * to another lane, so a flood on code-review cannot take alert-fast's slots on GCP-A.
 *
 * Acquisition is non-blocking (the lane tries the next host on its route instead of queueing behind
 * a busy one); a lane whose whole route is full waits on `changed` for the next release.
 */
import { Deferred, Effect, Option, Ref } from "effect"

export interface Permit {
  readonly pool: "reserved" | "shared"
  /** Idempotent: a permit is returned once however many paths release it. */
  readonly release: Effect.Effect<void>
}

export interface SlotsSnapshot {
  readonly total: number
  readonly inUse: number
  readonly shared: { readonly total: number; readonly inUse: number }
  readonly reserved: Readonly<Record<string, { readonly total: number; readonly inUse: number }>>
}

export interface Slots {
  readonly tryAcquire: (lane: string) => Effect.Effect<Option.Option<Permit>>
  /** Completes at the next release (a fresh signal is armed each time). */
  readonly changed: Effect.Effect<Deferred.Deferred<void>>
  readonly snapshot: Effect.Effect<SlotsSnapshot>
  /** Slots the lane could take right now (its free reserved plus free shared). */
  readonly freeFor: (lane: string) => Effect.Effect<number>
}

interface State {
  readonly sharedInUse: number
  readonly reservedInUse: Readonly<Record<string, number>>
}

export const make = (total: number, reservations: Readonly<Record<string, number>>): Effect.Effect<Slots> =>
  Effect.gen(function*() {
    const reservedTotal = Object.values(reservations).reduce((a, b) => a + b, 0)
    const sharedTotal = Math.max(0, total - reservedTotal)
    const state = yield* Ref.make<State>({ sharedInUse: 0, reservedInUse: {} })
    const signal = yield* Ref.make(yield* Deferred.make<void>())

    const notify = Effect.flatMap(
      Effect.flatMap(Deferred.make<void>(), (next) => Ref.getAndSet(signal, next)),
      (previous) => Deferred.succeed(previous, undefined)
    )

    const releaser = (lane: string, pool: Permit["pool"]): Effect.Effect<void> => {
      let released = false
      return Effect.suspend(() => {
        if (released) return Effect.void
        released = true
        return Ref.update(state, (s) => pool === "reserved"
          ? { ...s, reservedInUse: { ...s.reservedInUse, [lane]: (s.reservedInUse[lane] ?? 0) - 1 } }
          : { ...s, sharedInUse: s.sharedInUse - 1 }).pipe(Effect.zipRight(notify))
      })
    }

    const tryAcquire = (lane: string) =>
      Ref.modify(state, (s): [Option.Option<Permit["pool"]>, State] => {
        const own = reservations[lane] ?? 0
        const ownInUse = s.reservedInUse[lane] ?? 0
        if (ownInUse < own) {
          return [Option.some("reserved"), { ...s, reservedInUse: { ...s.reservedInUse, [lane]: ownInUse + 1 } }]
        }
        if (s.sharedInUse < sharedTotal) return [Option.some("shared"), { ...s, sharedInUse: s.sharedInUse + 1 }]
        return [Option.none(), s]
      }).pipe(Effect.map(Option.map((pool): Permit => ({ pool, release: releaser(lane, pool) }))))

    const snapshot = Effect.map(Ref.get(state), (s): SlotsSnapshot => {
      const reserved: Record<string, { total: number; inUse: number }> = {}
      let inUse = s.sharedInUse
      for (const [lane, n] of Object.entries(reservations)) {
        const used = s.reservedInUse[lane] ?? 0
        reserved[lane] = { total: n, inUse: used }
        inUse += used
      }
      return { total, inUse, shared: { total: sharedTotal, inUse: s.sharedInUse }, reserved }
    })

    const freeFor = (lane: string) =>
      Effect.map(Ref.get(state), (s) =>
        Math.max(0, (reservations[lane] ?? 0) - (s.reservedInUse[lane] ?? 0)) + Math.max(0, sharedTotal - s.sharedInUse))

    return { tryAcquire, changed: Ref.get(signal), snapshot, freeFor }
  })
