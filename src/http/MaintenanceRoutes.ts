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
 * Declared in domain/OperatorApi.ts (`admin.maintenance`), served by ApiServer.ts.
 */
import { Clock, Effect } from "effect"
import { BadRequest } from "../domain/Errors.ts"
import { type MaintenanceAnswer, MaintenanceRequest } from "../domain/OperatorApi.ts"
import { Gateway } from "../routing/Gateway.ts"
import { adminOnly } from "./AdminAuth.ts"
import { refusal } from "./ErrorResponse.ts"
import { decodeBody, readJson } from "./RequestBody.ts"

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

/** POST /awooop/admin/hosts/:host/maintenance: the body is read here (64 KiB), not by the builder. */
export const setMaintenance = (name: string) => adminOnly(Effect.gen(function*() {
  const gateway = yield* Gateway
  const host = gateway.hosts.get(name)
  if (host === undefined) {
    return yield* refusal(404, `unknown host ${JSON.stringify(name)} (hosts: ${[...gateway.hosts.keys()].join(", ")})`)
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
      return { host: host.name, changed: false, maintenance: { open: m.open, reason: m.reason, until: null } } satisfies MaintenanceAnswer
    }
  }
  const m = yield* host.maintenance
  return {
    host: host.name,
    changed: true,
    maintenance: { open: m.open, reason: m.reason, until: m.until === null ? null : new Date(m.until).toISOString() }
  } satisfies MaintenanceAnswer
}))
