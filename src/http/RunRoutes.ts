/**
 * The read API over the journal's projections:
 *
 *   GET /awooop/runs/:id            one run (run_state; a run not projected yet is folded from the journal)
 *   GET /awooop/traces/:traceId     the trace's events in order, and its runs
 *   GET /awooop/cost?from=&to=&groupBy=project|lane|provider   cost_ledger totals (days inclusive, UTC)
 *
 * Bad parameters get 400 `{"error": "..."}` naming the parameter. The routes need the ReadModel
 * service; a process built without it (a test of the Ollama surface alone) answers 503 here
 * instead of failing to build, so adding these routes puts no new requirement on the server.
 * They are the `runs` group of domain/Api.ts, served by ApiServer.ts.
 */
import { HttpServerRequest } from "@effect/platform"
import { Clock, Effect, Option } from "effect"
import type { CostReport, GatewayResponseError, RunStatus, TraceView } from "../domain/Api.ts"
import type { Unauthorized } from "../domain/Errors.ts"
import { type GroupBy, groupColumns } from "../projections/CostLedger.ts"
import { ReadModel } from "../projections/ReadModel.ts"
import { runStreamOf } from "../replay/Explain.ts"
import { asyncRunView } from "./AsyncRunRoutes.ts"
import { refusal } from "./ErrorResponse.ts"
import { requestScope, visibleIn } from "./ReadScope.ts"

/** Runs `f` with the ReadModel; database failures become 503 (the read side is down, not the request). */
const withReadModel = <A>(f: (model: ReadModel) => Effect.Effect<A, unknown>): Effect.Effect<A, GatewayResponseError> =>
  Effect.flatMap(Effect.serviceOption(ReadModel), (model) =>
    Option.isNone(model)
      ? Effect.fail(refusal(503, "the run and cost API is not available in this process (no journal database)"))
      : f(model.value).pipe(
        Effect.mapError((e) => refusal(503, `the journal database did not answer: ${e instanceof Error ? e.message : String(e)}`))
      ))

const traceIdPattern = /^[A-Za-z0-9._:-]{1,128}$/

/** GET /awooop/runs/:id */
export const getRun = (id: string): Effect.Effect<RunStatus, GatewayResponseError | Unauthorized, HttpServerRequest.HttpServerRequest> =>
  Effect.gen(function*() {
    const scope = yield* requestScope
    const stream = runStreamOf(id)
    if (stream === null) return yield* refusal(400, `run id must be a UUID (or run-<uuid>), got ${JSON.stringify(id)}`)
    // An async run (issue 5) answers with its queue status, attempts and result.
    const asyncRun = yield* asyncRunView(id, scope)
    if (Option.isSome(asyncRun)) return asyncRun.value
    const run = yield* withReadModel((model) => model.run(stream))
    if (run === null || !visibleIn(scope, run.projectId)) return yield* refusal(404, `run ${id} not found in the journal`)
    return run
  })

/** GET /awooop/traces/:traceId */
export const getTrace = (traceId: string): Effect.Effect<TraceView, GatewayResponseError | Unauthorized, HttpServerRequest.HttpServerRequest> =>
  Effect.gen(function*() {
    if (!traceIdPattern.test(traceId)) {
      return yield* refusal(400, `trace id must be 1-128 letters, digits, '.', '_', ':' or '-', got ${JSON.stringify(traceId)}`)
    }
    const scope = yield* requestScope
    const trace = yield* withReadModel((model) => model.trace(traceId))
    // A caller sees its own project's part of a trace, and nothing at all of another's.
    const seen = trace === null ? null : scope === null ? trace : {
      ...trace,
      runs: trace.runs.filter((r) => visibleIn(scope, r.projectId)),
      events: trace.events.filter((e) => visibleIn(scope, e.projectId))
    }
    if (seen === null || seen.events.length === 0) return yield* refusal(404, `trace ${traceId} not found in the journal`)
    return seen
  })

// ---------------------------------------------------------------------------------------------
// /awooop/cost parameters
// ---------------------------------------------------------------------------------------------

export interface CostQuery {
  readonly from: string
  readonly to: string
  readonly groupBy: ReadonlyArray<GroupBy>
}

