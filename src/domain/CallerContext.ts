/**
 * Who is calling and on which lane: the AwoooP headers, or the legacy bootstrap rules (ADR-111)
 * for callers that send none.
 */
import { BadRequest, CallerForbidden, Unauthorized, UnknownLane } from "./Errors.ts"
import { sameModel } from "./OllamaApi.ts"

export const HeaderNames = {
  projectId: "x-awooop-project-id",
  traceId: "x-awooop-trace-id",
  lane: "x-awooop-lane",
  intent: "x-awooop-intent",
  traceparent: "traceparent",
  runId: "x-awooop-run-id"
} as const

export interface CallerContext {
  readonly projectId: string
  readonly traceId: string
  /** The caller's W3C parent span id, when it sent a valid traceparent. */
  readonly parentSpanId: string | null
  readonly lane: string
  readonly intent: string | null
  /** True when the lane came from the legacy bootstrap rules rather than a header. */
  readonly legacy: boolean
  /** True when the gateway minted the trace id. */
  readonly traceMinted: boolean
  /** The authenticated caller's name ("anonymous" for a keyless one); absent in open mode. Never the key. */
  readonly caller?: string | null
  /** May this request spend money on paid providers (absent: yes, open mode). */
  readonly mayPay?: boolean
}

/**
 * Who sent a request, from its `Authorization: Bearer <key>` (routing/Callers.ts decides it; keys
 * are compared by digest, in constant time).
 */
export type Identity =
  /** No `callers:` in the config: everyone may do anything, as before. */
  | { readonly _tag: "Open" }
  /** The operator's AWOOOP_ADMIN_TOKEN: reads every project; not a caller of the inference routes. */
  | { readonly _tag: "Admin" }
  | {
    readonly _tag: "Caller" | "Anonymous"
    /** The caller's name; "anonymous" for a keyless request. */
    readonly name: string
    readonly project: string
    readonly lanes: ReadonlyArray<string>
    readonly mayPay: boolean
  }
  /** A bearer key no caller has. */
  | { readonly _tag: "UnknownKey" }

/** The project a read API request may see: null = every project (open mode, admin), or a refusal. */
export const readScope = (identity: Identity): string | null | Unauthorized => {
  switch (identity._tag) {
    case "Open":
    case "Admin": return null
    case "Caller":
    case "Anonymous": return identity.project
    case "UnknownKey": return new Unauthorized({ reason: "unknown API key" })
  }
}

/** Open mode adds nothing to the context (as before callers existed). */
const callerFields = (access: { readonly caller: string | null; readonly mayPay: boolean }) =>
  access.caller === null ? {} : { caller: access.caller, mayPay: access.mayPay }

/** The lane and project an identity may use; the caller fields of its context. */
const authorize = (
  identity: Identity,
  lane: string,
  projectHeader: string | undefined
): { readonly projectId: string | undefined; readonly caller: string | null; readonly mayPay: boolean } | CallerForbidden | Unauthorized => {
  switch (identity._tag) {
    case "Open": return { projectId: projectHeader, caller: null, mayPay: true }
    case "Admin": return new Unauthorized({ reason: "the admin token is for the admin and read routes; send a caller's key (callers: in the config)" })
    case "UnknownKey": return new Unauthorized({ reason: "unknown API key" })
    case "Anonymous":
    case "Caller": {
      if (!identity.lanes.includes(lane)) {
        return identity._tag === "Anonymous"
          ? new Unauthorized({ reason: `lane ${lane} needs an API key (Authorization: Bearer <key>); without one these lanes may be used: ${identity.lanes.join(", ") || "none"}` })
          : new CallerForbidden({ caller: identity.name, reason: `may not use lane ${lane} (its lanes: ${identity.lanes.join(", ") || "none"})` })
      }
      if (projectHeader !== undefined && projectHeader !== identity.project) {
        return new CallerForbidden({ caller: identity.name, reason: `belongs to project ${identity.project}, not ${projectHeader} (X-AwoooP-Project-ID)` })
      }
      return { projectId: identity.project, caller: identity.name, mayPay: identity.mayPay }
    }
  }
}

const traceIdPattern = /^[0-9a-f]{32}$/
const spanIdPattern = /^[0-9a-f]{16}$/
const tokenPattern = /^[A-Za-z0-9._:-]{1,64}$/
const zeroTrace = "0".repeat(32)

/** W3C traceparent: `00-<trace>-<parent>-<flags>`. An invalid header is ignored, as the spec says. */
export const parseTraceparent = (value: string | undefined): { traceId: string; parentSpanId: string } | null => {
  if (!value) return null
  const parts = value.trim().split("-")
  if (parts.length < 4) return null
  const [version, traceId, parentSpanId, flags] = parts as [string, string, string, string]
  if (!/^[0-9a-f]{2}$/.test(version) || version === "ff" || (version === "00" && parts.length !== 4)) return null
  if (!traceIdPattern.test(traceId) || traceId === zeroTrace) return null
  if (!spanIdPattern.test(parentSpanId) || parentSpanId === "0".repeat(16)) return null
  if (!/^[0-9a-f]{2}$/.test(flags)) return null
  return { traceId, parentSpanId }
}

