/**
 * A replica's side of the host entity (HostEntity.ts): the `Slots` and `Breaker` a host actor uses
 * in a cluster, so the lane and the attempt loop are the same as in a single process.
 *
 *   slots    a permit is a lease granted by the entity (one message, answered before the attempt
 *            starts); this replica renews all its leases of the host in one message every renew
 *            period. When its request ends a lease is parked for the lane's next request here
 *            (ParkedLeases.ts: no message at all for that one) while the entity wants none back,
 *            else released (sent off the request's path). A host the entity says is full — or an
 *            entity that cannot be reached in time — is busy: the waiting lane is woken by a
 *            release here or every `retryMs` to ask again.
 *   breaker  every answer carries the breaker's state. While it is closed a call goes without asking
 *            (the state came with this request's grant a moment ago); a timeout, a success after
 *            timeouts and every probe's outcome are told to the entity, which counts them for all
 *            replicas. While it is open or half-open the entity is asked to admit, so exactly one
 *            probe is admitted cluster-wide. Transitions come back in the answers and are journaled
 *            here, on the host's stream.
 *
 * The view plan() and /awooop/health read (slots in use, breaker) is the last answer's: at most a
 * renew period old (a sync period while leases are parked: a request on a parked lease asks nothing,
 * so an opened breaker reaches this replica with the next sync, not with a grant).
 */
import { Clock, Effect, Exit, HashSet, Option, Schedule } from "effect"
import * as Breaker from "../routing/Breaker.ts"
import type { HostCoordinationShape, HostParts } from "../routing/HostCoordination.ts"
import { makeReleaseSignal, sharedTotalOf, type Permit, type Slots } from "../routing/Slots.ts"
import type { HostEntity, HostState } from "./HostEntity.ts"
import type * as HostLeases from "./HostLeases.ts"
import * as ParkedLeases from "./ParkedLeases.ts"

export interface LinkSettings {
  /** This process, as the entity knows its leases' holder (unique per process). */
  readonly replica: string
  readonly renewMs: number
  /** How long a grant or an admission may take before the host counts as busy (or its breaker as open). */
  readonly callTimeoutMs: number
  /** How often a lane waiting for a busy host asks again. */
  readonly retryMs: number
  /** Parking (ParkedLeases.ts); without it every request asks the entity for its lease. */
  readonly park?: ParkSettings
}

export interface ParkSettings {
  /** A parked lease unused this long is released. */
  readonly lingerMs: number
  /** How often the link renews (and so hears `wanted`) while it parks leases. */
  readonly syncMs: number
  /**
   * A lease is parked or reused only this soon after the entity last confirmed it (a grant or a
   * renewal answered). Less than a lease period by a margin: a lease the entity may have let expire
   * (this replica cut off from it) is never reused.
   */
  readonly freshMs: number
}

/** The entity's client, as `HostEntity.client` gives it. */
export type Client = Effect.Effect.Success<typeof HostEntity.client>

const initialState = (slots: number, reservations: Readonly<Record<string, number>>): HostState => ({
  owner: "",
  recovering: true,
  wanted: false,
  slots: {
    total: slots,
    inUse: 0,
    shared: { total: sharedTotalOf(slots, reservations), inUse: 0 },
    reserved: Object.fromEntries(Object.entries(reservations).map(([lane, n]) => [lane, { total: n, inUse: 0 }]))
  },
  breaker: { status: "closed", epoch: 0, consecutiveTimeouts: 0, openedAt: null, reopensAt: null, probeInFlight: false }
})

/** The breaker as seen now: an open one whose cooldown has passed reads half-open (as Breaker.ts). */
const breakerAt = (b: HostState["breaker"], now: number): Breaker.BreakerSnapshot => {
  if (b.status === "closed") return b
  const halfOpen = b.probeInFlight || b.reopensAt === null || now >= b.reopensAt
  return { ...b, status: halfOpen ? "half-open" : "open", reopensAt: halfOpen ? null : b.reopensAt }
}

