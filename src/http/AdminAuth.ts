/**
 * The operator's bearer token for admin routes: `Authorization: Bearer <AWOOOP_ADMIN_TOKEN>`.
 * Without the environment variable every admin call is refused; the comparison is constant-time,
 * and the token is never echoed.
 */
import { HttpServerRequest } from "@effect/platform"
import { Config, Effect, Option, Redacted } from "effect"
import { createHash, timingSafeEqual } from "node:crypto"
import { Unauthorized } from "../domain/Errors.ts"
import { errorResponse } from "./ErrorResponse.ts"

const digest = (s: string) => createHash("sha256").update(s).digest()

export const requireAdmin: Effect.Effect<void, Unauthorized, HttpServerRequest.HttpServerRequest> = Effect.gen(function*() {
  const request = yield* HttpServerRequest.HttpServerRequest
  const expected = yield* Config.option(Config.redacted("AWOOOP_ADMIN_TOKEN")).pipe(
    Effect.map(Option.filter((t) => Redacted.value(t) !== "")),
    Effect.orElseSucceed(() => Option.none<Redacted.Redacted<string>>())
  )
  if (Option.isNone(expected)) {
    return yield* new Unauthorized({ reason: "admin routes are disabled: AWOOOP_ADMIN_TOKEN is not set on the gateway" })
  }
  const header = request.headers["authorization"] ?? ""
  const match = /^Bearer\s+(.+)$/i.exec(header.trim())
  if (match === null) return yield* new Unauthorized({ reason: "missing bearer token (Authorization: Bearer <AWOOOP_ADMIN_TOKEN>)" })
  // Hashing first makes both sides the same length, so timingSafeEqual applies to any input.
  if (!timingSafeEqual(digest(match[1]!), digest(Redacted.value(expected.value)))) {
    return yield* new Unauthorized({ reason: "wrong bearer token" })
  }
})

/** 401 answers carry the challenge. */
export const unauthorizedHeaders = { "www-authenticate": 'Bearer realm="awooop-admin"' } as const

/**
 * An admin route: the token first, then `self`. A refusal of the token is answered here, with the
 * challenge; `self`'s own refusals go on to the API's renderer (ErrorResponse.ts `refusalResponse`).
 */
export const adminOnly = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.zipRight(requireAdmin, self).pipe(
    Effect.catchIf(
      (e): e is Unauthorized => e instanceof Unauthorized,
      (e) => Effect.succeed(errorResponse(e, unauthorizedHeaders))
    )
  )
