/**
 * A host's concurrency slots: a counting semaphore split into per-lane reserved pools and one shared
 * pool. A lane takes its own reserved slot first, then a shared one. A reserved slot is never lent
 * to another lane, so a flood on code-review cannot take alert-fast's slots on GCP-A.
 *
 * Acquisition is non-blocking (the lane tries the next host on its route instead of queueing behind
 * a busy one); a lane whose whole route is full waits on `changed` for the next release.
 */
import { Deferred, Effect, Exit, FiberId, Option } from "effect"

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
  /**
   * A permit, or (atomically, so no release can slip in between) the signal of the next release to
   * wait on: what a lane whose host is busy needs.
   */
  readonly acquireOrSignal: (lane: string) => Effect.Effect<Permit | Deferred.Deferred<void>>
  /** Completes at the next release (a fresh signal is armed each time). */
  readonly changed: Effect.Effect<Deferred.Deferred<void>>
  readonly snapshot: Effect.Effect<SlotsSnapshot>
  /** Slots the lane could take right now (its free reserved plus free shared). */
  readonly freeFor: (lane: string) => Effect.Effect<number>
  /** What plan() records of the slots for a lane, in one read. */
  readonly viewFor: (lane: string) => Effect.Effect<{ readonly total: number; readonly inUse: number; readonly freeForLane: number }>
}

/**
 * The rule, shared with the cluster's host entity (cluster/HostLeases.ts): the lane's own reserved
 * slot first, then a shared one; another lane's reserved slots never.
 */
export const poolFor = (
  lane: string,
  reservations: Readonly<Record<string, number>>,
  ownReservedInUse: number,
  sharedInUse: number,
  sharedTotal: number
): Permit["pool"] | null =>
  ownReservedInUse < (reservations[lane] ?? 0) ? "reserved" : sharedInUse < sharedTotal ? "shared" : null

/** The shared pool: what the reservations leave of the host's slots. */
export const sharedTotalOf = (total: number, reservations: Readonly<Record<string, number>>): number =>
  Math.max(0, total - Object.values(reservations).reduce((a, b) => a + b, 0))

/**
 * The signal of the next release: `arm` hands it to a waiter, `notify` (on a release) completes it.
 * It is replaced only once somebody took it, so a release nobody waits for allocates nothing.
 */
export const makeReleaseSignal = () => {
  let signal = Deferred.unsafeMake<void>(FiberId.none)
  let armed = false
  return {
    notify: (): void => {
      if (!armed) return
      armed = false
      const previous = signal
      signal = Deferred.unsafeMake<void>(FiberId.none)
      Deferred.unsafeDone(previous, Exit.void)
    },
    arm: (): Deferred.Deferred<void> => {
      armed = true
      return signal
    }
  }
}

// The state is plain numbers changed only inside single synchronous steps: JavaScript runs one of
// them at a time, which is all the atomicity a counting semaphore needs, at the cost of one
// Effect.sync per operation (the lane takes and returns a slot on every request).
export const make = (total: number, reservations: Readonly<Record<string, number>>): Effect.Effect<Slots> =>
  Effect.sync(() => {
    const sharedTotal = sharedTotalOf(total, reservations)
    let sharedInUse = 0
    const reservedInUse: Record<string, number> = {}
    const released = makeReleaseSignal()
    const notify = released.notify

    const permit = (lane: string, pool: Permit["pool"]): Permit => {
      let released = false
      return {
        pool,
        release: Effect.sync(() => {
          if (released) return
          released = true
          if (pool === "reserved") reservedInUse[lane] = (reservedInUse[lane] ?? 0) - 1
          else sharedInUse--
          notify()
        })
      }
    }

    const acquire = (lane: string): Permit | null => {
      const pool = poolFor(lane, reservations, reservedInUse[lane] ?? 0, sharedInUse, sharedTotal)
      if (pool === "reserved") reservedInUse[lane] = (reservedInUse[lane] ?? 0) + 1
      else if (pool === "shared") sharedInUse++
      return pool === null ? null : permit(lane, pool)
    }

    const arm = released.arm

    const inUse = () => {
      let n = sharedInUse
      for (const lane in reservedInUse) n += reservedInUse[lane]!
      return n
    }

    const free = (lane: string) =>
      Math.max(0, (reservations[lane] ?? 0) - (reservedInUse[lane] ?? 0)) + Math.max(0, sharedTotal - sharedInUse)

    const snapshot = Effect.sync((): SlotsSnapshot => {
      const reserved: Record<string, { total: number; inUse: number }> = {}
      for (const [lane, n] of Object.entries(reservations)) reserved[lane] = { total: n, inUse: reservedInUse[lane] ?? 0 }
      return { total, inUse: inUse(), shared: { total: sharedTotal, inUse: sharedInUse }, reserved }
    })

    return {
      tryAcquire: (lane) => Effect.sync(() => Option.fromNullable(acquire(lane))),
      acquireOrSignal: (lane) => Effect.sync(() => acquire(lane) ?? arm()),
      changed: Effect.sync(arm),
      snapshot,
      freeFor: (lane) => Effect.sync(() => free(lane)),
      viewFor: (lane) => Effect.sync(() => ({ total, inUse: inUse(), freeForLane: free(lane) }))
    }
  })