export const make = (client: Client, settings: LinkSettings): HostCoordinationShape => ({
  // The breaker's config is the entity's (the same config file on every replica).
  make: (host, slots, reservations, _breakerConfig, onTransition) =>
    Effect.gen(function*() {
      const entity = client(host)
      const replica = settings.replica
      const clock = yield* Effect.clock
      let state = initialState(slots, reservations)
      const leases = makeLeases(settings.park, () => clock.unsafeCurrentTimeMillis())
      let counter = 0

      /**
       * One message; None when it failed, died or took longer than callTimeoutMs. Interruptible even where
       * the lane takes its slot uninterruptibly, so the timeout (or the caller leaving) can end it: a
       * grant whose answer is lost that way is never renewed and expires after one lease period.
       * An answer saying `wanted` releases every parked lease at once.
       */
      // The breaker as an owner past its recovery last said: what renewals tell a new owner.
      let lastSaid = state.breaker
      let lastSaidAt = 0
      // Probes this replica runs (admitted, not yet settled): a new owner takes them on from renewals.
      let probes = 0
      const ask = <A extends { readonly state: HostState }>(message: Effect.Effect<A, unknown>) =>
        Effect.interruptible(message).pipe(
          Effect.timeout(settings.callTimeoutMs),
          Effect.tap((answer) =>
            Effect.suspend(() => {
              state = answer.state
              if (!answer.state.recovering) {
                lastSaid = answer.state.breaker
                lastSaidAt = clock.unsafeCurrentTimeMillis()
              }
              return answer.state.wanted ? sendRelease(leases.unparkAll()) : Effect.void
            })
          ),
          Effect.asSome,
          // Whatever ends the message other than an answer — a typed error, a timeout, or a defect or
          // interruption the cluster's client passes on when the owner's runner dies mid-request —
          // means the same to the lane: no answer (busy, or the breaker as last seen). Only this
          // fiber's own interruption (the caller left) goes on as it is, even where the lane runs
          // uninterruptibly.
          Effect.catchAllCause((cause) =>
            Effect.descriptorWith((self) =>
              HashSet.size(self.interruptors) > 0
                ? Effect.interrupt
                : Effect.as(Effect.logDebug(`cluster: host ${host}: no answer from its entity`, cause), Option.none())
            )
          )
        )
      const opened = () =>
        lastSaid.status === "closed" || lastSaid.openedAt === null
          ? null
          : { openedAt: lastSaid.openedAt, reopensAt: lastSaid.reopensAt ?? lastSaid.openedAt, consecutiveTimeouts: lastSaid.consecutiveTimeouts }
      const journal = (ts: ReadonlyArray<Breaker.BreakerTransition>) => Effect.forEach(ts, onTransition, { discard: true })

      // The next local release (or the retry tick) completes the waiters' signal, as in Slots.ts.
      const { arm, notify } = makeReleaseSignal()

      /** Off the request's path: the answer only refreshes the view and wakes local waiters. */
      const sendRelease = (ids: ReadonlyArray<string>): Effect.Effect<void> =>
        ids.length === 0 ? Effect.void : Effect.asVoid(Effect.forkDaemon(Effect.zipRight(ask(entity.Release({ replica, leases: ids })), Effect.sync(notify))))

      const permit = (lease: HostLeases.LeaseRef): Permit => {
        let released = false
        return {
          pool: lease.pool,
          release: Effect.suspend(() => {
            if (released) return Effect.void
            released = true
            if (!state.wanted && leases.park(lease.id)) return Effect.sync(notify)
            return sendRelease(leases.drop(lease.id))
          })
        }
      }

      const acquire = (lane: string) =>
        Effect.gen(function*() {
          const parked = leases.takeParked(lane)
          if (parked !== null) return permit(parked)
          const id = `${replica}/${++counter}`
          const sentAt = yield* Clock.currentTimeMillis
          const answer = yield* ask(entity.Acquire({ replica, lease: id, lane }))
          if (Option.isNone(answer) || answer.value.pool === null) return null
          return permit(leases.granted({ id, lane, pool: answer.value.pool }, sentAt))
        })

      const free = (lane: string) => {
        const r = state.slots.reserved[lane]
        // Leases parked here for the lane count as in use at the entity, but this lane can take them.
        return Math.max(0, (r?.total ?? 0) - (r?.inUse ?? 0)) + Math.max(0, state.slots.shared.total - state.slots.shared.inUse) + leases.parkedFor(lane)
      }

      const slotsOf: Slots = {
        tryAcquire: (lane) => Effect.map(acquire(lane), Option.fromNullable),
        acquireOrSignal: (lane) => Effect.map(acquire(lane), (p) => p ?? arm()),
        changed: Effect.sync(arm),
        snapshot: Effect.sync(() => state.slots),
        freeFor: (lane) => Effect.sync(() => free(lane)),
        viewFor: (lane) => Effect.sync(() => ({ total: state.slots.total, inUse: state.slots.inUse, freeForLane: free(lane) }))
      }

      // Renewals, one message for all this replica's leases of the host (none: it refreshes the view).
      const renew = Effect.suspend(() => {
        const sentAt = clock.unsafeCurrentTimeMillis()
        const refs = leases.all()
        const timeouts = lastSaid.status === "closed" && lastSaidAt > 0 ? { count: lastSaid.consecutiveTimeouts, heardAt: lastSaidAt } : undefined
        return Effect.tap(ask(entity.Renew({ replica, leases: refs, opened: opened(), timeouts, probing: probes > 0 })), (answer) =>
          Effect.sync(() => Option.isSome(answer) && leases.confirmed(refs, sentAt)))
      })
      yield* renewals(settings, leases, renew, sendRelease)
      yield* Effect.sync(notify).pipe(Effect.repeat(Schedule.spaced(settings.retryMs)), Effect.forkScoped)
      // A replica that stops hands back what it parks (what it still runs ends with its requests).
      yield* Effect.addFinalizer(() =>
        Effect.suspend(() => {
          const ids = leases.unparkAll()
          return ids.length === 0 ? Effect.void : Effect.ignore(Effect.timeout(ask(entity.Release({ replica, leases: ids })), 250))
        })
      )

      const breaker = makeBreaker(host, () => state, {
        admit: Effect.tap(ask(entity.Admit({ replica })), (answer) =>
          Effect.sync(() => Option.isSome(answer) && answer.value.ticket?.probe === true && probes++)),
        settle: (ticket, outcome) => Effect.suspend(() => (ticket.probe && probes--, ask(entity.Settle({ replica, ticket, outcome })))),
        reset: ask(entity.Reset({ replica }))
      }, journal)

      return { slots: slotsOf, breaker, owner: Effect.sync(() => state.owner === "" ? null : state.owner) } satisfies HostParts
    })
})

