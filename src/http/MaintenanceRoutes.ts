/**
 * The operator's maintenance windows (bearer token, see AdminAuth.ts):
 *
 *   POST /awooop/admin/hosts/:host/maintenance  {"open": true, "reason": "...", "until": "<ISO time>"}
 *        opens a window on the host: a protected host then serves heavy models too, until `until`,
 *        when the window closes by itself. {"open": false, "reason": "..."} closes it now.
 *
 * Opening and closing are journaled on the host's stream (MaintenanceOpened / MaintenanceClosed,
 * with the reason, and whether the window expired). 401 without or with a wrong token, 404 for an
 * unknown host, 400 for a bad body (a window must end in the future, within 30 days).
 */
import { HttpRouter } from "@effect/platform"
import { Clock, Effect, Schema } from "effect"
import { BadRequest, type GatewayError } from "../domain/Errors.ts"
import { Gateway } from "../routing/Gateway.ts"
import { requireAdmin, unauthorizedHeaders } from "./AdminAuth.ts"
import { errorResponse, jsonResponse } from "./ErrorResponse.ts"
import { decodeBody, readJson } from "./RequestBody.ts"

const MaintenanceRequest = Schema.Struct({
  open: Schema.Boolean,
  reason: Schema.optional(Schema.String.pipe(Schema.maxLength(1000))),
  until: Schema.optional(Schema.String.pipe(Schema.maxLength(64)))
})

/** The longest window an operator may open in one go. */
export const maxWindowMs = 30 * 86_400_000

const isoPattern = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/

/** The window's end, or the 400 message. */
export const parseUntil = (text: string | undefined, now: number): number | string => {
  if (text === undefined) return "until is required when opening maintenance (an ISO time such as 2026-05-05T18:00:00Z)"
  const ms = isoPattern.test(text) ? Date.parse(text) : NaN
  if (!Number.isFinite(ms)) return `until must be an ISO time with a zone (e.g. 2026-05-05T18:00:00Z), got ${JSON.stringify(text)}`
  if (ms <= now) return `until (${new Date(ms).toISOString()}) is not in the future`
  if (ms - now > maxWindowMs) return `until (${new Date(ms).toISOString()}) is more than 30 days ahead`
  return ms
}

const refuse = (error: GatewayError) =>
  Effect.succeed(errorResponse(error, error._tag === "Unauthorized" ? unauthorizedHeaders : {}))

const setMaintenance = Effect.gen(function*() {
  const gateway = yield* Gateway
  yield* requireAdmin
  const { host: name } = yield* HttpRouter.params
  const host = name === undefined ? undefined : gateway.hosts.get(name)
  if (host === undefined) {
    return jsonResponse({ error: `unknown host ${JSON.stringify(name ?? "")} (hosts: ${[...gateway.hosts.keys()].join(", ")})` }, {}, 404)
  }
  const body = yield* decodeBody(MaintenanceRequest, yield* readJson(64 * 1024))
  const reason = body.reason?.trim() ?? ""
  if (body.open) {
    if (reason === "") return yield* new BadRequest({ message: "reason is required when opening maintenance" })
    const until = parseUntil(body.until, yield* Clock.currentTimeMillis)
    if (typeof until === "string") return yield* new BadRequest({ message: until })
    yield* host.openMaintenance(reason, until)
  } else {
    const closed = yield* host.closeMaintenance(reason === "" ? "closed by the operator" : reason)
    if (!closed) {
      const m = yield* host.maintenance
      return jsonResponse({ host: host.name, changed: false, maintenance: { open: m.open, reason: m.reason, until: null } })
    }
  }
  const m = yield* host.maintenance
  return jsonResponse({
    host: host.name,
    changed: true,
    maintenance: { open: m.open, reason: m.reason, until: m.until === null ? null : new Date(m.until).toISOString() }
  })
}).pipe(Effect.catchAll(refuse))

export const maintenanceRoutes = HttpRouter.empty.pipe(
  HttpRouter.post("/awooop/admin/hosts/:host/maintenance", setMaintenance)
)
