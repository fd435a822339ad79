/**
 * Every error a caller can see. Each names the lane, host or rule that refused the request, and
 * declares its HTTP status once, as the class's HttpApi annotation: the edge renders it with that
 * status in the caller's protocol (http/ErrorResponse.ts), and the HttpApi (Api.ts) and its typed
 * client read the same annotation.
 */
import { HttpApiSchema } from "@effect/platform"
import { Schema } from "effect"

/** The class's HTTP status, as HttpApiSchema.annotations({ status }) writes it. */
const status = (code: number) => ({ [HttpApiSchema.AnnotationStatus]: code })

/** The status an error class declares (its `status` annotation). */
const statusOf = (error: object): number => {
  const ast = (error.constructor as unknown as Schema.Schema.Any).ast
  return (ast.annotations[HttpApiSchema.AnnotationStatus] as number | undefined) ?? HttpApiSchema.getStatusErrorAST(ast)
}

export class BadRequest extends Schema.TaggedError<BadRequest>()("BadRequest", {
  message: Schema.String
}, status(400)) {
  get status() { return statusOf(this) }
}

export class UnknownLane extends Schema.TaggedError<UnknownLane>()("UnknownLane", {
  lane: Schema.String,
  known: Schema.Array(Schema.String)
}, status(400)) {
  get status() { return statusOf(this) }
  override get message() {
    return `unknown lane ${JSON.stringify(this.lane)} in X-AwoooP-Lane (lanes: ${this.known.join(", ")})`
  }
}

export class ModelDenied extends Schema.TaggedError<ModelDenied>()("ModelDenied", {
  lane: Schema.String,
  model: Schema.String,
  rule: Schema.String,
  hosts: Schema.Array(Schema.String)
}, status(403)) {
  get status() { return statusOf(this) }
  override get message() {
    return `lane ${this.lane}: model ${this.model} denied on ${this.hosts.join(", ")} by rule ${this.rule}`
  }
}

export class ModelNotFound extends Schema.TaggedError<ModelNotFound>()("ModelNotFound", {
  lane: Schema.String,
  model: Schema.String,
  hosts: Schema.Array(Schema.String)
}, status(404)) {
  get status() { return statusOf(this) }
  override get message() {
    return `model '${this.model}' not found on lane ${this.lane}'s hosts (${this.hosts.join(", ")})`
  }
}

export class AsyncOnlyLane extends Schema.TaggedError<AsyncOnlyLane>()("AsyncOnlyLane", {
  lane: Schema.String
}, status(409)) {
  get status() { return statusOf(this) }
  override get message() {
    return `lane ${this.lane} is async-only: synchronous requests are refused; submit an async run`
  }
}

export class NotManaged extends Schema.TaggedError<NotManaged>()("NotManaged", {
  route: Schema.String
}, status(403)) {
  get status() { return statusOf(this) }
  override get message() {
    return `${this.route} is not served: the AwoooP gateway does not manage models; pull, push, create, copy and delete on the hosts themselves`
  }
}

export class RouteNotFound extends Schema.TaggedError<RouteNotFound>()("RouteNotFound", {
  method: Schema.String,
  path: Schema.String
}, status(404)) {
  get status() { return statusOf(this) }
  override get message() { return `no route for ${this.method} ${this.path}` }
}

export class BodyTooLarge extends Schema.TaggedError<BodyTooLarge>()("BodyTooLarge", {
  limit: Schema.Number
}, status(413)) {
  get status() { return statusOf(this) }
  override get message() { return `request body larger than ${this.limit} bytes` }
}

export class LaneSaturated extends Schema.TaggedError<LaneSaturated>()("LaneSaturated", {
  lane: Schema.String,
  reason: Schema.String,
  retryAfterSeconds: Schema.Number
}, status(503)) {
  get status() { return statusOf(this) }
  override get message() { return `lane ${this.lane} saturated: ${this.reason}` }
}

export class AllHostsUnavailable extends Schema.TaggedError<AllHostsUnavailable>()("AllHostsUnavailable", {
  lane: Schema.String,
  reasons: Schema.Array(Schema.String),
  retryAfterSeconds: Schema.Number
}, status(503)) {
  get status() { return statusOf(this) }
  override get message() { return `lane ${this.lane}: no host could serve the request: ${this.reasons.join("; ")}` }
}

export class AllAttemptsTimedOut extends Schema.TaggedError<AllAttemptsTimedOut>()("AllAttemptsTimedOut", {
  lane: Schema.String,
  reasons: Schema.Array(Schema.String)
}, status(504)) {
  get status() { return statusOf(this) }
  override get message() { return `lane ${this.lane}: every attempt timed out: ${this.reasons.join("; ")}` }
}

/**
 * A 4xx the host itself gave (e.g. bad options): the request is at fault, so it is passed on, not
 * failed over, with the host's status (Api.ts lists the ones a client may see).
 */
export class UpstreamRejected extends Schema.TaggedError<UpstreamRejected>()("UpstreamRejected", {
  host: Schema.String,
  upstreamStatus: Schema.Number,
  upstreamError: Schema.String
}) {
  get status() { return this.upstreamStatus }
  override get message() { return `host ${this.host}: ${this.upstreamError}` }
}

