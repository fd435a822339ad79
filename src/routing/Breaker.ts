/**
 * Per-host circuit breaker (runbook: "Per-host circuit breaker opens after 2 consecutive
 * timeout failures").
 *
 * Effect 3.x has no circuit-breaker module, so this is a `SynchronizedRef` state machine read
 * against `Clock`: `TestClock` drives it in tests and nothing here reads wall time directly.
 *
 *   closed ──N consecutive timeouts──▶ open ──cooldown elapses──▶ half-open
 *     ▲                                 ▲                              │ exactly one probe admitted
 *     └──────── probe succeeds ─────────┴──── probe times out/fails ───┘
 *
 * "half-open" is not stored: it is an open breaker whose `reopensAt` has passed, so no timer
 * fiber is needed and the breaker has no lifetime to manage.
 */
import { Cause, Clock, Data, Duration, Effect, Exit, Option, Schedule, SynchronizedRef } from "effect"

export interface BreakerConfig {
  readonly consecutiveTimeouts: number
  readonly cooldown: Duration.DurationInput
  /**
   * Successive cooldowns while the host keeps failing its probes (e.g.
   * `Schedule.exponential("30 seconds")`). Stepped once per opening, restarted when the breaker
   * closes; once it is done the last cooldown is kept. Default: the constant `cooldown`.
   */
  readonly cooldownSchedule?: Schedule.Schedule<Duration.Duration>
}

/** The runbook's N = 2; the cooldown is our choice (the runbook does not name one). */
export const defaultConfig: BreakerConfig = { consecutiveTimeouts: 2, cooldown: "30 seconds" }

export type BreakerStatus = "closed" | "open" | "half-open"

export interface BreakerSnapshot {
  /** An open breaker whose cooldown has elapsed reports "half-open". */
  readonly status: BreakerStatus
  readonly consecutiveTimeouts: number
  /** Epoch ms. */
  readonly openedAt: number | null
  /** Epoch ms when a probe becomes admissible; set only while status is "open". */
  readonly reopensAt: number | null
  readonly probeInFlight: boolean
}

export type BreakerTransition =
  | {
    readonly _tag: "BreakerOpened"
    readonly at: number
    readonly consecutiveTimeouts: number
    readonly until: number
    readonly reason: string
  }
  /** Emitted when the probe is admitted. */
  | { readonly _tag: "BreakerHalfOpened"; readonly at: number }
  | { readonly _tag: "BreakerClosed"; readonly at: number }

export class BreakerOpen extends Data.TaggedError("BreakerOpen")<{
  readonly host: string
  /** When a probe becomes admissible; null while a probe is already in flight. */
  readonly until: number | null
  readonly probeInFlight: boolean
}> {}

/** "ignore": the exit says nothing about host health (a 404 for an unknown model, a client abort). */
export type Outcome = "success" | "timeout" | "failure" | "ignore"

export interface Breaker {
  readonly host: string
  readonly snapshot: Effect.Effect<BreakerSnapshot>
  /**
   * Admit (or refuse with BreakerOpen), run `effect`, classify its exit, update the state.
   * Interruption of `effect` counts as "ignore" and releases a held probe.
   */
  readonly guard: <A, E, R>(
    effect: Effect.Effect<A, E, R>,
    classify: (exit: Exit.Exit<A, E>) => Outcome
  ) => Effect.Effect<A, E | BreakerOpen, R>
  /** Operator reset → closed. */
  readonly reset: Effect.Effect<void>
}

// `epoch` changes on every open/close/reset. A caller's outcome only counts against the epoch it
// was admitted in, so slow requests admitted while closed cannot re-open (or extend) a breaker
// that another timeout already opened, and a probe outlived by an operator reset is ignored.
type State =
  | { readonly _tag: "Closed"; readonly epoch: number; readonly timeouts: number }
  | {
    readonly _tag: "Open"
    readonly epoch: number
    readonly timeouts: number
    readonly openedAt: number
    readonly reopensAt: number
    readonly probeInFlight: boolean
    readonly cooldownMillis: number
    // Schedule state is opaque (`any` in Schedule's own types).
    readonly cooldownState: unknown
  }

