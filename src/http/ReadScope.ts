/**
 * Which project a read-API request (runs, traces, cost, cancelling a run) may see: a caller's own
 * (its key's project; anonymous's for a keyless request), every project for the admin token and in
 * open mode (no `callers:`). Another project's run answers 404, as if it did not exist.
 */
import { HttpServerRequest } from "@effect/platform"
import { Effect, Option } from "effect"
import { readScope } from "../domain/CallerContext.ts"
import { Unauthorized } from "../domain/Errors.ts"
import { Gateway } from "../routing/Gateway.ts"

/** null: every project; a string: that project only. */
export const requestScope: Effect.Effect<string | null, Unauthorized, HttpServerRequest.HttpServerRequest> = Effect.gen(function*() {
  const gateway = yield* Effect.serviceOption(Gateway)
  const identify = Option.isNone(gateway) ? undefined : gateway.value.laneRules.identify
  if (identify === undefined) return null
  const request = yield* HttpServerRequest.HttpServerRequest
  const scope = readScope(identify(request.headers))
  return scope instanceof Unauthorized ? yield* scope : scope
})

/** Whether a record of `projectId` is visible in `scope`. */
export const visibleIn = (scope: string | null, projectId: string | null | undefined) => scope === null || projectId === scope
