/**
 * The operator's lane modes (bearer token, see AdminAuth.ts): the runbook's per-lane activation and
 * its rollback, one call each, without a restart or a deploy.
 *
 *   PUT    /awooop/admin/lanes/:lane/mode  {"mode": "shadow" | "active", "reason": "..."}
 *          pins the lane to that mode: in shadow its requests (every protocol) are answered 202 with
 *          the routing decision and journaled, nothing is executed; active runs them again.
 *   DELETE /awooop/admin/lanes/:lane/mode  (optional body {"reason": "..."}, or `?reason=...`)
 *          removes the pin: the config's `mode` applies again.
 *
 * The pin is stored in Postgres and seen by every replica (routing/LaneMode.ts, operations/LaneModes.ts);
 * each change is journaled on the lane's stream ("lane-<name>", LaneModeChanged with the mode, the
 * previous one, the reason and who). Setting the mode a lane is pinned to already, or removing a pin
 * that is not there, changes nothing (`"changed": false`, nothing journaled). Requests already running
 * finish as they started (and so do async runs already accepted); the next request sees the new mode.
 * Every lane may be switched, `paid` and `async` ones too: a paid lane in shadow names the provider it
 * would call and calls none (no budget is spent), an async lane in shadow answers its inference
 * requests with decisions and refuses POST /awooop/runs (409).
 *
 * Refusals, Ollama-shaped (`{"error": "..."}`): 401 without or with a wrong token, 404 for a lane
 * not in the config, 400 for a mode other than "active"/"shadow" or a PUT without a reason; 503 when
 * Postgres does not answer (nothing changed, on any replica), with `Retry-After: 5`.
 * Declared in domain/OperatorApi.ts (`admin.setLaneMode`, `admin.resetLaneMode`), served by ApiServer.ts.
 */
import { HttpServerRequest } from "@effect/platform"
import { NodeHttpServerRequest } from "@effect/platform-node"
import { Effect, Schema } from "effect"
import { BadRequest } from "../domain/Errors.ts"
import { type LaneModeAnswer, LaneModeRequest, LaneModeReset } from "../domain/OperatorApi.ts"
import { Gateway } from "../routing/Gateway.ts"
import type { LaneActor } from "../routing/Lane.ts"
import type { ModeChange, ModeStoreUnavailable } from "../routing/LaneMode.ts"
import { adminOnly } from "./AdminAuth.ts"
import { jsonResponse, refusal } from "./ErrorResponse.ts"
import { laneModeView } from "./HealthRoutes.ts"
import { decodeBody, parseJsonObject, readBody } from "./RequestBody.ts"

/** The declared body, but `mode` as anything: the handler names a missing or unknown mode itself. */
const ModeRequest = Schema.Struct({ ...LaneModeRequest.fields, mode: Schema.optional(Schema.Unknown) })

/** Who made a change, as journaled. */
const by = "admin API"

const maxBodyBytes = 64 * 1024

/** The body's JSON object; an empty body is `{}` (DELETE needs none). */
const readOptionalJson = Effect.gen(function*() {
  const request = yield* HttpServerRequest.HttpServerRequest
  const bytes = yield* readBody(NodeHttpServerRequest.toIncomingMessage(request), maxBodyBytes, {
    res: NodeHttpServerRequest.toServerResponse(request)
  })
  return bytes.length === 0 ? {} : yield* parseJsonObject(bytes)
})

/** 503: the change was not stored, so it was made nowhere (the lane keeps its mode on every replica). */
const storeDown = (error: ModeStoreUnavailable) =>
  Effect.succeed(jsonResponse({ error: `${error.message}; the lane's mode is unchanged, try again` }, { "retry-after": "5" }, 503))

/** The lane the path names, or the 404. */
const laneOf = (name: string) =>
  Effect.flatMap(Gateway, (gateway) => {
    const lane = gateway.lanes.get(name)
    return lane !== undefined
      ? Effect.succeed(lane)
      : Effect.fail(refusal(404, `unknown lane ${JSON.stringify(name)} (lanes: ${[...gateway.lanes.keys()].join(", ")})`))
  })

const answer = (lane: LaneActor, change: ModeChange): LaneModeAnswer => ({
  lane: lane.name,
  changed: change.changed,
  mode: change.state.mode,
  previous: change.previous,
  configMode: lane.config.mode,
  ...laneModeView(change.state)
})

/** PUT /awooop/admin/lanes/:lane/mode: the body is read here (64 KiB), not by the builder. */
export const setLaneMode = (name: string) => adminOnly(Effect.gen(function*() {
  const lane = yield* laneOf(name)
  const body = yield* decodeBody(ModeRequest, yield* readOptionalJson)
  if (body.mode !== "active" && body.mode !== "shadow") {
    return yield* new BadRequest({
      message: body.mode === undefined
        ? `mode is required: "shadow" (decide and journal, execute nothing) or "active" (run the lane's requests)`
        : `mode must be "active" or "shadow", got ${JSON.stringify(body.mode)}`
    })
  }
  const reason = body.reason?.trim() ?? ""
  if (reason === "") return yield* new BadRequest({ message: `reason is required when switching lane ${lane.name} to ${body.mode}` })
  return answer(lane, yield* lane.mode.set(body.mode, reason, by))
}).pipe(Effect.catchTag("ModeStoreUnavailable", storeDown)))

/** DELETE /awooop/admin/lanes/:lane/mode: an optional body, or `?reason=...`. */
export const resetLaneMode = (name: string) => adminOnly(Effect.gen(function*() {
  const lane = yield* laneOf(name)
  const body = yield* decodeBody(LaneModeReset, yield* readOptionalJson)
  // The reason from the body, or the query string (a DELETE without a body: `?reason=...`).
  const query = new URL((yield* HttpServerRequest.HttpServerRequest).url, "http://gateway").searchParams.get("reason")?.slice(0, 1000)
  const reason = body.reason?.trim() || query?.trim() || `back to the config's mode (${lane.config.mode})`
  return answer(lane, yield* lane.mode.reset(reason, by))
}).pipe(Effect.catchTag("ModeStoreUnavailable", storeDown)))
