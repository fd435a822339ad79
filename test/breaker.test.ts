import { assert, describe, it } from "@effect/vitest"
import { Cause, Data, Deferred, Duration, Effect, Either, Exit, Fiber, Option, Ref, Schedule, TestClock } from "effect"
import * as Breaker from "../src/routing/Breaker.ts"

class HostTimeout extends Data.TaggedError("HostTimeout")<{}> {}
class HostRefused extends Data.TaggedError("HostRefused")<{}> {}
class UnknownModel extends Data.TaggedError("UnknownModel")<{}> {}
type HostError = HostTimeout | HostRefused | UnknownModel

// How the host actor will classify a call: a timeout counts, refusals are the poller's business,
// a 404 for an unknown model says nothing about the host.
const classify = (exit: Exit.Exit<unknown, HostError>): Breaker.Outcome =>
  Exit.match(exit, {
    onSuccess: () => "success",
    onFailure: (cause) =>
      Option.match(Cause.failureOption(cause), {
        onNone: () => "failure",
        onSome: (e) => (e._tag === "HostTimeout" ? "timeout" : e._tag === "UnknownModel" ? "ignore" : "failure")
      })
  })

const COOLDOWN = Duration.seconds(30)
const COOLDOWN_MS = Duration.toMillis(COOLDOWN)

const setup = (config: Partial<Breaker.BreakerConfig> = {}) =>
  Effect.gen(function*() {
    const transitions = yield* Ref.make<Array<Breaker.BreakerTransition>>([])
    const ran = yield* Ref.make(0)
    const breaker = yield* Breaker.make(
      "gcp-a",
      { consecutiveTimeouts: 2, cooldown: COOLDOWN, ...config },
      (t) => Ref.update(transitions, (ts) => [...ts, t])
    )
    const run = (result: "ok" | HostError) =>
      Ref.update(ran, (n) => n + 1).pipe(
        Effect.zipRight(result === "ok" ? Effect.succeed("ok" as const) : Effect.fail(result))
      )
    const call = (result: "ok" | HostError) => breaker.guard(run(result), classify).pipe(Effect.either)
    const tags = Ref.get(transitions).pipe(Effect.map((ts) => ts.map((t) => t._tag)))
    return { breaker, transitions, tags, ran: Ref.get(ran), call }
  })

const assertRefused = (
  result: Either.Either<unknown, unknown>,
  expected: { until: number | null; probeInFlight: boolean }
) => {
  assert.isTrue(Either.isLeft(result), "expected the breaker to refuse")
  const error = Either.getLeft(result).pipe(Option.getOrThrow)
  assert.instanceOf(error, Breaker.BreakerOpen)
  assert.deepStrictEqual(
    { host: error.host, until: error.until, probeInFlight: error.probeInFlight },
    { host: "gcp-a", ...expected }
  )
}

const openIt = (call: (r: "ok" | HostError) => Effect.Effect<unknown>) =>
  Effect.zipRight(call(new HostTimeout()), call(new HostTimeout()))

