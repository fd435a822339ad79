/**
 * GET /awooop/shadow/report?lane=&since= — how often the gateway's shadow decisions agreed with the
 * legacy path, per lane, and the disagreements counted by reason (operations/Shadow.ts).
 *
 *   lane   optional: one lane (default: every lane with decisions)
 *   since  an ISO time, or a duration back from now ("30m", "24h"); default 24h
 *
 * Declared in domain/OperatorApi.ts (`operations.shadowReport`), served by ApiServer.ts.
 */
import { HttpServerRequest } from "@effect/platform"
import { Clock, Effect } from "effect"
import { parseDurationMs } from "../config/Duration.ts"
import { ShadowMode } from "../operations/Shadow.ts"
import { refusal } from "./ErrorResponse.ts"

const lanePattern = /^[A-Za-z0-9._:-]{1,64}$/
const defaultSinceMs = 24 * 3_600_000
/** No journal is older than this: an earlier `since` is a mistake, not a question. */
const earliestMs = Date.UTC(2000, 0, 1)

type Params = Readonly<Record<string, string | ReadonlyArray<string> | undefined>>

/** The report's parameters, or the 400 message. */
export const parseReportQuery = (params: Params, now: number): { readonly lane: string | null; readonly since: number } | string => {
  const unknown = Object.keys(params).filter((k) => k !== "lane" && k !== "since")
  if (unknown.length > 0) return `unknown parameter ${JSON.stringify(unknown[0])} (known: lane, since)`
  const one = (name: string): string | undefined | null => {
    const v = params[name]
    return v === undefined ? undefined : typeof v === "string" ? v : v.length === 1 ? v[0]! : null
  }
  const lane = one("lane")
  const since = one("since")
  if (lane === null || since === null) return "each parameter may be given once"
  if (lane !== undefined && !lanePattern.test(lane)) return `lane must be a lane name, got ${JSON.stringify(lane)}`
  let sinceMs = now - defaultSinceMs
  if (since !== undefined) {
    const back = parseDurationMs(since)
    const at = /^\d{4}-\d{2}-\d{2}/.test(since) ? Date.parse(since) : NaN
    if (back !== undefined) sinceMs = now - back
    else if (Number.isFinite(at)) sinceMs = at
    else return `since must be an ISO time or a duration such as "24h", got ${JSON.stringify(since)}`
  }
  // A duration of a million hours, or the year 1: nothing to report, and no date the database takes.
  // A little of the future is a caller's clock skew (an empty report); years of it are a mistake.
  if (!Number.isFinite(sinceMs) || sinceMs < earliestMs || sinceMs > now + 86_400_000) {
    return `since must lie between ${new Date(earliestMs).toISOString()} and a day from now, got ${JSON.stringify(since)}`
  }
  return { lane: lane ?? null, since: sinceMs }
}

/** Validates the query string as it arrived (every parameter, named in the 400). */
export const report = Effect.gen(function*() {
  const shadow = yield* ShadowMode
  const params = yield* HttpServerRequest.ParsedSearchParams
  const query = parseReportQuery(params, yield* Clock.currentTimeMillis)
  if (typeof query === "string") return yield* refusal(400, query)
  return yield* Effect.mapError(shadow.report(query), (e) => refusal(503, `the journal database did not answer: ${e.message}`))
})