/** 32 lowercase hex digits; randomUUID draws from Node's cached entropy pool, so this is cheap per request. */
export const mintTraceId = (): string => crypto.randomUUID().replace(/-/g, "")

type HeaderBag = Readonly<Record<string, string | undefined>>

const open: Identity = { _tag: "Open" }

const single = (headers: HeaderBag, name: string): string | undefined => {
  const value = headers[name]
  return value === undefined ? undefined : value.trim()
}

export interface LaneRules {
  readonly lanes: ReadonlyArray<string>
  readonly legacyProjectId: string
  readonly legacyLanes: Readonly<Record<string, string>>
  /** Who sent the request (absent: open mode, everyone may use every lane). */
  readonly identify?: (headers: HeaderBag) => Identity
}

/**
 * Resolves the caller context. `model` is the model the body asked for (legacy callers are put on a
 * lane by it). Returns a BadRequest/UnknownLane naming the header at fault.
 */
export const resolveCallerContext = (
  headers: HeaderBag,
  model: string | undefined,
  rules: LaneRules
): CallerContext | BadRequest | UnknownLane | Unauthorized | CallerForbidden => {
  const laneHeader = single(headers, HeaderNames.lane)
  const projectHeader = single(headers, HeaderNames.projectId)
  const intentHeader = single(headers, HeaderNames.intent)

  if (projectHeader !== undefined && !tokenPattern.test(projectHeader)) {
    return new BadRequest({ message: `malformed X-AwoooP-Project-ID ${JSON.stringify(projectHeader.slice(0, 80))}: expected 1-64 of A-Z a-z 0-9 . _ : -` })
  }
  if (intentHeader !== undefined && !tokenPattern.test(intentHeader)) {
    return new BadRequest({ message: `malformed X-AwoooP-Intent ${JSON.stringify(intentHeader.slice(0, 80))}: expected 1-64 of A-Z a-z 0-9 . _ : -` })
  }
  const traceHeader = single(headers, HeaderNames.traceId)
  let traceId: string | undefined
  let parentSpanId: string | null = null
  if (traceHeader !== undefined) {
    if (!traceIdPattern.test(traceHeader) || traceHeader === zeroTrace) {
      return new BadRequest({ message: `malformed X-AwoooP-Trace-ID ${JSON.stringify(traceHeader.slice(0, 80))}: expected 32 lowercase hex digits, not all zero` })
    }
    traceId = traceHeader
  }
  const traceparent = parseTraceparent(single(headers, HeaderNames.traceparent))
  if (traceparent) {
    // A caller sending both should send the same trace; the explicit AwoooP header wins.
    traceId ??= traceparent.traceId
    if (traceId === traceparent.traceId) parentSpanId = traceparent.parentSpanId
  }
  const traceMinted = traceId === undefined
  traceId ??= mintTraceId()

  const identity = rules.identify?.(headers) ?? open
  const lane = laneOf(laneHeader, model, rules)
  if (typeof lane !== "string") return lane
  const access = authorize(identity, lane, projectHeader)
  if (!("mayPay" in access)) return access
  return {
    ...callerFields(access),
    projectId: access.projectId ?? rules.legacyProjectId,
    traceId,
    parentSpanId,
    lane,
    intent: intentHeader ?? null,
    legacy: laneHeader === undefined,
    traceMinted
  }
}

/**
 * The legacy rules' lane for a model: its own entry, else the one Ollama would name the same. Own keys
 * only: a model named "valueOf" or "constructor" is no lane (it once found Object.prototype's: a 500).
 */
const legacyLaneOf = (lanes: Readonly<Record<string, string>>, model: string): string | undefined =>
  Object.hasOwn(lanes, model) ? lanes[model] : Object.entries(lanes).find(([m]) => sameModel(m, model))?.[1]

/** X-AwoooP-Lane; without it (a legacy caller) the bootstrap rules pick the lane from the model. */
const laneOf = (laneHeader: string | undefined, model: string | undefined, rules: LaneRules): string | BadRequest | UnknownLane => {
  if (laneHeader !== undefined) {
    return rules.lanes.includes(laneHeader) ? laneHeader : new UnknownLane({ lane: laneHeader.slice(0, 80), known: [...rules.lanes] })
  }
  const lane = model === undefined ? undefined : legacyLaneOf(rules.legacyLanes, model)
  if (lane !== undefined) return lane
  return new BadRequest({
    message: model === undefined
      ? "model is required"
      : `no lane for model ${JSON.stringify(model)}: send X-AwoooP-Lane (lanes: ${rules.lanes.join(", ")})`
  })
}
