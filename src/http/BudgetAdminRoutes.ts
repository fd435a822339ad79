/**
 * The operator's budget controls (bearer token, see AdminAuth.ts):
 *   POST /awooop/admin/budget/hard-kill  {"tripped": true|false, "reason": "..."}  trips or resets the
 *        hard kill: journaled on the "budget" stream, kept in PostgreSQL, so it survives restarts and
 *        a rollback of the provider URLs.
 *   GET  /awooop/admin/budget            the hard kill, the period's cap, settled and reserved spend.
 *
 * Declared in domain/OperatorApi.ts (group `admin`), served by ApiServer.ts.
 */
import { Effect } from "effect"
import { BadRequest } from "../domain/Errors.ts"
import { HardKillRequest } from "../domain/OperatorApi.ts"
import { Gateway } from "../routing/Gateway.ts"
import { adminOnly } from "./AdminAuth.ts"
import { refusal } from "./ErrorResponse.ts"
import { decodeBody, readJson } from "./RequestBody.ts"

const ledgerDown = (e: { readonly message: string }) => refusal(503, `the budget ledger is unreachable: ${e.message}`)

/** POST /awooop/admin/budget/hard-kill: the body is read here (64 KiB), not by the builder. */
export const hardKill = adminOnly(Effect.gen(function*() {
  const gateway = yield* Gateway
  const raw = yield* readJson(64 * 1024)
  const body = yield* decodeBody(HardKillRequest, raw)
  if (body.tripped && (body.reason ?? "").trim() === "") {
    return yield* new BadRequest({ message: "reason is required when tripping the hard kill" })
  }
  return yield* gateway.paid.budget.setHardKill(body.tripped, body.reason ?? null, "admin API").pipe(
    Effect.zipRight(gateway.paid.budget.status),
    Effect.mapError(ledgerDown)
  )
}))

/** GET /awooop/admin/budget */
export const budgetStatus = adminOnly(Effect.flatMap(Gateway, (gateway) => Effect.mapError(gateway.paid.budget.status, ledgerDown)))