describe("Breaker", () => {
  it.effect("opens on exactly the Nth consecutive timeout, then refuses without running the effect", () =>
    Effect.gen(function*() {
      const { breaker, call, ran } = yield* setup({ consecutiveTimeouts: 3 })
      yield* TestClock.adjust("5 seconds")

      yield* call(new HostTimeout())
      yield* call(new HostTimeout())
      assert.deepStrictEqual(yield* breaker.snapshot, {
        status: "closed",
        consecutiveTimeouts: 2,
        openedAt: null,
        reopensAt: null,
        probeInFlight: false
      })

      const third = yield* call(new HostTimeout())
      assert.isTrue(Either.isLeft(third) && third.left._tag === "HostTimeout", "the Nth call itself still ran")
      assert.deepStrictEqual(yield* breaker.snapshot, {
        status: "open",
        consecutiveTimeouts: 3,
        openedAt: 5_000,
        reopensAt: 5_000 + COOLDOWN_MS,
        probeInFlight: false
      })

      assert.strictEqual(yield* ran, 3)
      assertRefused(yield* call("ok"), { until: 5_000 + COOLDOWN_MS, probeInFlight: false })
      assert.strictEqual(yield* ran, 3, "a refused call must not reach the host")
    }))

  it.effect("uses the runbook's N = 2 by default", () =>
    Effect.gen(function*() {
      const breaker = yield* Breaker.make("gcp-b", Breaker.defaultConfig)
      const timeout = breaker.guard(Effect.fail(new HostTimeout()), classify).pipe(Effect.either)
      yield* timeout
      assert.strictEqual((yield* breaker.snapshot).status, "closed")
      yield* timeout
      assert.strictEqual((yield* breaker.snapshot).status, "open")
    }))

  it.effect("a success between timeouts resets the count", () =>
    Effect.gen(function*() {
      const { breaker, call } = yield* setup()
      yield* call(new HostTimeout())
      yield* call("ok")
      yield* call(new HostTimeout())
      const snap = yield* breaker.snapshot
      assert.strictEqual(snap.status, "closed")
      assert.strictEqual(snap.consecutiveTimeouts, 1)

      yield* call(new HostTimeout())
      assert.strictEqual((yield* breaker.snapshot).status, "open")
    }))

  it.effect("non-timeout failures neither open it nor reset the count", () =>
    Effect.gen(function*() {
      const { breaker, call, tags } = yield* setup()
      for (let i = 0; i < 5; i++) yield* call(new HostRefused())
      assert.strictEqual((yield* breaker.snapshot).status, "closed")

      yield* call(new HostTimeout())
      yield* call(new HostRefused())
      yield* call(new UnknownModel())
      assert.deepStrictEqual(yield* breaker.snapshot, {
        status: "closed",
        consecutiveTimeouts: 1,
        openedAt: null,
        reopensAt: null,
        probeInFlight: false
      })

      yield* call(new HostTimeout())
      assert.strictEqual((yield* breaker.snapshot).status, "open")
      assert.deepStrictEqual(yield* tags, ["BreakerOpened"])
    }))

  it.effect("after the cooldown exactly one probe is admitted; concurrent callers are refused", () =>
    Effect.gen(function*() {
      const { breaker, call, ran } = yield* setup()
      yield* openIt(call)

      yield* TestClock.adjust(Duration.subtract(COOLDOWN, Duration.millis(1)))
      assertRefused(yield* call("ok"), { until: COOLDOWN_MS, probeInFlight: false })
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(yield* breaker.snapshot, {
        status: "half-open",
        consecutiveTimeouts: 2,
        openedAt: 0,
        reopensAt: null,
        probeInFlight: false
      })

      const started = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const probe = yield* breaker.guard(
        Deferred.succeed(started, undefined).pipe(Effect.zipRight(Deferred.await(release)), Effect.as("probed")),
        classify
      ).pipe(Effect.fork)
      yield* Deferred.await(started)

      const ranBefore = yield* ran
      const others = yield* Effect.all([call("ok"), call("ok"), call("ok")], { concurrency: "unbounded" })
      for (const other of others) assertRefused(other, { until: null, probeInFlight: true })
      assert.strictEqual(yield* ran, ranBefore, "refused callers must not reach the host")
      assert.deepStrictEqual(yield* breaker.snapshot, {
        status: "half-open",
        consecutiveTimeouts: 2,
        openedAt: 0,
        reopensAt: null,
        probeInFlight: true
      })

      yield* Deferred.succeed(release, undefined)
      assert.strictEqual(yield* Fiber.join(probe), "probed")
      assert.deepStrictEqual(yield* breaker.snapshot, {
        status: "closed",
        consecutiveTimeouts: 0,
        openedAt: null,
        reopensAt: null,
        probeInFlight: false
      })
      assert.deepStrictEqual(yield* call("ok"), Either.right("ok"))
    }))

  it.effect("a failed probe re-opens the breaker for another cooldown", () =>
    Effect.gen(function*() {
      const { breaker, call, transitions } = yield* setup()
      yield* openIt(call)

      yield* TestClock.adjust(COOLDOWN)
      yield* call(new HostTimeout())
      assert.deepStrictEqual(yield* breaker.snapshot, {
        status: "open",
        consecutiveTimeouts: 3,
        openedAt: COOLDOWN_MS,
        reopensAt: 2 * COOLDOWN_MS,
        probeInFlight: false
      })
      assertRefused(yield* call("ok"), { until: 2 * COOLDOWN_MS, probeInFlight: false })

      // Any failure of the probe re-opens, not just a timeout.
      yield* TestClock.adjust(COOLDOWN)
      yield* call(new HostRefused())
      assert.strictEqual((yield* breaker.snapshot).status, "open")
      assertRefused(yield* call("ok"), { until: 3 * COOLDOWN_MS, probeInFlight: false })

      yield* TestClock.adjust(COOLDOWN)
      assert.deepStrictEqual(yield* call("ok"), Either.right("ok"))
      assert.strictEqual((yield* breaker.snapshot).status, "closed")

      const opened = (yield* Ref.get(transitions)).filter((t) => t._tag === "BreakerOpened")
      assert.deepStrictEqual(opened.map((t) => t.reason), ["2 consecutive timeouts", "probe timed out", "probe failed"])
    }))

  it.effect("a probe whose caller is interrupted does not wedge the breaker", () =>
    Effect.gen(function*() {
      const { breaker, call, tags } = yield* setup()
      yield* openIt(call)
      yield* TestClock.adjust(COOLDOWN)

      const started = yield* Deferred.make<void>()
      const probe = yield* breaker.guard(
        Deferred.succeed(started, undefined).pipe(Effect.zipRight(Effect.never)),
        classify
      ).pipe(Effect.fork)
      yield* Deferred.await(started)
      assert.isTrue((yield* breaker.snapshot).probeInFlight)

      yield* Fiber.interrupt(probe)
      // Released back to half-open: a client abort says nothing about the host, so no re-open.
      assert.deepStrictEqual(yield* breaker.snapshot, {
        status: "half-open",
        consecutiveTimeouts: 2,
        openedAt: 0,
        reopensAt: null,
        probeInFlight: false
      })

      assert.deepStrictEqual(yield* call("ok"), Either.right("ok"))
      assert.strictEqual((yield* breaker.snapshot).status, "closed")
      assert.deepStrictEqual(yield* tags, ["BreakerOpened", "BreakerHalfOpened", "BreakerHalfOpened", "BreakerClosed"])
    }))

  it.effect("a probe that gets an 'ignore' outcome releases the slot without closing", () =>
    Effect.gen(function*() {
      const { breaker, call } = yield* setup()
      yield* openIt(call)
      yield* TestClock.adjust(COOLDOWN)
      yield* call(new UnknownModel())
      const snap = yield* breaker.snapshot
      assert.strictEqual(snap.status, "half-open")
      assert.isFalse(snap.probeInFlight)
    }))

  it.effect("onTransition receives Opened, HalfOpened, Closed in order, with times", () =>
    Effect.gen(function*() {
      const { call, transitions } = yield* setup()
      yield* TestClock.adjust("1 second")
      yield* openIt(call)
      yield* TestClock.adjust(COOLDOWN)
      yield* call("ok")
      assert.deepStrictEqual(yield* Ref.get(transitions), [
        {
          _tag: "BreakerOpened",
          at: 1_000,
          consecutiveTimeouts: 2,
          until: 1_000 + COOLDOWN_MS,
          reason: "2 consecutive timeouts"
        },
        { _tag: "BreakerHalfOpened", at: 1_000 + COOLDOWN_MS },
        { _tag: "BreakerClosed", at: 1_000 + COOLDOWN_MS }
      ])
    }))

  it.effect("timeouts from calls admitted before it opened do not re-open or extend it", () =>
    Effect.gen(function*() {
      const { breaker, tags } = yield* setup()
      const gate = yield* Deferred.make<void>()
      const admitted = yield* Effect.all(Array.from({ length: 4 }, () => Deferred.make<void>()))
      const inFlight = yield* Effect.all(
        admitted.map((started) =>
          breaker.guard(
            Deferred.succeed(started, undefined).pipe(
              Effect.zipRight(Deferred.await(gate)),
              Effect.zipRight(Effect.fail(new HostTimeout()))
            ),
            classify
          ).pipe(Effect.either)
        ),
        { concurrency: "unbounded" }
      ).pipe(Effect.fork)
      yield* Effect.all(admitted.map(Deferred.await))
      yield* TestClock.adjust("1 second")
      yield* Deferred.succeed(gate, undefined)
      const results = yield* Fiber.join(inFlight)

      for (const r of results) assert.isTrue(Either.isLeft(r) && r.left._tag === "HostTimeout")
      assert.deepStrictEqual(yield* tags, ["BreakerOpened"])
      const snap = yield* breaker.snapshot
      assert.strictEqual(snap.status, "open")
      assert.strictEqual(snap.consecutiveTimeouts, 2)
      assert.strictEqual(snap.reopensAt, 1_000 + COOLDOWN_MS)
    }))

  it.effect("a timeout from a call admitted before the host recovered does not count after it closes", () =>
    Effect.gen(function*() {
      const { breaker, call } = yield* setup()
      const admitted = yield* Deferred.make<void>()
      const gate = yield* Deferred.make<void>()
      const straggler = yield* breaker.guard(
        Deferred.succeed(admitted, undefined).pipe(
          Effect.zipRight(Deferred.await(gate)),
          Effect.zipRight(Effect.fail(new HostTimeout()))
        ),
        classify
      ).pipe(Effect.either, Effect.fork)
      yield* Deferred.await(admitted)
      yield* openIt(call)
      yield* TestClock.adjust(COOLDOWN)
      yield* call("ok")
      assert.strictEqual((yield* breaker.snapshot).status, "closed")

      yield* Deferred.succeed(gate, undefined)
      const late = yield* Fiber.join(straggler)
      assert.isTrue(Either.isLeft(late) && late.left._tag === "HostTimeout", "the straggler did reach the host")
      assert.strictEqual((yield* breaker.snapshot).consecutiveTimeouts, 0)
      yield* call(new HostTimeout())
      assert.strictEqual((yield* breaker.snapshot).status, "closed", "one fresh timeout must not re-open it")
    }))

  it.effect("a cooldown schedule lengthens successive cooldowns and restarts once closed", () =>
    Effect.gen(function*() {
      const { breaker, call } = yield* setup({ cooldownSchedule: Schedule.exponential("10 seconds") })
      const reopensIn = Effect.gen(function*() {
        const snap = yield* breaker.snapshot
        return snap.reopensAt === null || snap.openedAt === null ? null : snap.reopensAt - snap.openedAt
      })

      yield* openIt(call)
      assert.strictEqual(yield* reopensIn, 10_000)
      yield* TestClock.adjust("10 seconds")
      yield* call(new HostTimeout())
      assert.strictEqual(yield* reopensIn, 20_000)
      yield* TestClock.adjust("19 seconds")
      assertRefused(yield* call("ok"), { until: 10_000 + 20_000, probeInFlight: false })
      yield* TestClock.adjust("1 second")
      yield* call(new HostRefused())
      assert.strictEqual(yield* reopensIn, 40_000)

      yield* TestClock.adjust("40 seconds")
      yield* call("ok")
      assert.strictEqual((yield* breaker.snapshot).status, "closed")
      yield* openIt(call)
      assert.strictEqual(yield* reopensIn, 10_000)
    }))

  it.effect("operator reset closes it, and the outcome of a probe it outlived is ignored", () =>
    Effect.gen(function*() {
      const { breaker, call, tags } = yield* setup()
      yield* openIt(call)
      yield* breaker.reset
      assert.strictEqual((yield* breaker.snapshot).status, "closed")
      assert.deepStrictEqual(yield* call("ok"), Either.right("ok"))

      yield* openIt(call)
      yield* TestClock.adjust(COOLDOWN)
      const started = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const probe = yield* breaker.guard(
        Deferred.succeed(started, undefined).pipe(
          Effect.zipRight(Deferred.await(release)),
          Effect.zipRight(Effect.fail(new HostTimeout()))
        ),
        classify
      ).pipe(Effect.fork)
      yield* Deferred.await(started)
      yield* breaker.reset
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.await(probe)

      assert.deepStrictEqual(yield* breaker.snapshot, {
        status: "closed",
        consecutiveTimeouts: 0,
        openedAt: null,
        reopensAt: null,
        probeInFlight: false
      })
      assert.deepStrictEqual(yield* tags, [
        "BreakerOpened",
        "BreakerClosed",
        "BreakerOpened",
        "BreakerHalfOpened",
        "BreakerClosed"
      ])
    }))
})
