/**
 * The host entity (src/cluster/HostEntity.ts) through @effect/cluster's `Entity.makeTestClient`: the
 * grant rule with per-lane reservations, lease renewal and expiry, no over-admission after a new
 * owner takes the host over, and one breaker for every replica with exactly one probe. The clock is
 * the TestClock: leases and cooldowns move only when the test says so.
 */
import { Entity } from "@effect/cluster"
import * as ShardingConfig from "@effect/cluster/ShardingConfig"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, FiberId, Option, TestClock } from "effect"
import * as HostEntity from "../src/cluster/HostEntity.ts"
import * as HostLink from "../src/cluster/HostLink.ts"
import type * as Breaker from "../src/routing/Breaker.ts"

const LEASE = 1_000
const COOLDOWN = 10_000

const settings: HostEntity.EntitySettings = {
  leaseMs: LEASE,
  hosts: {
    "gpu-1": {
      slots: 3,
      reservations: { alert: 1 },
      breaker: { consecutiveTimeouts: 2, cooldown: COOLDOWN },
      longestTimeoutMs: 5_000
    }
  }
}

/** A fresh owner of the host: its entity starts empty, as on a new runner after a failover. */
const owner = Effect.gen(function*() {
  const makeClient = yield* Entity.makeTestClient(HostEntity.HostEntity, HostEntity.layer(settings))
  return yield* makeClient("gpu-1")
}).pipe(Effect.provide(ShardingConfig.layer()))

const past = (ms: number) => TestClock.adjust(ms)

