/**
 * A replica's parked leases of one host (cluster/HostLink.ts): leases the host entity granted to
 * this replica whose requests have ended, kept for the next request of the same lane instead of
 * being released at once, so that request needs no message to the entity (a grant is a round trip,
 * ~2 ms between runners). The entity still counts a parked lease as held (the replica renews it like
 * any other), so parking never lets more requests reach the host than it has slots, and a parked
 * reserved lease is reused only by its own lane: the reservations stay exact.
 *
 * What parking costs is a slot idle at one replica that another one might have had. So a lease is
 * parked only while the entity has refused nobody lately (`wanted` in its answers, HostLeases.ts),
 * for at most a linger period, and every parked lease is released as soon as an answer says
 * `wanted`; the link syncs often while it parks, so that answer comes within a sync period.
 */
import type { LeaseRef } from "./HostLeases.ts"

interface Entry {
  readonly lease: LeaseRef
  readonly parkedAt: number
}

export interface ParkedLeases {
  readonly park: (lease: LeaseRef, now: number) => void
  /** A parked lease for `lane` that `usable` accepts (its own reserved one first), now no longer parked. */
  readonly take: (lane: string, usable: (id: string) => boolean) => LeaseRef | null
  /** Unparks and returns the leases parked before `before` (all of them without it). */
  readonly drain: (before?: number) => Array<LeaseRef>
  readonly countFor: (lane: string) => number
  readonly size: () => number
}

export const make = (): ParkedLeases => {
  const byLane = new Map<string, Array<Entry>>()
  let size = 0

  const take = (lane: string, usable: (id: string) => boolean): LeaseRef | null => {
    const entries = byLane.get(lane)
    if (entries === undefined) return null
    // The most recently parked one (its confirmation is the freshest); a reserved one before a shared one.
    let best = -1
    for (let i = entries.length - 1; i >= 0; i--) {
      if (!usable(entries[i]!.lease.id)) continue
      if (best === -1) best = i
      if (entries[i]!.lease.pool === "reserved") {
        best = i
        break
      }
    }
    if (best === -1) return null
    size--
    return entries.splice(best, 1)[0]!.lease
  }

  const drain = (before = Infinity): Array<LeaseRef> => {
    const out: Array<LeaseRef> = []
    for (const [lane, entries] of byLane) {
      const kept = entries.filter((e) => e.parkedAt >= before)
      for (const e of entries) if (e.parkedAt < before) out.push(e.lease)
      if (kept.length === 0) byLane.delete(lane)
      else byLane.set(lane, kept)
    }
    size -= out.length
    return out
  }

  return {
    park: (lease, now) => {
      const entries = byLane.get(lease.lane)
      if (entries === undefined) byLane.set(lease.lane, [{ lease, parkedAt: now }])
      else entries.push({ lease, parkedAt: now })
      size++
    },
    take,
    drain,
    countFor: (lane) => byLane.get(lane)?.length ?? 0,
    size: () => size
  }
}
