/**
 * The routes domain/Api.ts declares, served by HttpApiBuilder from that declaration (`ServedApi`:
 * the API the typed client is derived from, less the endpoints the node:http edge serves). Paths,
 * methods, success statuses, response bodies and content types come from the declaration, so the
 * server and the client cannot disagree on them; each handler calls the service its route file
 * names (OllamaRoutes.ts, RunRoutes.ts, AsyncRunRoutes.ts, HealthRoutes.ts, MetricsRoute.ts,
 * ShadowRoutes.ts, BudgetAdminRoutes.ts, MaintenanceRoutes.ts, LaneModeRoutes.ts).
 *
 * What stays as it was on the wire, by choice:
 * - Refusals keep Ollama's `{"error": "..."}` and the X-AwoooP-Error header (ErrorResponse.ts
 *   `refusalResponse`, an API-level middleware), not the builder's encoding of the error class; the
 *   status is still the one the error class declares.
 * - Request bodies (runs, show, admin) are read by the handlers themselves (`handleRaw`): the
 *   gateway's body limits, in-flight budget and Ollama-style messages (RequestBody.ts). Query
 *   strings and caller headers are declared leniently and validated by the handlers, for the same
 *   reason: the 400s name the parameter as before.
 */
import { HttpApiBuilder, HttpApiError } from "@effect/platform"
import { Effect, Layer } from "effect"
import { ServedApi } from "../domain/Api.ts"
import { budgetStatus, hardKill } from "./BudgetAdminRoutes.ts"
import { internalErrorMessage, jsonResponse, ollamaError, refusalResponse } from "./ErrorResponse.ts"
import { healthView } from "./HealthRoutes.ts"
import { resetLaneMode, setLaneMode } from "./LaneModeRoutes.ts"
import { setMaintenance } from "./MaintenanceRoutes.ts"
import { metrics } from "./MetricsRoute.ts"
import { ps, show, tags, version } from "./OllamaRoutes.ts"
import { cancel, submit } from "./AsyncRunRoutes.ts"
import { getCost, getRun, getTrace } from "./RunRoutes.ts"
import { report } from "./ShadowRoutes.ts"

const OllamaLive = HttpApiBuilder.group(ServedApi, "ollama", (handlers) =>
  handlers
    .handle("tags", () => tags)
    .handle("ps", () => ps)
    .handle("version", () => version)
    .handleRaw("show", () => show))

const RunsLive = HttpApiBuilder.group(ServedApi, "runs", (handlers) =>
  handlers
    .handleRaw("submit", () => submit)
    .handle("status", ({ path }) => getRun(path.id))
    .handle("cancel", ({ path }) => cancel(path.id))
    .handle("trace", ({ path }) => getTrace(path.traceId))
    .handle("cost", () => getCost))

const OperationsLive = HttpApiBuilder.group(ServedApi, "operations", (handlers) =>
  handlers
    .handle("health", () => healthView)
    .handle("metrics", () => metrics)
    .handle("shadowReport", () => report))

const AdminLive = HttpApiBuilder.group(ServedApi, "admin", (handlers) =>
  handlers
    .handle("budget", () => budgetStatus)
    .handleRaw("hardKill", () => hardKill)
    .handleRaw("maintenance", ({ path }) => setMaintenance(path.host))
    .handleRaw("setLaneMode", ({ path }) => setLaneMode(path.lane))
    .handleRaw("resetLaneMode", ({ path }) => resetLaneMode(path.lane)))

/**
 * A served endpoint decodes nothing that can fail (bodies are read by the handlers; path, query and
 * headers are declared as the strings they arrive as), so the builder's decode error here means
 * an answer that does not fit its own declaration: the server's bug, not the caller's 400.
 */
const answerMismatch = (error: HttpApiError.HttpApiDecodeError) =>
  Effect.logError("an answer does not fit its HttpApi declaration", error.message).pipe(
    Effect.as(jsonResponse(ollamaError(internalErrorMessage, 500), {}, 500))
  )

/** Every refusal in the gateway's own shape (see above); anything else fails on (a route not found here goes to the router). */
const Refusals = HttpApiBuilder.middleware(ServedApi, (app) =>
  Effect.catchAll(app, (error: unknown) => {
    if (error instanceof HttpApiError.HttpApiDecodeError) return answerMismatch(error)
    const response = refusalResponse(error)
    return response === undefined ? Effect.fail(error as never) : Effect.succeed(response)
  }))

const ApiLive = HttpApiBuilder.api(ServedApi).pipe(
  Layer.provide([OllamaLive, RunsLive, OperationsLive, AdminLive]),
  Layer.provideMerge(Refusals),
  Layer.provideMerge(HttpApiBuilder.Router.Live),
  Layer.provideMerge(HttpApiBuilder.Middleware.layer)
)

/**
 * The served API as an HttpApp, its handlers bound to the services of the calling scope. A request
 * for a path it does not declare fails with the platform's RouteNotFound (Server.ts then asks the router).
 */
export const apiApp = Effect.gen(function*() {
  const context = yield* Layer.build(ApiLive)
  return yield* Effect.provide(HttpApiBuilder.httpApp, context)
})