/** What an admitted caller settles with: the epoch it was admitted in, and whether it is the probe. */
export interface Ticket {
  readonly epoch: number
  readonly probe: boolean
}

/**
 * The breaker with its admission and settlement apart, for a breaker that is asked by messages
 * rather than around an effect (the cluster's host entity, cluster/HostEntity.ts).
 */
export interface BreakerCore extends Breaker {
  /** Admits (emitting BreakerHalfOpened for the probe) or refuses with BreakerOpen. */
  readonly admit: Effect.Effect<Ticket, BreakerOpen>
  readonly settle: (ticket: Ticket, outcome: Outcome) => Effect.Effect<void>
  /** The current epoch (changes on every open, close and reset). */
  readonly epoch: Effect.Effect<number>
  /**
   * Takes on an opening another instance of this breaker journaled (a host entity's previous owner,
   * as its replicas saw it): a closed breaker becomes open until `reopensAt`, without a
   * transition. An open one is left as it is.
   */
  readonly adopt: (opened: { readonly openedAt: number; readonly reopensAt: number; readonly consecutiveTimeouts: number }) => Effect.Effect<void>
  /**
   * Takes on a probe another instance admitted and that has not ended yet: an adopted open breaker
   * counts it as in flight, so no second probe is admitted. Returns the ticket it settles with here.
   */
  readonly adoptProbe: Effect.Effect<Ticket | null>
  /** Takes on a count of consecutive timeouts another instance had reached (closed breaker only). */
  readonly adoptTimeouts: (consecutiveTimeouts: number) => Effect.Effect<void>
}

type Admission =
  | { readonly _tag: "Admitted"; readonly ticket: Ticket; readonly transition: Option.Option<BreakerTransition> }
  | { readonly _tag: "Refused"; readonly until: number | null; readonly probeInFlight: boolean }

/** A change of state: the transition it announces (journaled outside the lock), and the new state. */
type Step = readonly [Option.Option<BreakerTransition>, State]

const noTransition = Option.none<BreakerTransition>()

/** What an exit says of the host: an interruption says nothing; a throwing classifier counts as a failure. */
export const outcomeOf = <A, E>(host: string, exit: Exit.Exit<A, E>, classify: (exit: Exit.Exit<A, E>) => Outcome): Effect.Effect<Outcome> => {
  if (Exit.isFailure(exit) && Cause.isInterruptedOnly(exit.cause)) return Effect.succeed("ignore")
  try {
    return Effect.succeed(classify(exit))
  } catch (defect) {
    // A throwing classifier must not leave a probe held forever.
    return Effect.logError("Breaker classify threw; counting as failure", defect).pipe(
      Effect.annotateLogs("host", host),
      Effect.as<Outcome>("failure")
    )
  }
}

