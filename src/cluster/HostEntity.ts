/**
 * The host entity (issue 13): one per configured host, owned by one runner of the cluster at a time,
 * holding what must be counted once for all replicas — the host's slots (as leases, HostLeases.ts)
 * and its circuit breaker (the same state machine as a single process's, routing/Breaker.ts). Every
 * replica asks it for a slot before calling the host, and tells it the outcomes the breaker counts;
 * the call to the host itself goes straight from that replica. Every answer carries the host's
 * state (slots in use, the breaker), so each replica keeps a current view for plan() and health
 * without asking (cluster/HostLink.ts).
 *
 * Messages are volatile (nothing is stored in Postgres) and handled one at a time per host, so the
 * handlers are plain synchronous steps over the entity's memory. The breaker's transitions go back
 * in the answer to the replica whose message caused them, which journals them on the host's stream.
 *
 * A new owner also takes on the breaker from the renewals of its recovery period: each replica sends
 * what it last heard from an owner past recovery — the open breaker, or the closed one's count of
 * timeouts (the freshest count wins) — and whether it runs the probe that owner admitted. So a
 * failover neither closes an open breaker, nor forgets timeouts counted toward opening it, nor
 * admits a second probe while the first still runs (its outcome, sent with the earlier owner's
 * ticket, settles the probe taken on here).
 *
 * The probe: exactly one is admitted cluster-wide (the breaker's own rule). It is released as if it
 * said nothing ("ignore") when its replica goes silent for a lease period or it outlives its
 * deadline (the host's longest attempt timeout plus a lease period), so a dead replica cannot hold
 * the half-open breaker forever.
 */
import { Entity } from "@effect/cluster"
import * as Rpc from "@effect/rpc/Rpc"
import { Clock, Duration, Effect, Schema } from "effect"
import * as Breaker from "../routing/Breaker.ts"
import * as HostLeases from "./HostLeases.ts"

const Pool = Schema.Literal("reserved", "shared")
const Ticket = Schema.Struct({ epoch: Schema.Number, probe: Schema.Boolean })
const Outcome = Schema.Literal("success", "timeout", "failure", "ignore")

const Transition = Schema.Union(
  Schema.Struct({ _tag: Schema.Literal("BreakerOpened"), at: Schema.Number, consecutiveTimeouts: Schema.Number, until: Schema.Number, reason: Schema.String }),
  Schema.Struct({ _tag: Schema.Literal("BreakerHalfOpened"), at: Schema.Number }),
  Schema.Struct({ _tag: Schema.Literal("BreakerClosed"), at: Schema.Number })
)

const Use = Schema.Struct({ total: Schema.Number, inUse: Schema.Number })

/** The host as its entity knows it, in every answer. */
export const HostState = Schema.Struct({
  /** The runner that owns the entity now. */
  owner: Schema.String,
  /** True for one lease period after the entity started: no grants yet. */
  recovering: Schema.Boolean,
  /** True while a grant was refused lately for want of a slot: replicas release the leases they park. */
  wanted: Schema.Boolean,
  slots: Schema.Struct({ total: Schema.Number, inUse: Schema.Number, shared: Use, reserved: Schema.Record({ key: Schema.String, value: Use }) }),
  breaker: Schema.Struct({
    status: Schema.Literal("closed", "open", "half-open"),
    epoch: Schema.Number,
    consecutiveTimeouts: Schema.Number,
    openedAt: Schema.NullOr(Schema.Number),
    reopensAt: Schema.NullOr(Schema.Number),
    probeInFlight: Schema.Boolean
  })
})
export type HostState = typeof HostState.Type

const Transitions = Schema.Array(Transition)
const withState = <F extends Schema.Struct.Fields>(fields: F) => Schema.Struct({ ...fields, state: HostState })