describe("host entity", () => {
  it.scoped("grants nothing while it recovers, then reserved slots only to their lane", () =>
    Effect.gen(function*() {
      const host = yield* owner
      const early = yield* host.Acquire({ replica: "a", lease: "a/1", lane: "alert" })
      expect(early.pool).toBeNull()
      expect(early.reason).toBe("recovering")
      yield* past(LEASE)

      // 3 slots, 1 reserved for alert: code-review gets the 2 shared ones and no more.
      const cr = yield* Effect.forEach([1, 2, 3], (i) => host.Acquire({ replica: "a", lease: `a/cr${i}`, lane: "code-review" }))
      expect(cr.map((g) => g.pool)).toEqual(["shared", "shared", null])
      expect(cr[2]!.reason).toBe("full")
      // alert takes its own reserved slot, then finds the shared pool full.
      expect((yield* host.Acquire({ replica: "b", lease: "b/1", lane: "alert" })).pool).toBe("reserved")
      const more = yield* host.Acquire({ replica: "b", lease: "b/2", lane: "alert" })
      expect(more.pool).toBeNull()
      expect(more.state.slots).toMatchObject({ total: 3, inUse: 3, shared: { total: 2, inUse: 2 }, reserved: { alert: { total: 1, inUse: 1 } } })
      // A released shared slot goes to whoever asks; the reserved one stays alert's.
      yield* host.Release({ replica: "a", leases: ["a/cr1"] })
      expect((yield* host.Acquire({ replica: "b", lease: "b/3", lane: "alert" })).pool).toBe("shared")
      yield* host.Release({ replica: "b", leases: ["b/1"] })
      expect((yield* host.Acquire({ replica: "a", lease: "a/cr4", lane: "code-review" })).pool).toBeNull()
      expect((yield* host.Acquire({ replica: "a", lease: "a/al", lane: "alert" })).pool).toBe("reserved")
    }))

  it.scoped("a lease not renewed for a lease period expires; a renewed one stays", () =>
    Effect.gen(function*() {
      const host = yield* owner
      yield* past(LEASE)
      yield* host.Acquire({ replica: "a", lease: "a/1", lane: "code-review" })
      yield* host.Acquire({ replica: "dead", lease: "d/1", lane: "code-review" })
      expect((yield* host.Acquire({ replica: "b", lease: "b/1", lane: "code-review" })).pool).toBeNull()
      // "a" renews every half lease; "dead" never does.
      yield* past(LEASE / 2)
      yield* host.Renew({ opened: null, replica: "a", leases: [{ id: "a/1", lane: "code-review", pool: "shared" }] })
      yield* past(LEASE / 2)
      yield* host.Renew({ opened: null, replica: "a", leases: [{ id: "a/1", lane: "code-review", pool: "shared" }] })
      const after = yield* host.Acquire({ replica: "b", lease: "b/2", lane: "code-review" })
      expect(after.pool).toBe("shared")
      expect(after.state.slots.shared.inUse).toBe(2)
      expect((yield* host.Acquire({ replica: "b", lease: "b/3", lane: "code-review" })).pool).toBeNull()
    }))

  it.scoped("a new owner rebuilds from renewals and never admits beyond them", () =>
    Effect.gen(function*() {
      const first = yield* owner
      yield* past(LEASE)
      yield* first.Acquire({ replica: "a", lease: "a/1", lane: "code-review" })
      yield* first.Acquire({ replica: "b", lease: "b/1", lane: "alert" })
      // The owner dies; the next one starts empty.
      const second = yield* owner
      expect((yield* second.Acquire({ replica: "c", lease: "c/1", lane: "code-review" })).reason).toBe("recovering")
      // Within the lease period both holders renew (as they do every renew period).
      yield* past(LEASE / 2)
      const renewedA = yield* second.Renew({ opened: null, replica: "a", leases: [{ id: "a/1", lane: "code-review", pool: "shared" }] })
      const renewedB = yield* second.Renew({ opened: null, replica: "b", leases: [{ id: "b/1", lane: "alert", pool: "reserved" }] })
      expect(renewedA.adopted + renewedB.adopted).toBe(2)
      expect((yield* second.Acquire({ replica: "c", lease: "c/2", lane: "code-review" })).reason).toBe("recovering")
      yield* past(LEASE / 2)
      // One shared slot is left: one grant, then full, and alert's reservation is held by b's lease.
      expect((yield* second.Acquire({ replica: "c", lease: "c/3", lane: "code-review" })).pool).toBe("shared")
      const full = yield* second.Acquire({ replica: "c", lease: "c/4", lane: "alert" })
      expect(full.pool).toBeNull()
      expect(full.state.slots.inUse).toBe(3)
    }))

  it.scoped("timeouts from two replicas open the breaker for all; exactly one probe", () =>
    Effect.gen(function*() {
      const host = yield* owner
      const closed = { epoch: 0, probe: false }
      const one = yield* host.Settle({ replica: "a", ticket: closed, outcome: "timeout" })
      expect(one.state.breaker.status).toBe("closed")
      expect(one.state.breaker.consecutiveTimeouts).toBe(1)
      const two = yield* host.Settle({ replica: "b", ticket: closed, outcome: "timeout" })
      expect(two.transitions.map((t) => t._tag)).toEqual(["BreakerOpened"])
      expect(two.state.breaker.status).toBe("open")
      // Every replica's next answer (a renewal here) says open; admission is refused.
      expect((yield* host.Renew({ opened: null, replica: "c", leases: [] })).state.breaker.status).toBe("open")
      expect((yield* host.Admit({ replica: "c" })).ticket).toBeNull()

      yield* past(COOLDOWN)
      const admissions = yield* Effect.forEach(["a", "b", "c"], (replica) => host.Admit({ replica }))
      const probes = admissions.filter((a) => a.ticket !== null)
      expect(probes).toHaveLength(1)
      expect(probes[0]!.transitions.map((t) => t._tag)).toEqual(["BreakerHalfOpened"])
      expect(admissions.filter((a) => a.ticket === null).every((a) => a.probeInFlight)).toBe(true)
      const settled = yield* host.Settle({ replica: "a", ticket: probes[0]!.ticket!, outcome: "success" })
      expect(settled.transitions.map((t) => t._tag)).toEqual(["BreakerClosed"])
      expect(settled.state.breaker.status).toBe("closed")
    }))

  it.scoped("a new owner keeps the breaker open that its replicas saw open", () =>
    Effect.gen(function*() {
      const first = yield* owner
      const closed = { epoch: 0, probe: false }
      yield* first.Settle({ replica: "a", ticket: closed, outcome: "timeout" })
      const opened = (yield* first.Settle({ replica: "a", ticket: closed, outcome: "timeout" })).state.breaker
      expect(opened.status).toBe("open")
      const second = yield* owner
      expect((yield* second.Admit({ replica: "b" })).ticket).not.toBeNull() // starts closed
      const seen = { openedAt: opened.openedAt!, reopensAt: opened.reopensAt!, consecutiveTimeouts: opened.consecutiveTimeouts }
      const third = yield* owner
      const renewed = yield* third.Renew({ opened: seen, replica: "a", leases: [] })
      expect(renewed.state.breaker.status).toBe("open")
      expect((yield* third.Admit({ replica: "b" })).ticket).toBeNull()
      // Once past recovery an owner no longer takes it from renewals (they only repeat what it said).
      yield* past(LEASE)
      const later = yield* owner
      yield* past(LEASE)
      expect((yield* later.Renew({ opened: seen, replica: "a", leases: [] })).state.breaker.status).toBe("closed")
      // At the cooldown's end the adopted breaker admits one probe.
      yield* past(COOLDOWN)
      const probe = yield* third.Admit({ replica: "b" })
      expect(probe.ticket?.probe).toBe(true)
      expect(probe.transitions.map((t) => t._tag)).toEqual(["BreakerHalfOpened"])
    }))

  it.scoped("a new owner takes on the timeouts counted toward opening (the freshest count) and the probe still running", () =>
    Effect.gen(function*() {
      const closed = { epoch: 0, probe: false }
      // The earlier owner had counted one timeout of two; a replica heard it at t=5, another heard 0 at t=3.
      const second = yield* owner
      yield* second.Renew({ opened: null, replica: "a", leases: [], timeouts: { count: 1, heardAt: 5 } })
      yield* second.Renew({ opened: null, replica: "b", leases: [], timeouts: { count: 0, heardAt: 3 } })
      const opened = yield* second.Settle({ replica: "c", ticket: closed, outcome: "timeout" })
      expect(opened.transitions.map((t) => t._tag)).toEqual(["BreakerOpened"])

      // The probe: admitted by an owner that then died, still running at replica "a".
      yield* past(COOLDOWN)
      const seen = { openedAt: opened.state.breaker.openedAt!, reopensAt: opened.state.breaker.openedAt! + COOLDOWN, consecutiveTimeouts: 2 }
      const third = yield* owner
      const renewed = yield* third.Renew({ opened: seen, replica: "a", leases: [], probing: true })
      expect(renewed.state.breaker.probeInFlight).toBe(true)
      // No second probe while it runs...
      const refused = yield* third.Admit({ replica: "b" })
      expect([refused.ticket, refused.probeInFlight]).toEqual([null, true])
      // ...and its outcome, sent with the earlier owner's ticket, settles it here.
      const settled = yield* third.Settle({ replica: "a", ticket: { epoch: 7, probe: true }, outcome: "success" })
      expect(settled.transitions.map((t) => t._tag)).toEqual(["BreakerClosed"])
      expect(settled.state.breaker.status).toBe("closed")
      // Past its recovery an owner takes nothing from renewals.
      yield* past(LEASE)
      yield* third.Renew({ opened: null, replica: "a", leases: [], timeouts: { count: 1, heardAt: 99 } })
      expect((yield* third.Settle({ replica: "c", ticket: { epoch: settled.state.breaker.epoch, probe: false }, outcome: "timeout" })).state.breaker.consecutiveTimeouts).toBe(1)
    }))

  it.scoped("a success between timeouts resets the count, whichever replica saw it", () =>
    Effect.gen(function*() {
      const host = yield* owner
      const closed = { epoch: 0, probe: false }
      yield* host.Settle({ replica: "a", ticket: closed, outcome: "timeout" })
      yield* host.Settle({ replica: "b", ticket: closed, outcome: "success" })
      const after = yield* host.Settle({ replica: "c", ticket: closed, outcome: "timeout" })
      expect(after.state.breaker.status).toBe("closed")
    }))

  it.scoped("a renewal on its way when its lease was released does not bring the lease back", () =>
    Effect.gen(function*() {
      const host = yield* owner
      yield* past(LEASE)
      const lease = { id: "a/1", lane: "code-review", pool: "shared" as const }
      yield* host.Acquire({ replica: "a", lease: lease.id, lane: lease.lane })
      // The request ends: a releases the lease, and a renewal a sent a moment before arrives after it.
      expect((yield* host.Release({ replica: "a", leases: [lease.id] })).state.slots.shared.inUse).toBe(0)
      const late = yield* host.Renew({ opened: null, replica: "a", leases: [lease] })
      expect(late.adopted).toBe(0)
      expect(late.state.slots.shared.inUse).toBe(0)
      // Both shared slots are there for others.
      expect((yield* host.Acquire({ replica: "b", lease: "b/1", lane: "code-review" })).pool).toBe("shared")
      expect((yield* host.Acquire({ replica: "b", lease: "b/2", lane: "code-review" })).pool).toBe("shared")
      // An unknown lease is still adopted (a request running on the host must be counted).
      const other = yield* host.Renew({ opened: null, replica: "c", leases: [{ id: "c/9", lane: "code-review", pool: "shared" }] })
      expect(other.adopted).toBe(1)
    }))

  it.scoped("a probe whose replica goes silent is released to the next caller", () =>
    Effect.gen(function*() {
      const host = yield* owner
      const closed = { epoch: 0, probe: false }
      yield* host.Settle({ replica: "a", ticket: closed, outcome: "timeout" })
      yield* host.Settle({ replica: "a", ticket: closed, outcome: "timeout" })
      yield* past(COOLDOWN)
      expect((yield* host.Admit({ replica: "dead" })).ticket?.probe).toBe(true)
      expect((yield* host.Admit({ replica: "b" })).ticket).toBeNull()
      yield* past(LEASE + 1)
      expect((yield* host.Admit({ replica: "b" })).ticket?.probe).toBe(true)
    }))
})