/**
 * The renewal loop: every renew period, or every sync period while leases are parked here (so a
 * `wanted` reaches this replica soon); leases parked longer than the linger period are released.
 */
const renewals = (
  settings: LinkSettings,
  leases: Leases,
  renew: Effect.Effect<unknown>,
  sendRelease: (ids: ReadonlyArray<string>) => Effect.Effect<void>
) => {
  const park = settings.park
  if (park === undefined) return Effect.asVoid(renew.pipe(Effect.repeat(Schedule.spaced(settings.renewMs)), Effect.forkScoped))
  let lastRenew = -Infinity
  const tick = Effect.clockWith((clock) =>
    Effect.suspend(() => {
      const now = clock.unsafeCurrentTimeMillis()
      const lingering = leases.unparkIdle(now - park.lingerMs)
      const due = now - lastRenew >= settings.renewMs || leases.parkedCount() > 0
      if (due) lastRenew = now
      return Effect.zipRight(sendRelease(lingering), due ? renew : Effect.void)
    })
  )
  return Effect.asVoid(tick.pipe(Effect.repeat(Schedule.spaced(Math.min(park.syncMs, settings.renewMs))), Effect.forkScoped))
}

interface HeldLease extends HostLeases.LeaseRef {
  /** When the entity last confirmed it: the sending time of its grant or of a renewal it answered. */
  confirmedAt: number
}

type Leases = ReturnType<typeof makeLeases>

/** The leases this replica holds of one host (running or parked) and when each was last confirmed. */
const makeLeases = (park: ParkSettings | undefined, now: () => number) => {
  const held = new Map<string, HeldLease>()
  const parked = ParkedLeases.make()
  const fresh = (id: string) => park !== undefined && now() - (held.get(id)?.confirmedAt ?? -Infinity) < park.freshMs
  const forget = (refs: ReadonlyArray<HostLeases.LeaseRef>) => refs.map((r) => (held.delete(r.id), r.id))
  return {
    granted: (ref: HostLeases.LeaseRef, sentAt: number): HostLeases.LeaseRef => {
      held.set(ref.id, { ...ref, confirmedAt: sentAt })
      return ref
    },
    /** Parks a lease whose request ended, if parking is on and the lease is fresh; false: release it. */
    park: (id: string): boolean => {
      const lease = held.get(id)
      if (lease === undefined || !fresh(id)) return false
      parked.park(lease, now())
      return true
    },
    /** No longer held (nor renewed); the ids to release. */
    drop: (id: string): ReadonlyArray<string> => (held.delete(id), [id]),
    takeParked: (lane: string): HostLeases.LeaseRef | null => parked.take(lane, fresh),
    /** Unparks every parked lease; their ids, no longer held (to release). */
    unparkAll: () => forget(parked.drain()),
    unparkIdle: (before: number) => forget(parked.drain(before)),
    parkedFor: (lane: string) => parked.countFor(lane),
    parkedCount: () => parked.size(),
    all: (): Array<HostLeases.LeaseRef> => Array.from(held.values(), (l) => ({ id: l.id, lane: l.lane, pool: l.pool })),
    confirmed: (refs: ReadonlyArray<HostLeases.LeaseRef>, at: number) => {
      for (const r of refs) {
        const lease = held.get(r.id)
        if (lease !== undefined) lease.confirmedAt = Math.max(lease.confirmedAt, at)
      }
    }
  }
}

