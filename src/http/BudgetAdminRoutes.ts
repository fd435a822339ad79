/**
 * The operator's budget controls (bearer token, see AdminAuth.ts):
 *   POST /awooop/admin/budget/hard-kill  {"tripped": true|false, "reason": "..."}  trips or resets the
 *        hard kill: journaled on the "budget" stream, kept in PostgreSQL, so it survives restarts and
 *        a rollback of the provider URLs.
 *   GET  /awooop/admin/budget            the hard kill, the period's cap, settled and reserved spend.
 */
import { HttpRouter } from "@effect/platform"
import { Effect, Schema } from "effect"
import { BadRequest, type GatewayError } from "../domain/Errors.ts"
import { Gateway } from "../routing/Gateway.ts"
import { requireAdmin, unauthorizedHeaders } from "./AdminAuth.ts"
import { errorResponse, jsonResponse } from "./ErrorResponse.ts"
import { decodeBody, readJson } from "./RequestBody.ts"

const HardKillRequest = Schema.Struct({
  tripped: Schema.Boolean,
  reason: Schema.optional(Schema.String.pipe(Schema.maxLength(1000)))
})

const ledgerDown = (message: string) =>
  jsonResponse({ error: `the budget ledger is unreachable: ${message}` }, {}, 503)

const refuse = (error: GatewayError) =>
  Effect.succeed(errorResponse(error, error._tag === "Unauthorized" ? unauthorizedHeaders : {}))

const hardKill = Effect.gen(function*() {
  const gateway = yield* Gateway
  yield* requireAdmin
  const raw = yield* readJson(64 * 1024)
  const body = yield* decodeBody(HardKillRequest, raw)
  if (body.tripped && (body.reason ?? "").trim() === "") {
    return yield* new BadRequest({ message: "reason is required when tripping the hard kill" })
  }
  return yield* gateway.paid.budget.setHardKill(body.tripped, body.reason ?? null, "admin API").pipe(
    Effect.flatMap(() => gateway.paid.budget.status),
    Effect.map((status) => jsonResponse(status)),
    Effect.catchTag("LedgerError", (e) => Effect.succeed(ledgerDown(e.message)))
  )
}).pipe(Effect.catchAll(refuse))

const status = Effect.gen(function*() {
  const gateway = yield* Gateway
  yield* requireAdmin
  return yield* gateway.paid.budget.status.pipe(
    Effect.map((s) => jsonResponse(s)),
    Effect.catchTag("LedgerError", (e) => Effect.succeed(ledgerDown(e.message)))
  )
}).pipe(Effect.catchAll(refuse))

export const budgetAdminRoutes = HttpRouter.empty.pipe(
  HttpRouter.post("/awooop/admin/budget/hard-kill", hardKill),
  HttpRouter.get("/awooop/admin/budget", status)
)
