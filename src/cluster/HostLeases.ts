/**
 * A host's slots as leases, for the cluster's host entity (cluster/HostEntity.ts): the one place
 * that counts a host's slots across every replica. A lease is one slot held by one request on one
 * replica; the replica renews its leases every renew period while the requests run and releases
 * each when its request ends. A lease not renewed for a lease period expires (its replica is dead or
 * cut off), so a dead replica's slots come back within one lease period.
 *
 * Grants follow the single-process rule exactly (routing/Slots.ts `poolFor`): the lane's own
 * reserved slot first, then a shared one, another lane's reservation never.
 *
 * An entity starts empty (first start, a move to another runner, a failover). Leases granted by the
 * previous owner are still running, and the new owner learns of them only from their renewals. So it
 * grants nothing for one lease period after it starts ("recovering"): every lease still alive is
 * renewed in that time (renewals come every renew period, well under a lease period) and is adopted
 * on renewal into its pool, and any lease not renewed in that time would have expired at the old
 * owner too. After that the table holds every live lease and grants only what they leave free.
 *
 * A renewal of an unknown lease is adopted at any time, even beyond the pool's size: the request it
 * stands for is running on the host, and counting it is what keeps further grants honest. (That only
 * happens when a replica could not renew for a whole lease period while its request ran — then the
 * host may briefly have had more than its slots; see README "Several replicas".)
 *
 * A released lease is not adopted again: a renewal that was on its way when the release arrived still
 * names it, and adopting it would hold a slot no request uses for a whole lease period. The table
 * remembers each released id for one lease period (a renewal sent before the release arrives well
 * within it), then forgets it.
 *
 * A replica may park a lease whose request ended, for its lane's next request (ParkedLeases.ts): to
 * this table it is held like any other. A refusal for want of a slot makes the host `wanted` for
 * half a lease period, which tells every replica in its next answer to release what it parks. Half a
 * lease period spans at least two renewals of every replica (a renew period is at most a fifth of a
 * lease), so each of them hears it while a lane still waits.
 */
import { type SlotsSnapshot, poolFor, sharedTotalOf } from "../routing/Slots.ts"

export type Pool = "reserved" | "shared"

export interface LeaseRef {
  readonly id: string
  readonly lane: string
  readonly pool: Pool
}

interface Lease extends LeaseRef {
  readonly replica: string
  expiresAt: number
}

export type Grant =
  | { readonly _tag: "Granted"; readonly pool: Pool }
  | { readonly _tag: "Busy"; readonly reason: "full" | "recovering" }

export interface LeaseTable {
  readonly grant: (now: number, replica: string, id: string, lane: string) => Grant
  /** Extends the replica's leases; adopts the unknown ones. Returns how many were adopted. */
  readonly renew: (now: number, replica: string, leases: ReadonlyArray<LeaseRef>) => number
  /** Frees the leases; a renewal naming one of them later (one sent before the release) is ignored. */
  readonly release: (now: number, ids: ReadonlyArray<string>) => void
  /** Drops the leases expired at `now`; returns how many. */
  readonly sweep: (now: number) => number
  readonly recovering: (now: number) => boolean
  /** True while a grant was refused for want of a slot in the last half lease period. */
  readonly wanted: (now: number) => boolean
  readonly snapshot: () => SlotsSnapshot
  /** Leases held by `replica` (for tests and the log). */
  readonly heldBy: (replica: string) => number
}

export const make = (total: number, reservations: Readonly<Record<string, number>>, leaseMs: number, startedAt: number): LeaseTable => {
  const sharedTotal = sharedTotalOf(total, reservations)
  const leases = new Map<string, Lease>()
  // Released ids → when they may be forgotten (insertion order is expiry order: one lease period each).
  const released = new Map<string, number>()
  const recoverUntil = startedAt + leaseMs
  const wantedMs = leaseMs / 2
  let wantedAt = -Infinity
  let sharedInUse = 0
  const reservedInUse: Record<string, number> = {}

  const count = (lease: LeaseRef, by: 1 | -1) => {
    if (lease.pool === "reserved") reservedInUse[lease.lane] = (reservedInUse[lease.lane] ?? 0) + by
    else sharedInUse += by
  }
  const add = (lease: Lease) => {
    leases.set(lease.id, lease)
    count(lease, 1)
  }
  const drop = (lease: Lease) => {
    leases.delete(lease.id)
    count(lease, -1)
  }

  const grant = (now: number, replica: string, id: string, lane: string): Grant => {
    if (now < recoverUntil) return { _tag: "Busy", reason: "recovering" }
    const known = leases.get(id)
    if (known !== undefined) return { _tag: "Granted", pool: known.pool }
    const pool = poolFor(lane, reservations, reservedInUse[lane] ?? 0, sharedInUse, sharedTotal)
    if (pool === null) {
      wantedAt = now
      return { _tag: "Busy", reason: "full" }
    }
    add({ id, lane, pool, replica, expiresAt: now + leaseMs })
    return { _tag: "Granted", pool }
  }

  const renew = (now: number, replica: string, refs: ReadonlyArray<LeaseRef>) => {
    let adopted = 0
    for (const ref of refs) {
      if (released.has(ref.id)) continue
      const known = leases.get(ref.id)
      if (known !== undefined) known.expiresAt = now + leaseMs
      else {
        add({ id: ref.id, lane: ref.lane, pool: ref.pool, replica, expiresAt: now + leaseMs })
        adopted++
      }
    }
    return adopted
  }

  const release = (now: number, ids: ReadonlyArray<string>) => {
    for (const id of ids) {
      const lease = leases.get(id)
      if (lease !== undefined) drop(lease)
      released.delete(id) // re-inserted last, so the map stays in expiry order for sweep
      released.set(id, now + leaseMs)
    }
  }

  const sweep = (now: number) => {
    for (const [id, until] of released) {
      if (until > now) break
      released.delete(id)
    }
    let expired = 0
    for (const lease of leases.values()) {
      if (lease.expiresAt > now) continue
      drop(lease)
      expired++
    }
    return expired
  }

  const snapshot = (): SlotsSnapshot => {
    const reserved: Record<string, { total: number; inUse: number }> = {}
    for (const [lane, n] of Object.entries(reservations)) reserved[lane] = { total: n, inUse: reservedInUse[lane] ?? 0 }
    let inUse = sharedInUse
    for (const lane in reservedInUse) inUse += reservedInUse[lane]!
    return { total, inUse, shared: { total: sharedTotal, inUse: sharedInUse }, reserved }
  }

  const heldBy = (replica: string) => {
    let n = 0
    for (const lease of leases.values()) if (lease.replica === replica) n++
    return n
  }

  return { grant, renew, release, sweep, recovering: (now) => now < recoverUntil, wanted: (now) => now - wantedAt < wantedMs, snapshot, heldBy }
}
