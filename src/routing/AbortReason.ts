/**
 * Why a relayed answer was cut short from the caller's side. The default is the caller going away;
 * a caller that took no chunk within the step's timeout (a slow consumer, http/InferenceRoutes.ts)
 * is cut off by the gateway, which sets this before interrupting, so the relay's finalizer — running
 * in the same fiber — journals that instead. Either way the caller is at fault, never the host: no
 * breaker hears of it.
 */
import { FiberRef } from "effect"

export interface AbortReason {
  readonly status: number
  readonly error: string
  readonly message: string
}

export const callerWentAway: AbortReason = { status: 499, error: "ClientAborted", message: "the caller went away mid-stream" }

export const abortReason = FiberRef.unsafeMake<AbortReason>(callerWentAway)

export const slowConsumer = (timeoutMs: number): AbortReason => ({
  status: 408,
  error: "SlowConsumer",
  message: `the caller took no chunk within ${timeoutMs / 1000}s (the step's timeout): cut off, its slot freed`
})