interface BreakerMessages {
  readonly admit: Effect.Effect<Option.Option<{ readonly ticket: Breaker.Ticket | null; readonly until: number | null; readonly probeInFlight: boolean; readonly transitions: ReadonlyArray<Breaker.BreakerTransition> }>>
  readonly settle: (ticket: Breaker.Ticket, outcome: Breaker.Outcome) => Effect.Effect<Option.Option<{ readonly transitions: ReadonlyArray<Breaker.BreakerTransition> }>>
  readonly reset: Effect.Effect<Option.Option<{ readonly transitions: ReadonlyArray<Breaker.BreakerTransition> }>>
}

/** The breaker interface over the entity's (see the header). */
const makeBreaker = (
  host: string,
  current: () => HostState,
  messages: BreakerMessages,
  journal: (ts: ReadonlyArray<Breaker.BreakerTransition>) => Effect.Effect<void>
): Breaker.Breaker => {
  const transitionsOf = (answer: Option.Option<{ readonly transitions: ReadonlyArray<Breaker.BreakerTransition> }>) =>
    Option.match(answer, { onNone: () => Effect.void, onSome: (a) => journal(a.transitions) })

  /** Only what can change the entity's breaker is sent: the rest would be a message for nothing. */
  const tells = (ticket: Breaker.Ticket, outcome: Breaker.Outcome) =>
    ticket.probe || outcome === "timeout" || (outcome === "success" && current().breaker.consecutiveTimeouts > 0)

  const settle = (ticket: Breaker.Ticket, outcome: Breaker.Outcome) =>
    tells(ticket, outcome) ? Effect.flatMap(messages.settle(ticket, outcome), transitionsOf) : Effect.void

  const settledAfter = <A, E, R>(effect: Effect.Effect<A, E, R>, ticket: Breaker.Ticket, classify: (exit: Exit.Exit<A, E>) => Breaker.Outcome) =>
    Effect.onExit(effect, (exit) => Effect.flatMap(Breaker.outcomeOf(host, exit, classify), (outcome) => settle(ticket, outcome)))

  // An entity that cannot be reached in time admits nothing while its breaker was last seen open.
  const admit = Effect.flatMap(messages.admit, (answer): Effect.Effect<Breaker.Ticket, Breaker.BreakerOpen> => {
    if (Option.isNone(answer)) return Effect.fail(new Breaker.BreakerOpen({ host, until: current().breaker.reopensAt, probeInFlight: false }))
    const a = answer.value
    return Effect.zipRight(
      journal(a.transitions),
      a.ticket === null ? Effect.fail(new Breaker.BreakerOpen({ host, until: a.until, probeInFlight: a.probeInFlight })) : Effect.succeed(a.ticket)
    )
  })

  const guard = <A, E, R>(effect: Effect.Effect<A, E, R>, classify: (exit: Exit.Exit<A, E>) => Breaker.Outcome): Effect.Effect<A, E | Breaker.BreakerOpen, R> => {
    const b = current().breaker
    if (b.status === "closed") return settledAfter(effect, { epoch: b.epoch, probe: false }, classify)
    return Effect.uninterruptibleMask((restore) => Effect.flatMap(admit, (ticket) => settledAfter(restore(effect), ticket, classify)))
  }

  return {
    host,
    snapshot: Effect.clockWith((clock) => Effect.sync(() => breakerAt(current().breaker, clock.unsafeCurrentTimeMillis()))),
    guard,
    reset: Effect.flatMap(messages.reset, transitionsOf)
  }
}
