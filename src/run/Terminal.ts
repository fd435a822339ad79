/** How a step's or a run's exit is classified: for the host's breaker, and for the run's last event. */
import { Cause, Exit, Option } from "effect"
import type { GatewayError } from "../domain/Errors.ts"
import type { Outcome } from "../routing/Breaker.ts"
import type { UpstreamFailure } from "../upstream/OllamaUpstream.ts"

/** What an upstream call's exit means to the host's breaker (a missing model or a 4xx is not the host's fault). */
export const classify = (exit: Exit.Exit<unknown, UpstreamFailure>): Outcome => {
  if (Exit.isSuccess(exit)) return "success"
  const failure = Option.getOrUndefined(Exit.causeOption(exit).pipe(Option.flatMap((c) => c._tag === "Fail" ? Option.some(c.error) : Option.none())))
  if (failure === undefined) return "ignore"
  switch (failure.kind) {
    case "timeout": return "timeout"
    case "not-found":
    case "rejected": return "ignore"
    default: return "failure"
  }
}

export const failureOf = (cause: Cause.Cause<GatewayError>): Option.Option<GatewayError> => Cause.failureOption(cause)

/** The RunFailed of a run that exits without having ended. */
export const endOf = (exit: Exit.Exit<unknown, GatewayError>) => {
  const cause = Exit.isFailure(exit) ? exit.cause : Cause.empty
  const failure = Option.getOrUndefined(failureOf(cause))
  if (failure !== undefined) return { status: failure.status, error: failure._tag, message: failure.message }
  if (Cause.isInterruptedOnly(cause)) return { status: 499, error: "ClientAborted", message: "the caller went away" }
  return { status: 500, error: "InternalError", message: `the run failed inside the gateway: ${String(Cause.squash(cause)).slice(0, 300)}` }
}