/** A renewal (Renew below): the replica's leases of the host, and what it last heard of the breaker. */
const RenewPayload = Schema.Struct({
  replica: Schema.String,
  leases: Schema.Array(Schema.Struct({ id: Schema.String, lane: Schema.String, pool: Pool })),
  /** The breaker open as this replica last saw it from an owner past its recovery (null: closed). */
  opened: Schema.NullOr(Schema.Struct({ openedAt: Schema.Number, reopensAt: Schema.Number, consecutiveTimeouts: Schema.Number })),
  /** The closed breaker's count of consecutive timeouts as this replica last heard it, and when. */
  timeouts: Schema.optional(Schema.Struct({ count: Schema.Number, heardAt: Schema.Number })),
  /** This replica runs the half-open probe an earlier owner admitted. */
  probing: Schema.optional(Schema.Boolean)
})

export const HostEntity = Entity.make("AwooopHost", [
  /** A slot lease for one request of `lane`; `pool` null when none is free (`reason`). */
  Rpc.make("Acquire", {
    payload: { replica: Schema.String, lease: Schema.String, lane: Schema.String },
    success: withState({ pool: Schema.NullOr(Pool), reason: Schema.NullOr(Schema.Literal("full", "recovering")) })
  }),
  /** One message per replica per renew period: every lease it holds (also none: it refreshes the view). */
  Rpc.make("Renew", {
    payload: RenewPayload,
    success: withState({ adopted: Schema.Number })
  }),
  Rpc.make("Release", { payload: { replica: Schema.String, leases: Schema.Array(Schema.String) }, success: withState({}) }),
  /** Breaker admission when it is not closed: the ticket, or null with when to come back. */
  Rpc.make("Admit", {
    payload: { replica: Schema.String },
    success: withState({ ticket: Schema.NullOr(Ticket), until: Schema.NullOr(Schema.Number), probeInFlight: Schema.Boolean, transitions: Transitions })
  }),
  /** An admitted call's outcome, as the breaker counts it. */
  Rpc.make("Settle", { payload: { replica: Schema.String, ticket: Ticket, outcome: Outcome }, success: withState({ transitions: Transitions }) }),
  /** The operator's reset. */
  Rpc.make("Reset", { payload: { replica: Schema.String }, success: withState({ transitions: Transitions }) })
])

export interface HostSettings {
  readonly slots: number
  readonly reservations: Readonly<Record<string, number>>
  readonly breaker: Breaker.BreakerConfig
  /** The longest attempt timeout of any lane on this host: a probe held longer is released. */
  readonly longestTimeoutMs: number
}

export interface EntitySettings {
  readonly hosts: Readonly<Record<string, HostSettings>>
  /** A lease not renewed for this long expires; a new owner grants nothing for this long. */
  readonly leaseMs: number
}

interface HeldProbe {
  readonly replica: string
  readonly ticket: Breaker.Ticket
  readonly deadline: number
  /** Admitted by an earlier owner: its replica settles it with that owner's ticket. */
  readonly adopted: boolean
}

