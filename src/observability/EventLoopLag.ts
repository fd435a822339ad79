/**
 * How late the gateway's own event loop is. A step timeout is a timer on this loop: when the loop
 * is blocked (a huge body being parsed, a GC pause, a busy machine), the timer fires late and an
 * answer already waiting in the socket is read after it — a timeout the host did not cause.
 *
 * A sampler timer runs every SAMPLE_MS and adds how late it ran to a running total (`stalledMs`,
 * which also counts a delay still in progress, so a reading taken from a late timer includes it),
 * and remembers each single stall longer than STALL_MS. The lane marks an attempt's start: the total
 * since is the attempt's lag (`eventLoopLagMs` on AttemptFailed / AttemptSucceeded), the longest
 * single stall within it (`eventLoopStallMs`) decides whether a timeout was ours (`stalledByGateway`).
 * Many small delays (a busy machine) add up in the total but are no stall. `monitorEventLoopDelay`
 * gives the delay distribution for /metrics. Wall-clock by nature (performance.now), not Clock: no
 * TestClock can stall an event loop.
 */
import { Effect } from "effect"
import { monitorEventLoopDelay, performance } from "node:perf_hooks"

const SAMPLE_MS = 20
/** A tick later than this is remembered as one stall (the block of a parse, a GC pause). */
const STALL_MS = 50
const KEPT_STALLS = 256
/** The histogram behind the quantiles covers about this long (it is reset when a window ends). */
const WINDOW_MS = 60_000

export interface LagSnapshot {
  /** Delay quantiles of the current window (or the last one, just after a reset), in seconds. */
  readonly p50Seconds: number
  readonly p99Seconds: number
  readonly maxSeconds: number
  /** Total time the loop has been late since start, in seconds. */
  readonly stalledSeconds: number
}

/**
 * A timeout counts against the host unless the gateway's loop was blocked, in one stretch, for half
 * the step's timeout or more during the attempt: then the host had less than half the time it was
 * promised, and its answer may already have been waiting unread when the late timer fired.
 */
export const stalledByGateway = (longestStallMs: number, timeoutMs: number): boolean => longestStallMs >= timeoutMs / 2

/** Where an attempt started, for `since`. */
export interface LagMark {
  readonly at: number
  readonly stalled: number
}

/** What the lane and the health poller read of the lag: a mark at a start, and what happened since. */
export interface LagReader {
  readonly mark: () => LagMark
  readonly since: (from: LagMark) => { readonly lagMs: number; readonly longestStallMs: number }
}

export class EventLoopLag extends Effect.Service<EventLoopLag>()("awooop/EventLoopLag", {
  scoped: Effect.gen(function*() {
    let stalled = 0
    let last = performance.now()
    const histogram = monitorEventLoopDelay({ resolution: 10 })
    histogram.enable()
    let windowStart = last
    let previous = { p50: 0, p99: 0, max: 0 }
    const stalls: Array<{ readonly end: number; readonly ms: number }> = []
    const tick = () => {
      const now = performance.now()
      const late = now - last - SAMPLE_MS
      if (late > 0) stalled += late
      if (late > STALL_MS) {
        stalls.push({ end: now, ms: late })
        if (stalls.length > KEPT_STALLS) stalls.shift()
      }
      last = now
      if (now - windowStart >= WINDOW_MS) {
        previous = { p50: histogram.percentile(50), p99: histogram.percentile(99), max: histogram.max }
        histogram.reset()
        windowStart = now
      }
    }
    const timer = setInterval(tick, SAMPLE_MS)
    timer.unref()
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        clearInterval(timer)
        histogram.disable()
      })
    )

    const pending = (now: number) => Math.max(0, now - last - SAMPLE_MS)
    /** Milliseconds the loop has been late since start, a delay in progress included. */
    const stalledMs = (): number => stalled + pending(performance.now())

    const mark = (): LagMark => ({ at: performance.now(), stalled: stalledMs() })

    /** Since `from`: the total lateness, and the longest single stall (clipped to the span), in whole ms. */
    const since = (from: LagMark): { readonly lagMs: number; readonly longestStallMs: number } => {
      const now = performance.now()
      let longest = Math.min(pending(now), now - from.at)
      for (let i = stalls.length - 1; i >= 0 && stalls[i]!.end > from.at; i--) {
        longest = Math.max(longest, Math.min(stalls[i]!.ms, stalls[i]!.end - from.at))
      }
      return { lagMs: Math.round(stalledMs() - from.stalled), longestStallMs: Math.round(longest) }
    }

    const snapshot = (): LagSnapshot => {
      const fresh = histogram.count > 0
      const ns = (v: number) => (Number.isFinite(v) ? v / 1e9 : 0)
      return {
        p50Seconds: ns(fresh ? histogram.percentile(50) : previous.p50),
        p99Seconds: ns(fresh ? histogram.percentile(99) : previous.p99),
        maxSeconds: ns(fresh ? histogram.max : previous.max),
        stalledSeconds: stalledMs() / 1000
      }
    }
    return { mark, since, snapshot } as const
  })
}) {}
