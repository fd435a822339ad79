/**
 * How late the gateway's own event loop is. A step timeout is a timer on this loop: when the loop
 * is blocked (a huge body being parsed, a GC pause, a busy machine), the timer fires late and an
 * answer already waiting in the socket is read after it — a timeout the host did not cause.
 *
 * A sampler timer runs every SAMPLE_MS and adds how late it ran to a running total (`stalledMs`,
 * which also counts a delay still in progress, so a reading taken from a late timer includes it).
 * The lane reads the total before and after an attempt: the difference is the attempt's lag,
 * journaled on AttemptFailed / AttemptSucceeded (`eventLoopLagMs`). `monitorEventLoopDelay` gives
 * the delay distribution for /metrics. Wall-clock by nature (performance.now), not Clock: no
 * TestClock can stall an event loop.
 */
import { Effect } from "effect"
import { monitorEventLoopDelay, performance } from "node:perf_hooks"

const SAMPLE_MS = 20
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
 * A timeout counts against the host only when the gateway's own lag during the attempt was less
 * than half the step's timeout: with at least half of it lost to the loop, the host had less than
 * half the time it was promised, and its answer may already have been waiting unread.
 */
export const stalledByGateway = (lagMs: number, timeoutMs: number): boolean => lagMs >= timeoutMs / 2

export class EventLoopLag extends Effect.Service<EventLoopLag>()("awooop/EventLoopLag", {
  scoped: Effect.gen(function*() {
    let stalled = 0
    let last = performance.now()
    const histogram = monitorEventLoopDelay({ resolution: 10 })
    histogram.enable()
    let windowStart = last
    let previous = { p50: 0, p99: 0, max: 0 }
    const tick = () => {
      const now = performance.now()
      const late = now - last - SAMPLE_MS
      if (late > 0) stalled += late
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

    /** Milliseconds the loop has been late since start, a delay in progress included. */
    const stalledMs = (): number => stalled + Math.max(0, performance.now() - last - SAMPLE_MS)

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
    return { stalledMs, snapshot } as const
  })
}) {}