export class ShuttingDown extends Schema.TaggedError<ShuttingDown>()("ShuttingDown", {}, status(503)) {
  get status() { return statusOf(this) }
  override get message() { return "the gateway is shutting down; retry on another replica" }
}

/** A paid call refused by the budget: the operator's hard kill is tripped, or the period's cap would be exceeded. */
export class BudgetDenied extends Schema.TaggedError<BudgetDenied>()("BudgetDenied", {
  lane: Schema.String,
  /** Why the budget said no (names the hard kill and the figures). */
  reason: Schema.String,
  /** Why a paid call was wanted at all (e.g. "all Ollama endpoints failed: …"). */
  fallbackReason: Schema.String
}, status(503)) {
  get status() { return statusOf(this) }
  override get message() { return `lane ${this.lane}: paid call refused by the budget hard kill: ${this.reason} (${this.fallbackReason})` }
}

/** The budget ledger could not be read or written: no money is spent without it (fail closed). */
export class BudgetUnavailable extends Schema.TaggedError<BudgetUnavailable>()("BudgetUnavailable", {
  lane: Schema.String,
  fallbackReason: Schema.String
}, status(503)) {
  get status() { return statusOf(this) }
  override get message() {
    return `lane ${this.lane}: paid call refused: the budget ledger is unreachable, so the budget hard kill cannot be checked (fail closed) (${this.fallbackReason})`
  }
}

/** Every paid provider tried failed (after the Ollama steps, for a fallback). */
export class PaidProvidersFailed extends Schema.TaggedError<PaidProvidersFailed>()("PaidProvidersFailed", {
  lane: Schema.String,
  reasons: Schema.Array(Schema.String)
}, status(503)) {
  get status() { return statusOf(this) }
  override get message() { return `lane ${this.lane}: no paid provider could serve the request: ${this.reasons.join("; ")}` }
}

/** An admin route called without the operator's bearer token (or with a wrong one). */
export class Unauthorized extends Schema.TaggedError<Unauthorized>()("Unauthorized", {
  reason: Schema.String
}, status(401)) {
  get status() { return statusOf(this) }
  override get message() { return `unauthorized: ${this.reason}` }
}

/** Unfinished request bodies already hold the bytes the gateway allows (server.maxInFlightBodyBytes…). */
export class InFlightBytesExceeded extends Schema.TaggedError<InFlightBytesExceeded>()("InFlightBytesExceeded", {
  /** "server.maxInFlightBodyBytes" or "server.maxInFlightBodyBytesPerClient" */
  limit: Schema.String,
  bytes: Schema.Number
}, status(503)) {
  get status() { return statusOf(this) }
  get retryAfterSeconds() { return 1 }
  override get message() {
    return `the gateway is receiving too many request bodies at once (${this.limit} = ${this.bytes} bytes); retry shortly`
  }
}

/** A known caller asked for something its entry in `callers:` does not allow (a lane, another project). */
export class CallerForbidden extends Schema.TaggedError<CallerForbidden>()("CallerForbidden", {
  caller: Schema.String,
  reason: Schema.String
}, status(403)) {
  get status() { return statusOf(this) }
  override get message() { return `caller ${this.caller} ${this.reason}` }
}

/** An async run could not be stored durably, so it is not accepted (nothing would survive a restart). */
export class RunStoreUnavailable extends Schema.TaggedError<RunStoreUnavailable>()("RunStoreUnavailable", {
  lane: Schema.String,
  reason: Schema.String
}, status(503)) {
  get status() { return statusOf(this) }
  override get message() { return `lane ${this.lane}: the async run was not accepted: the run store is unavailable (${this.reason})` }
}

/** Neither Postgres nor the journal's local spill takes writes: a run could not be recorded, so none starts. */
export class JournalUnavailable extends Schema.TaggedError<JournalUnavailable>()("JournalUnavailable", {
  lane: Schema.String
}, status(503)) {
  get status() { return statusOf(this) }
  override get message() {
    return `lane ${this.lane}: the request was not run: the step journal is unavailable (neither PostgreSQL nor the local spill takes writes); retry shortly`
  }
}

export type GatewayError =
  | JournalUnavailable
  | RunStoreUnavailable
  | BadRequest
  | UnknownLane
  | ModelDenied
  | ModelNotFound
  | AsyncOnlyLane
  | NotManaged
  | RouteNotFound
  | BodyTooLarge
  | LaneSaturated
  | AllHostsUnavailable
  | AllAttemptsTimedOut
  | UpstreamRejected
  | ShuttingDown
  | BudgetDenied
  | BudgetUnavailable
  | PaidProvidersFailed
  | Unauthorized
  | CallerForbidden
  | InFlightBytesExceeded

export const retryAfterOf = (error: GatewayError): number | undefined =>
  error._tag === "LaneSaturated" || error._tag === "AllHostsUnavailable" || error._tag === "InFlightBytesExceeded" ? error.retryAfterSeconds : undefined
