/**
 * Async runs over HTTP (operations/async/AsyncRuns.ts):
 *
 *   POST   /awooop/runs       submit a run: an Ollama generate or chat body, plus `"operation":
 *                             "generate" | "chat"` (default: chat when the body has `messages`);
 *                             the lane comes from the AwoooP headers as for /api/*. → 202 with the
 *                             run id and its status URL (`Location`).
 *   GET    /awooop/runs/:id   (served by RunRoutes.ts, which asks `asyncRunView` first) status
 *                             queued | running | succeeded | failed | cancelled, attempts, and the
 *                             Ollama-shaped result once succeeded.
 *   DELETE /awooop/runs/:id   cancel: 200 with the cancelled run, 404 unknown, 409 already finished.
 *
 * Any lane with a route can take runs this way; a lane in shadow mode refuses them (409), since its
 * requests are only decided, never executed. Part of the `runs` group of domain/Api.ts, served by
 * ApiServer.ts.
 */
import { HttpApp, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Effect, Option } from "effect"
import type { GatewayResponseError } from "../domain/Api.ts"
import { HeaderNames, resolveCallerContext } from "../domain/CallerContext.ts"
import { BadRequest, type Unauthorized } from "../domain/Errors.ts"
import { ChatRequest, GenerateRequest } from "../domain/OllamaApi.ts"
import type { AsyncRunView } from "../operations/async/AsyncRunState.ts"
import { type AsyncRequest, AsyncRuns } from "../operations/async/AsyncRuns.ts"
import { Gateway } from "../routing/Gateway.ts"
import { refusal } from "./ErrorResponse.ts"
import { requestScope, visibleIn } from "./ReadScope.ts"
import { decodeBody, readJson } from "./RequestBody.ts"

const storeDown = (e: unknown) => refusal(503, `the run store did not answer: ${e instanceof Error ? e.message : String(e)}`)

const uuidPattern = /^(?:run-)?([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/i

/** The run id of a path parameter ("<uuid>" or "run-<uuid>"), or null. */
export const runIdOf = (id: string | undefined): string | null => {
  const m = uuidPattern.exec((id ?? "").trim())
  return m === null ? null : m[1]!.toLowerCase()
}

/**
 * GET /awooop/runs/:id for an async run; none when the id is not an async run (the projection's run
 * view answers then). Needs no service beyond what the server already has.
 */
export const asyncRunView = (id: string | undefined, scope: string | null = null): Effect.Effect<Option.Option<AsyncRunView>, GatewayResponseError> =>
  Effect.gen(function*() {
    const runId = runIdOf(id)
    const asyncRuns = yield* Effect.serviceOption(AsyncRuns)
    if (runId === null || Option.isNone(asyncRuns)) return Option.none()
    const view = yield* Effect.mapError(asyncRuns.value.view(runId), storeDown)
    if (view === null) return Option.none()
    return visibleIn(scope, view.projectId) ? Option.some(view) : yield* refusal(404, `run ${runId} not found`)
  })

/** POST /awooop/runs: the body is read here (the gateway's limits and messages), not by the builder. */
export const submit = Effect.gen(function*() {
  const gateway = yield* Gateway
  const asyncRuns = yield* AsyncRuns
  const request = yield* HttpServerRequest.HttpServerRequest
  return yield* Effect.gen(function*() {
    const raw = yield* readJson(gateway.config.server.maxBodyBytes)
    const operation = raw.operation ?? (Array.isArray(raw.messages) ? "chat" : "generate")
    if (operation !== "generate" && operation !== "chat") {
      return yield* new BadRequest({ message: `operation must be "generate" or "chat", got ${JSON.stringify(operation)}` })
    }
    const decoded: AsyncRequest = operation === "chat"
      ? { operation, body: yield* decodeBody(ChatRequest, raw) }
      : { operation, body: yield* decodeBody(GenerateRequest, raw) }
    const caller = resolveCallerContext(request.headers, decoded.body.model, gateway.laneRules)
    if (!("traceId" in caller)) return yield* Effect.fail(caller)
    const lane = gateway.lanes.get(caller.lane)!
    const mode = lane.mode.current()
    if (mode.mode === "shadow") {
      const how = mode.source === "operator"
        ? `an operator switched it (${mode.operator?.reason ?? ""}); PUT /awooop/admin/lanes/${lane.name}/mode {"mode": "active"} runs them`
        : "set mode: active in the config, or PUT /awooop/admin/lanes/<lane>/mode, to run them"
      return yield* refusal(409, `lane ${lane.name} is in shadow mode: its requests are decided and journaled, never executed (${how})`)
    }
    const prompt = decoded.operation === "chat" ? { messages: decoded.body.messages } : { system: decoded.body.system ?? null, prompt: decoded.body.prompt ?? null }
    const run = yield* asyncRuns.submit({ lane, request: decoded, caller, prompt, via: "api" })
    // The 202 and its body are the declaration's (Api.ts); where to poll travels in the headers.
    yield* HttpApp.appendPreResponseHandler((_, response) =>
      Effect.succeed(HttpServerResponse.setHeaders(response, { location: run.statusUrl, [HeaderNames.runId]: run.runId, [HeaderNames.traceId]: run.traceId })))
    return run
  })
})

/** DELETE /awooop/runs/:id */
export const cancel = (id: string): Effect.Effect<AsyncRunView, GatewayResponseError | Unauthorized, AsyncRuns | HttpServerRequest.HttpServerRequest> =>
  Effect.gen(function*() {
    const asyncRuns = yield* AsyncRuns
    const runId = runIdOf(id)
    if (runId === null) return yield* refusal(400, `run id must be a UUID (or run-<uuid>), got ${JSON.stringify(id)}`)
    // Only a run of the caller's own project can be cancelled; another's is "not found".
    const scope = yield* requestScope
    if (scope !== null) {
      // Fail closed: a run whose project cannot be read now is not cancelled for a scoped caller.
      const view = yield* asyncRuns.view(runId).pipe(Effect.option)
      if (Option.isNone(view) || view.value === null || !visibleIn(scope, view.value.projectId)) return yield* refusal(404, `async run ${runId} not found`)
    }
    const outcome = yield* Effect.mapError(asyncRuns.cancel(runId), storeDown)
    switch (outcome._tag) {
      case "NotFound": return yield* refusal(404, `async run ${runId} not found`)
      case "AlreadyFinished": return yield* refusal(409, `run ${runId} already ${outcome.view.status}: nothing to cancel`)
      case "Cancelled": return outcome.view
    }
  })