/** Days covered when `from` is not given: the last 30, `to` included. */
export const defaultDays = 30

const dayPattern = /^\d{4}-\d{2}-\d{2}$/
/** Bounds of a cost query: no ledger is older, and no question needs more (absurd values → 400). */
const earliestDay = "2000-01-01"
const maxDays = 3660

/** "2026-05-05" or an ISO timestamp → its UTC day; null when it is not a date. */
const parseDay = (text: string): string | null => {
  const ms = dayPattern.test(text) ? Date.parse(`${text}T00:00:00Z`) : /^\d{4}-\d{2}-\d{2}T/.test(text) ? Date.parse(text) : NaN
  if (!Number.isFinite(ms)) return null
  const day = new Date(ms).toISOString().slice(0, 10)
  // Date.parse rolls 2026-02-30 over to March; such a day does not exist.
  return dayPattern.test(text) && day !== text ? null : day
}

const single = (params: Readonly<Record<string, string | ReadonlyArray<string> | undefined>>, name: string): string | undefined | null => {
  const v = params[name]
  if (v === undefined) return undefined
  return typeof v === "string" ? v : v.length === 1 ? v[0]! : null
}

/** Validates the query string; a string is the 400 message. */
export const parseCostQuery = (
  params: Readonly<Record<string, string | ReadonlyArray<string> | undefined>>,
  now: number
): CostQuery | string => {
  const known = new Set(["from", "to", "groupBy"])
  const unknown = Object.keys(params).filter((k) => !known.has(k))
  if (unknown.length > 0) return `unknown parameter ${JSON.stringify(unknown[0])} (known: from, to, groupBy)`
  const raw = { from: single(params, "from"), to: single(params, "to"), groupBy: single(params, "groupBy") }
  for (const [name, value] of Object.entries(raw)) if (value === null) return `parameter ${name} given more than once`
  const to = raw.to === undefined ? new Date(now).toISOString().slice(0, 10) : parseDay(raw.to!)
  if (to === null) return `to must be a date (YYYY-MM-DD or an ISO timestamp), got ${JSON.stringify(raw.to)}`
  const from = raw.from === undefined
    ? new Date(Date.parse(`${to}T00:00:00Z`) - (defaultDays - 1) * 86_400_000).toISOString().slice(0, 10)
    : parseDay(raw.from!)
  if (from === null) return `from must be a date (YYYY-MM-DD or an ISO timestamp), got ${JSON.stringify(raw.from)}`
  if (from > to) return `from (${from}) is after to (${to})`
  if (from < earliestDay) return `from must be ${earliestDay} or later, got ${JSON.stringify(raw.from)}`
  if ((Date.parse(`${to}T00:00:00Z`) - Date.parse(`${from}T00:00:00Z`)) / 86_400_000 >= maxDays) {
    return `from ${from} to ${to} spans more than ${maxDays} days; ask for a shorter range`
  }
  const names = raw.groupBy === undefined ? ["project"] : raw.groupBy!.split(",").map((s) => s.trim())
  const allowed = Object.keys(groupColumns)
  for (const name of names) {
    if (!allowed.includes(name)) return `groupBy must be project, lane or provider (or model, day, caller; comma-separated), got ${JSON.stringify(name)}`
  }
  if (new Set(names).size !== names.length) return `groupBy names ${JSON.stringify(raw.groupBy)} a dimension twice`
  return { from, to, groupBy: names as Array<GroupBy> }
}

/** GET /awooop/cost: validates the query string as it arrived (every parameter, named in the 400). */
export const getCost: Effect.Effect<
  CostReport,
  GatewayResponseError | Unauthorized,
  HttpServerRequest.HttpServerRequest | HttpServerRequest.ParsedSearchParams
> = Effect.gen(function*() {
  const params = yield* HttpServerRequest.ParsedSearchParams
  const query = parseCostQuery(params, yield* Clock.currentTimeMillis)
  if (typeof query === "string") return yield* refusal(400, query)
  const scope = yield* requestScope
  return yield* withReadModel((model) =>
    Effect.map(model.cost({ ...query, projectId: scope ?? undefined }), (cost) => scope === null ? cost : { ...cost, projectId: scope }))
})