/** HostLink (a replica's Slots and Breaker) over the test entity: what Lane and Attempts see. */
describe("host link", () => {
  const linked = (replica: string, client: HostLink.Client, transitions: Array<string>) =>
    // Long periods: every TestClock step would otherwise run many renewals and retry ticks.
    HostLink.make(client, { replica, renewMs: 5_000, callTimeoutMs: 1_000, retryMs: 5_000 })
      .make("gpu-1", 3, { alert: 1 }, { consecutiveTimeouts: 2, cooldown: COOLDOWN }, (t: Breaker.BreakerTransition) =>
        Effect.sync(() => void transitions.push(`${replica} ${t._tag}`)))

  it.scoped("two replicas share the slots and one breaker through the same Slots and Breaker interfaces", () =>
    Effect.gen(function*() {
      const host = yield* owner
      // The test client has no errors of its own; the link's client type allows the cluster's.
      const client = (() => host) as unknown as HostLink.Client
      const transitions: Array<string> = []
      const a = yield* linked("a", client, transitions)
      const b = yield* linked("b", client, transitions)
      yield* past(LEASE)
      const p1 = yield* a.slots.tryAcquire("code-review")
      const p2 = yield* b.slots.tryAcquire("code-review")
      expect([p1, p2].every(Option.isSome)).toBe(true)
      // The shared pool is full for either replica; the reserved slot is alert's.
      expect(Option.isNone(yield* a.slots.tryAcquire("code-review"))).toBe(true)
      const signal = yield* b.slots.acquireOrSignal("code-review")
      expect("pool" in signal).toBe(false)
      expect(Option.getOrThrow(yield* b.slots.tryAcquire("alert")).pool).toBe("reserved")
      // Each replica sees the count of its last answer: b just had one.
      expect((yield* b.slots.snapshot).inUse).toBe(3)

      // A timeout on each replica opens the one breaker; both then refuse.
      const timesOut = Effect.fail("timeout" as const)
      const asTimeout = (exit: Exit.Exit<unknown, unknown>) => (Exit.isFailure(exit) ? "timeout" as const : "success" as const)
      yield* Effect.either(a.breaker.guard(timesOut, asTimeout))
      yield* Effect.either(b.breaker.guard(timesOut, asTimeout))
      expect(transitions).toEqual(["b BreakerOpened"])
      yield* Effect.either(a.slots.tryAcquire("alert")) // any answer refreshes a's view
      expect((yield* a.breaker.snapshot).status).toBe("open")
      const refused = yield* Effect.either(a.breaker.guard(Effect.succeed("never runs"), asTimeout))
      expect(refused._tag === "Left" && (refused.left as { _tag: string })._tag).toBe("BreakerOpen")

      // After the cooldown both try at once: the host sees exactly one probe.
      yield* past(COOLDOWN)
      yield* Effect.either(a.slots.tryAcquire("alert"))
      yield* Effect.either(b.slots.tryAcquire("alert"))
      let reached = 0
      const probe = Effect.sync(() => ++reached).pipe(Effect.zipRight(Effect.sleep("1 second")))
      const both = yield* Effect.fork(Effect.all([a.breaker.guard(probe, asTimeout), b.breaker.guard(probe, asTimeout)].map(Effect.either), { concurrency: 2 }))
      yield* past(1_000)
      const results = yield* both.await
      expect(Exit.isSuccess(results)).toBe(true)
      expect(reached).toBe(1)
      expect(transitions.filter((t) => t.endsWith("BreakerHalfOpened"))).toHaveLength(1)
      expect(transitions.filter((t) => t.endsWith("BreakerClosed"))).toHaveLength(1)
    }))

  it.scoped("an entity message that dies or is interrupted (its owner's runner died mid-request) is no answer: the host is busy, the breaker refuses, nothing fails", () =>
    Effect.gen(function*() {
      const host = yield* owner
      let mode: "die" | "interrupt" | "hang" | "ok" = "die"
      const broken = <A>(answer: Effect.Effect<A>) =>
        Effect.suspend(() =>
          mode === "die"
            ? Effect.die(new Error("RunnerUnavailable: 127.0.0.1:1"))
            : mode === "interrupt"
            ? Effect.failCause(Cause.interrupt(FiberId.make(999, 0)))
            : mode === "hang" ? Effect.never : answer)
      const flaky = {
        ...host,
        Acquire: (p: Parameters<typeof host.Acquire>[0]) => broken(host.Acquire(p)),
        Admit: (p: Parameters<typeof host.Admit>[0]) => broken(host.Admit(p)),
        Renew: (p: Parameters<typeof host.Renew>[0]) => broken(host.Renew(p))
      }
      const link = yield* linked("a", (() => flaky) as unknown as HostLink.Client, [])
      yield* past(LEASE)
      for (const m of ["die", "interrupt"] as const) {
        mode = m
        expect(Option.isNone(yield* link.slots.tryAcquire("code-review"))).toBe(true)
        const signal = yield* link.slots.acquireOrSignal("code-review")
        expect("pool" in signal).toBe(false)
      }
      // The request's own interruption (its caller left) still ends it, also where the lane asks uninterruptibly.
      mode = "hang"
      const asking = yield* Effect.fork(Effect.uninterruptible(link.slots.tryAcquire("code-review")))
      yield* Effect.yieldNow()
      const exit = yield* Fiber.interrupt(asking)
      expect(Exit.isInterrupted(exit)).toBe(true)
      // The owner answers again: the next attempt gets its slot.
      mode = "ok"
      expect(Option.getOrThrow(yield* link.slots.tryAcquire("code-review")).pool).toBe("shared")
      // With the breaker open, an admission that dies refuses the call instead of failing the request.
      const closed = { epoch: 0, probe: false }
      yield* host.Settle({ replica: "b", ticket: closed, outcome: "timeout" })
      yield* host.Settle({ replica: "b", ticket: closed, outcome: "timeout" })
      yield* link.slots.tryAcquire("alert") // refreshes the link's view: open
      yield* past(COOLDOWN)
      mode = "die"
      const refused = yield* Effect.either(link.breaker.guard(Effect.succeed("never runs"), () => "success" as const))
      expect(refused._tag === "Left" && (refused.left as { _tag: string })._tag).toBe("BreakerOpen")
    }))

  it.scoped("a replica tells a new owner the timeouts it heard counted, so a failover does not reset the count", () =>
    Effect.gen(function*() {
      let target = yield* owner
      const client = (() => new Proxy({}, { get: (_, key) => (target as Record<string | symbol, unknown>)[key] })) as unknown as HostLink.Client
      const transitions: Array<string> = []
      const a = yield* HostLink.make(client, { replica: "a", renewMs: 400, callTimeoutMs: 1_000, retryMs: 5_000 })
        .make("gpu-1", 3, { alert: 1 }, { consecutiveTimeouts: 2, cooldown: COOLDOWN }, (t: Breaker.BreakerTransition) =>
          Effect.sync(() => void transitions.push(t._tag)))
      yield* past(LEASE)
      const asTimeout = (exit: Exit.Exit<unknown, unknown>) => (Exit.isFailure(exit) ? "timeout" as const : "success" as const)
      yield* Effect.either(a.breaker.guard(Effect.fail("timeout"), asTimeout))
      expect((yield* a.breaker.snapshot).consecutiveTimeouts).toBe(1)
      // The owner's runner dies; the next owner starts empty and hears a's renewal while it recovers.
      target = yield* owner
      yield* past(400)
      const next = yield* target.Settle({ replica: "b", ticket: { epoch: 0, probe: false }, outcome: "timeout" })
      expect(next.transitions.map((t) => t._tag)).toEqual(["BreakerOpened"])
    }))

  it.scoped("a replica parks an ended request's lease for its lane's next one, and hands it back when another replica is refused or it lingers", () =>
    Effect.gen(function*() {
      const host = yield* owner
      let acquires = 0
      const counted = { ...host, Acquire: (p: Parameters<typeof host.Acquire>[0]) => Effect.suspend(() => (acquires++, host.Acquire(p))) }
      const client = (() => counted) as unknown as HostLink.Client
      const park = { lingerMs: 2_000, syncMs: 100, freshMs: 500 }
      const make = (replica: string) =>
        // Renewals within the lease (b's lease must outlive the test), parked ones synced more often.
        HostLink.make(client, { replica, renewMs: 400, callTimeoutMs: 1_000, retryMs: 5_000, park })
          .make("gpu-1", 3, { alert: 1 }, { consecutiveTimeouts: 2, cooldown: COOLDOWN }, () => Effect.void)
      const a = yield* make("a")
      const b = yield* make("b")
      yield* past(LEASE)
      const take = (link: typeof a, lane: string) => Effect.map(link.slots.tryAcquire(lane), Option.getOrThrow)
      // What the entity counts, once the releases sent off the requests' path have arrived.
      const sharedInUse = Effect.zipRight(
        Effect.repeatN(Effect.yieldNow(), 10),
        Effect.map(host.Renew({ opened: null, replica: "probe", leases: [] }), (r) => r.state.slots.shared.inUse)
      )

      // a's two code-review requests end: both leases stay parked at a (the entity still counts them).
      const [cr1, cr2] = [yield* take(a, "code-review"), yield* take(a, "code-review")]
      yield* cr1.release
      yield* cr2.release
      expect(acquires).toBe(2)
      expect(yield* sharedInUse).toBe(2)
      // The next ones on a take them without a message; another lane never takes them.
      const again = yield* take(a, "code-review")
      expect(again.pool).toBe("shared")
      expect(acquires).toBe(2)
      expect((yield* take(a, "alert")).pool).toBe("reserved")
      expect(acquires).toBe(3)
      yield* again.release

      // b is refused (a parks both shared slots): the entity wants them back, a hears it at its next sync.
      expect(Option.isNone(yield* b.slots.tryAcquire("code-review"))).toBe(true)
      yield* past(park.syncMs)
      expect(yield* sharedInUse).toBe(0)
      expect((yield* take(b, "code-review")).pool).toBe("shared")
      // While the entity wants slots, a's ended requests release at once instead of parking.
      const cr3 = yield* take(a, "code-review")
      yield* cr3.release
      expect(yield* sharedInUse).toBe(1)

      // Once nobody was refused for half a lease period, a parks again; unused for the linger period, it releases.
      yield* past(LEASE / 2)
      const cr4 = yield* take(a, "code-review")
      yield* cr4.release
      expect(yield* sharedInUse).toBe(2)
      yield* past(park.lingerMs + park.syncMs)
      expect(yield* sharedInUse).toBe(1)
    }))
})
