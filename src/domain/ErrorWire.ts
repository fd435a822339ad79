/**
 * The gateway's errors on the wire for typed callers. The body stays Ollama's `{"error": "..."}`
 * (the `ollama` client and every legacy caller read exactly that); the structured error travels
 * beside it in the `X-AwoooP-Error` response header: the tagged error encoded by its own schema, as
 * base64url JSON (header values must be ASCII; messages may quote anything). The typed client
 * (src/client/) decodes it back into the same class from src/domain/Errors.ts.
 */
import { Either, Encoding, Option, Schema } from "effect"
import {
  AllAttemptsTimedOut,
  AllHostsUnavailable,
  AsyncOnlyLane,
  BadRequest,
  BodyTooLarge,
  BudgetDenied,
  BudgetUnavailable,
  CallerForbidden,
  type GatewayError,
  InFlightBytesExceeded,
  LaneSaturated,
  ModelDenied,
  ModelNotFound,
  NotManaged,
  PaidProvidersFailed,
  RouteNotFound,
  JournalUnavailable,
  RunStoreUnavailable,
  ShuttingDown,
  Unauthorized,
  UnknownLane,
  UpstreamRejected
} from "./Errors.ts"

export const errorHeaderName = "x-awooop-error"

/** Every error a caller can see, decodable from its tagged encoding. */
export const GatewayErrorSchema = Schema.Union(
  BadRequest,
  UnknownLane,
  ModelDenied,
  ModelNotFound,
  AsyncOnlyLane,
  NotManaged,
  RouteNotFound,
  BodyTooLarge,
  LaneSaturated,
  AllHostsUnavailable,
  AllAttemptsTimedOut,
  UpstreamRejected,
  ShuttingDown,
  BudgetDenied,
  BudgetUnavailable,
  PaidProvidersFailed,
  Unauthorized,
  CallerForbidden,
  InFlightBytesExceeded,
  RunStoreUnavailable,
  JournalUnavailable
)

// A new member of GatewayError that is missing above (or the reverse) fails to compile here: add
// the new error class to the Union so typed callers can decode it.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false
const inSync: Same<typeof GatewayErrorSchema.Type, GatewayError> = true
void inSync

const encode = Schema.encodeEither(GatewayErrorSchema)
const decode = Schema.decodeUnknownEither(Schema.parseJson(GatewayErrorSchema))

/** The header value for an error (undefined if it cannot be encoded, which would be a bug). */
export const errorHeaderValue = (error: GatewayError): string | undefined => {
  const encoded = encode(error)
  return Either.isRight(encoded) ? Encoding.encodeBase64Url(JSON.stringify(encoded.right)) : undefined
}

/** The error a header value names, if it is one. */
export const decodeErrorHeader = (value: string): Option.Option<GatewayError> =>
  Either.match(Encoding.decodeBase64UrlString(value), {
    onLeft: () => Option.none(),
    onRight: (json) => Either.getRight(decode(json))
  })