/** The entity's state and handlers for one host. */
const makeHost = (settings: EntitySettings) =>
  Effect.gen(function*() {
    const address = yield* Entity.CurrentAddress
    const owner = `${(yield* Entity.CurrentRunnerAddress).host}:${(yield* Entity.CurrentRunnerAddress).port}`
    const host = address.entityId
    // An unknown host has no slots: nothing is granted for it.
    const s = settings.hosts[host] ?? { slots: 0, reservations: {}, breaker: Breaker.defaultConfig, longestTimeoutMs: 0 }
    const startedAt = yield* Clock.currentTimeMillis
    const table = HostLeases.make(s.slots, s.reservations, settings.leaseMs, startedAt)
    let transitions: Array<Breaker.BreakerTransition> = []
    const breaker = yield* Breaker.make(host, s.breaker, (t) => Effect.sync(() => void transitions.push(t)))
    const lastSeen = new Map<string, number>()
    let probe: HeldProbe | null = null
    // The freshest count of timeouts a renewal brought while recovering (when its replica heard it).
    let timeoutsHeardAt = -Infinity
    yield* Effect.logInfo(`cluster: host entity ${host} starts on ${owner}; no grants for ${Duration.format(settings.leaseMs)} while leases are renewed to it`)

    const state = (now: number) =>
      Effect.zipWith(breaker.snapshot, breaker.epoch, (b, epoch): HostState => ({
        owner,
        recovering: table.recovering(now),
        wanted: table.wanted(now),
        slots: table.snapshot(),
        breaker: { ...b, epoch }
      }))

    /** Expired leases out; a probe whose replica went silent or whose deadline passed released. */
    const tidy = (now: number, replica: string) =>
      Effect.suspend(() => {
        lastSeen.set(replica, now)
        table.sweep(now)
        const held = probe
        if (held === null) return Effect.void
        const silent = now - (lastSeen.get(held.replica) ?? 0) > settings.leaseMs
        if (!silent && now < held.deadline) return Effect.void
        probe = null
        return breaker.settle(held.ticket, "ignore")
      })

    /** Runs `body` on a tidy state; answers with its result, the transitions it caused and the state. */
    const handle = <A extends object>(replica: string, body: (now: number) => Effect.Effect<A>) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        transitions = []
        yield* tidy(now, replica)
        const result = yield* body(now)
        return { ...result, transitions, state: yield* state(now) }
      })

    const admit = (replica: string) => (now: number) =>
      Effect.match(breaker.admit, {
        onFailure: (refused) => ({ ticket: null, until: refused.until, probeInFlight: refused.probeInFlight }),
        onSuccess: (ticket) => {
          if (ticket.probe) probe = { replica, ticket, deadline: now + s.longestTimeoutMs + settings.leaseMs, adopted: false }
          return { ticket, until: null, probeInFlight: false }
        }
      })

    const settle = (replica: string, ticket: Breaker.Ticket, outcome: Breaker.Outcome) => {
      const held = probe
      if (!ticket.probe || held === null) return Effect.as(breaker.settle(ticket, outcome), {})
      // An adopted probe's outcome comes with the earlier owner's ticket: it settles the one held here.
      const mine = held.adopted ? held.replica === replica : held.ticket.epoch === ticket.epoch
      if (mine) probe = null
      return Effect.as(breaker.settle(mine ? held.ticket : ticket, outcome), {})
    }

    /**
     * While recovering, a new owner takes on from the renewals what its replicas saw at the earlier
     * owner: an open breaker (and the probe one of them still runs), or the count of timeouts short
     * of opening it (the freshest heard).
     */
    const adoptBreaker = (now: number, p: typeof RenewPayload.Type) =>
      Effect.gen(function*() {
        if (!table.recovering(now)) return
        if (p.opened !== null) yield* breaker.adopt(p.opened)
        else if (p.timeouts !== undefined && p.timeouts.heardAt > timeoutsHeardAt) {
          timeoutsHeardAt = p.timeouts.heardAt
          yield* breaker.adoptTimeouts(p.timeouts.count)
        }
        if (p.probing !== true || probe !== null) return
        const ticket = yield* breaker.adoptProbe
        if (ticket !== null) probe = { replica: p.replica, ticket, deadline: now + s.longestTimeoutMs + settings.leaseMs, adopted: true }
      })

    return HostEntity.of({
      Acquire: ({ payload: p }) =>
        handle(p.replica, (now) =>
          Effect.sync(() => {
            const grant = table.grant(now, p.replica, p.lease, p.lane)
            return grant._tag === "Granted" ? { pool: grant.pool, reason: null } : { pool: null, reason: grant.reason }
          })),
      Renew: ({ payload: p }) =>
        handle(p.replica, (now) =>
          Effect.as(adoptBreaker(now, p), { adopted: table.renew(now, p.replica, p.leases) })),
      Release: ({ payload: p }) => handle(p.replica, (now) => Effect.sync(() => (table.release(now, p.leases), {}))),
      Admit: ({ payload: p }) => handle(p.replica, admit(p.replica)),
      Settle: ({ payload: p }) => handle(p.replica, () => settle(p.replica, p.ticket, p.outcome)),
      Reset: ({ payload: p }) => handle(p.replica, () => Effect.as(breaker.reset, {}))
    })
  })

/** Registers the host entity on this runner (needs Sharding). */
export const layer = (settings: EntitySettings) =>
  HostEntity.toLayer(makeHost(settings), {
    // Never passivated: an idle host must not forget an open breaker (renewals keep it busy anyway).
    maxIdleTime: Duration.infinity
  })