export const make = (
  host: string,
  config: BreakerConfig,
  onTransition: (t: BreakerTransition) => Effect.Effect<void> = () => Effect.void
): Effect.Effect<BreakerCore> =>
  Effect.gen(function*() {
    const threshold = Math.max(1, Math.floor(config.consecutiveTimeouts))
    const baseCooldown = Duration.decode(config.cooldown)
    const cooldowns = config.cooldownSchedule ?? Schedule.forever.pipe(Schedule.as(baseCooldown))
    const state = yield* SynchronizedRef.make<State>({ _tag: "Closed", epoch: 0, timeouts: 0 })

    const open = (s: State, now: number, timeouts: number, reason: string): Effect.Effect<Step> => {
      const previous = s._tag === "Open" ? s : { cooldownMillis: Duration.toMillis(baseCooldown), cooldownState: cooldowns.initial }
      return cooldowns.step(now, undefined, previous.cooldownState).pipe(
        Effect.map(([cooldownState, cooldown, decision]): Step => {
          const cooldownMillis = decision._tag === "Done" ? previous.cooldownMillis : Duration.toMillis(cooldown)
          const reopensAt = now + cooldownMillis
          return [
            Option.some({ _tag: "BreakerOpened", at: now, consecutiveTimeouts: timeouts, until: reopensAt, reason }),
            {
              _tag: "Open",
              epoch: s.epoch + 1,
              timeouts,
              openedAt: now,
              reopensAt,
              probeInFlight: false,
              cooldownMillis,
              cooldownState
            }
          ]
        })
      )
    }

    const close = (s: State, now: number): Step => [
      s._tag === "Open" ? Option.some({ _tag: "BreakerClosed", at: now }) : noTransition,
      { _tag: "Closed", epoch: s.epoch + 1, timeouts: 0 }
    ]

    const admitPure = (s: State, now: number): readonly [Admission, State] => {
      if (s._tag === "Closed") {
        return [{ _tag: "Admitted", ticket: { epoch: s.epoch, probe: false }, transition: noTransition }, s]
      }
      if (s.probeInFlight) return [{ _tag: "Refused", until: null, probeInFlight: true }, s]
      if (now < s.reopensAt) return [{ _tag: "Refused", until: s.reopensAt, probeInFlight: false }, s]
      return [
        {
          _tag: "Admitted",
          ticket: { epoch: s.epoch, probe: true },
          transition: Option.some({ _tag: "BreakerHalfOpened", at: now })
        },
        { ...s, probeInFlight: true }
      ]
    }

    const settlePure = (s: State, now: number, ticket: Ticket, outcome: Outcome): Effect.Effect<Step> => {
      const unchanged = Effect.succeed([noTransition, s] as const)
      if (ticket.epoch !== s.epoch) return unchanged
      if (s._tag === "Closed") {
        if (ticket.probe) return unchanged
        switch (outcome) {
          case "success":
            return Effect.succeed([noTransition, { ...s, timeouts: 0 }])
          case "timeout": {
            const timeouts = s.timeouts + 1
            return timeouts >= threshold
              ? open(s, now, timeouts, `${timeouts} consecutive timeouts`)
              : Effect.succeed([noTransition, { ...s, timeouts }])
          }
          // The host poller marks a refusing host down; here they neither count nor reset.
          case "failure":
          case "ignore":
            return unchanged
        }
      }
      if (!ticket.probe || !s.probeInFlight) return unchanged
      switch (outcome) {
        case "success":
          return Effect.succeed(close(s, now))
        case "timeout":
          return open(s, now, s.timeouts + 1, "probe timed out")
        case "failure":
          return open(s, now, s.timeouts, "probe failed")
        case "ignore":
          // Back to half-open: the next caller may probe.
          return Effect.succeed([noTransition, { ...s, probeInFlight: false }])
      }
    }

    // Outside the state lock: a slow journal append must not hold up admission of other callers.
    const emit = (t: Option.Option<BreakerTransition>) =>
      Option.match(t, { onNone: () => Effect.void, onSome: onTransition })

    const admitLocked: Effect.Effect<Ticket, BreakerOpen> = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const admission = yield* SynchronizedRef.modify(state, (s) => admitPure(s, now))
      if (admission._tag === "Refused") {
        return yield* new BreakerOpen({ host, until: admission.until, probeInFlight: admission.probeInFlight })
      }
      yield* emit(admission.transition)
      return admission.ticket
    })

    const settleLocked = (ticket: Ticket, outcome: Outcome) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const transition = yield* SynchronizedRef.modifyEffect(state, (s) => settlePure(s, now, ticket, outcome))
        yield* emit(transition)
      })

    /** settlePure would leave `s` as it is (the common success on a closed breaker): no lock needed. */
    const settlesToNothing = (s: State, ticket: Ticket, outcome: Outcome) =>
      ticket.epoch !== s.epoch ||
      (s._tag === "Closed" &&
        (ticket.probe || outcome === "failure" || outcome === "ignore" || (outcome === "success" && s.timeouts === 0)))

    const settle = (ticket: Ticket, outcome: Outcome) =>
      Effect.flatMap(
        SynchronizedRef.get(state),
        (s) => settlesToNothing(s, ticket, outcome) ? Effect.void : settleLocked(ticket, outcome)
      )

    /** Runs `effect`; whatever its end, the ticket is settled with the outcome `classify` gives it. */
    const settledAfter = <A, E, R>(effect: Effect.Effect<A, E, R>, ticket: Ticket, classify: (exit: Exit.Exit<A, E>) => Outcome) =>
      Effect.onExit(effect, (exit) => Effect.flatMap(outcomeOf(host, exit, classify), (outcome) => settle(ticket, outcome)))

    const guarded = <A, E, R>(
      effect: Effect.Effect<A, E, R>,
      classify: (exit: Exit.Exit<A, E>) => Outcome
    ): Effect.Effect<A, E | BreakerOpen, R> =>
      // Uninterruptible between admission and settlement so an admitted ticket (above all a
      // probe) is always settled; only `effect` itself can be interrupted.
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(admitLocked, (ticket) => settledAfter(restore(effect), ticket, classify))
      )

    const guard = <A, E, R>(
      effect: Effect.Effect<A, E, R>,
      classify: (exit: Exit.Exit<A, E>) => Outcome
    ): Effect.Effect<A, E | BreakerOpen, R> =>
      // A closed breaker's ticket changes nothing when it is taken, so an interruption before its
      // settlement is registered loses nothing: the common case needs no uninterruptible region.
      Effect.flatMap(SynchronizedRef.get(state), (s) => {
        if (s._tag !== "Closed") return guarded(effect, classify)
        return settledAfter(effect, { epoch: s.epoch, probe: false }, classify)
      })

    const snapshotOf = (s: State, now: number): BreakerSnapshot => {
      if (s._tag === "Closed") {
        return { status: "closed", consecutiveTimeouts: s.timeouts, openedAt: null, reopensAt: null, probeInFlight: false }
      }
      const halfOpen = s.probeInFlight || now >= s.reopensAt
      return {
        status: halfOpen ? "half-open" : "open",
        consecutiveTimeouts: s.timeouts,
        openedAt: s.openedAt,
        reopensAt: halfOpen ? null : s.reopensAt,
        probeInFlight: s.probeInFlight
      }
    }

    // Read on every request (plan()'s view of the host): two steps, no generator.
    const snapshot: Effect.Effect<BreakerSnapshot> = Effect.clockWith((clock) =>
      Effect.map(SynchronizedRef.get(state), (s) => snapshotOf(s, clock.unsafeCurrentTimeMillis()))
    )

    const reset: Effect.Effect<void> = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      yield* emit(yield* SynchronizedRef.modify(state, (s) => close(s, now)))
    })

    const epoch = Effect.map(SynchronizedRef.get(state), (s) => s.epoch)

    const adopt: BreakerCore["adopt"] = (opened) =>
      SynchronizedRef.update(state, (s): State =>
        s._tag !== "Closed" ? s : {
          _tag: "Open",
          epoch: s.epoch + 1,
          timeouts: opened.consecutiveTimeouts,
          openedAt: opened.openedAt,
          reopensAt: opened.reopensAt,
          probeInFlight: false,
          cooldownMillis: Math.max(0, opened.reopensAt - opened.openedAt),
          cooldownState: cooldowns.initial
        })

    const adoptProbe: BreakerCore["adoptProbe"] = SynchronizedRef.modify(state, (s): readonly [Ticket | null, State] =>
      s._tag === "Open" && !s.probeInFlight ? [{ epoch: s.epoch, probe: true }, { ...s, probeInFlight: true }] : [null, s])

    const adoptTimeouts: BreakerCore["adoptTimeouts"] = (consecutiveTimeouts) =>
      SynchronizedRef.update(state, (s): State =>
        s._tag === "Closed" ? { ...s, timeouts: Math.min(threshold - 1, Math.max(0, consecutiveTimeouts)) } : s)

    return { host, snapshot, guard, reset, admit: admitLocked, settle, epoch, adopt, adoptProbe, adoptTimeouts } satisfies BreakerCore
  })
