/**
 * The gateway's HTTP API as `HttpApi` definitions, shared by the server and the typed client
 * (src/client/). Requests use the very schemas the server decodes with (OllamaApi.ts), so changing
 * one changes the client's types: a caller that no longer fits fails to compile. Responses are
 * described here as callers receive them (the Ollama shapes plus the gateway's `awooop_*` fields).
 *
 * Served: HttpApiBuilder serves `ServedApi` (every endpoint but the lane routes, which the
 * node:http edge serves) from these declarations (http/ApiServer.ts); the operator's groups are in
 * OperatorApi.ts. test/api-contract.e2e.test.ts fails when the server and the declarations differ.
 *
 * Errors: every gateway error (Errors.ts) at the status its class declares. The body stays Ollama's `{"error"}`; the
 * tagged error travels in the `X-AwoooP-Error` header (ErrorWire.ts), which the client turns back into
 * the class. A refusal without that header (a 500 from a defect, a route that answers a plain
 * `{"error"}`) is a `GatewayResponseError` with its status and message.
 *
 * Streaming answers are not expressible in HttpApi 3.x: the client reads them with HttpClient and
 * decodes each NDJSON line with the chunk schemas below.
 */
import { HttpApi, HttpApiEndpoint, HttpApiGroup } from "@effect/platform"
import { Schema } from "effect"
import { answer, QueryParam } from "./ApiAnswer.ts"
import { HeaderNames } from "./CallerContext.ts"
import { UpstreamRejected } from "./Errors.ts"
import { GatewayErrorSchema } from "./ErrorWire.ts"
import { ChatRequest, EmbedRequest, GenerateRequest, ShowRequest } from "./OllamaApi.ts"
import { AdminGroup, OperationsGroup } from "./OperatorApi.ts"

// ---------------------------------------------------------------------------------------------
// Headers: the AwoooP caller context
// ---------------------------------------------------------------------------------------------

const Token = Schema.String.pipe(Schema.pattern(/^[A-Za-z0-9._:-]{1,64}$/))
export const TraceId = Schema.String.pipe(Schema.pattern(/^[0-9a-f]{32}$/), Schema.filter((s) => s !== "0".repeat(32)))

/** What a caller says about itself (all optional: a legacy caller sends none). */
export const AwooopHeaders = Schema.Struct({
  [HeaderNames.lane]: Schema.optional(Schema.String),
  [HeaderNames.projectId]: Schema.optional(Token),
  [HeaderNames.traceId]: Schema.optional(TraceId),
  [HeaderNames.intent]: Schema.optional(Token),
  [HeaderNames.traceparent]: Schema.optional(Schema.String)
})
export type AwooopHeaders = typeof AwooopHeaders.Type

/**
 * The same headers as the routes served by HttpApiBuilder decode them: any string. The gateway's
 * own rules (CallerContext.ts) then refuse a malformed one with its 400 and message, after the
 * body as before; the typed client still validates with AwooopHeaders before it sends anything.
 */
export const CallerHeaders = Schema.Struct({
  [HeaderNames.lane]: Schema.optional(Schema.String),
  [HeaderNames.projectId]: Schema.optional(Schema.String),
  [HeaderNames.traceId]: Schema.optional(Schema.String),
  [HeaderNames.intent]: Schema.optional(Schema.String),
  [HeaderNames.traceparent]: Schema.optional(Schema.String)
})

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/** What every generate/chat chunk has: the model, the time, `done`, and the final chunk's counters. */
const Chunk = {
  model: Schema.String,
  created_at: Schema.String,
  done: Schema.Boolean,
  done_reason: Schema.optional(Schema.String),
  total_duration: Schema.optional(Schema.Number),
  load_duration: Schema.optional(Schema.Number),
  prompt_eval_count: Schema.optional(Schema.Number),
  prompt_eval_duration: Schema.optional(Schema.Number),
  eval_count: Schema.optional(Schema.Number),
  eval_duration: Schema.optional(Schema.Number)
}

/** One /api/generate answer, or one chunk of its stream (the final one has `done: true` and the counters). */
export const GenerateChunk = Schema.Struct({
  ...Chunk,
  response: Schema.String,
  thinking: Schema.optional(Schema.String),
  context: Schema.optional(Schema.Array(Schema.Number))
})
export type GenerateChunk = typeof GenerateChunk.Type
export const GenerateResponse = GenerateChunk
export type GenerateResponse = GenerateChunk

export const ChatResponseMessage = Schema.Struct({
  role: Schema.String,
  content: Schema.String,
  thinking: Schema.optional(Schema.String),
  images: Schema.optional(Schema.NullOr(Schema.Array(Schema.String))),
  tool_calls: Schema.optional(Schema.Array(Schema.Record({ key: Schema.String, value: Schema.Unknown })))
})

/** One /api/chat answer, or one chunk of its stream. */
export const ChatChunk = Schema.Struct({ ...Chunk, message: ChatResponseMessage })
export type ChatChunk = typeof ChatChunk.Type
export const ChatResponse = ChatChunk
export type ChatResponse = ChatChunk

export const EmbedResponse = Schema.Struct({
  model: Schema.String,
  embeddings: Schema.Array(Schema.Array(Schema.Number)),
  total_duration: Schema.optional(Schema.Number),
  load_duration: Schema.optional(Schema.Number),
  prompt_eval_count: Schema.optional(Schema.Number)
})
export type EmbedResponse = typeof EmbedResponse.Type

export const ModelDetails = Schema.Struct({
  parent_model: Schema.optional(Schema.String),
  format: Schema.optional(Schema.String),
  family: Schema.optional(Schema.String),
  families: Schema.optional(Schema.NullOr(Schema.Array(Schema.String))),
  parameter_size: Schema.optional(Schema.String),
  quantization_level: Schema.optional(Schema.String)
})

/** What /api/tags and /api/ps say of any model. */
const ModelEntry = {
  name: Schema.String,
  model: Schema.String,
  size: Schema.optional(Schema.Number),
  digest: Schema.optional(Schema.String),
  details: Schema.optional(ModelDetails)
}

/** GET /api/tags: every model installed on any host, once, with the hosts that have it. */
export const TagsResponse = Schema.Struct({
  // (In Ollama's order: the server's encoding writes the declared fields in this order.)
  models: Schema.Array(Schema.Struct({
    name: ModelEntry.name,
    model: ModelEntry.model,
    modified_at: Schema.optional(Schema.String),
    size: ModelEntry.size,
    digest: ModelEntry.digest,
    details: ModelEntry.details,
    capabilities: Schema.optional(Schema.Array(Schema.String)),
    awooop_hosts: Schema.Array(Schema.String)
  }))
})
export type TagsResponse = typeof TagsResponse.Type

/** GET /api/ps: every resident model, one entry per host. */
export const PsResponse = Schema.Struct({
  models: Schema.Array(Schema.Struct({
    ...ModelEntry,
    expires_at: Schema.optional(Schema.String),
    size_vram: Schema.optional(Schema.Number),
    context_length: Schema.optional(Schema.Number),
    awooop_host: Schema.String
  }))
})
export type PsResponse = typeof PsResponse.Type

export const VersionResponse = Schema.Struct({ version: Schema.String })
export type VersionResponse = typeof VersionResponse.Type

// ---------------------------------------------------------------------------------------------
// Runs (POST /awooop/runs, GET /awooop/runs/:id; served by AsyncRunRoutes.ts and RunRoutes.ts)
// ---------------------------------------------------------------------------------------------

/** An async run: an Ollama generate or chat body with its operation (the server's own request schemas). */
export const RunSubmission = Schema.Union(
  Schema.extend(GenerateRequest, Schema.Struct({ operation: Schema.Literal("generate") })),
  Schema.extend(ChatRequest, Schema.Struct({ operation: Schema.Literal("chat") }))
)
export type RunSubmission = typeof RunSubmission.Type

/** 202 to a submission (operations/async/AsyncRuns.ts `Submitted`). */
export const RunAccepted = Schema.Struct({
  runId: Schema.String,
  traceId: Schema.String,
  lane: Schema.String,
  status: Schema.Literal("queued"),
  statusUrl: Schema.String
})
export type RunAccepted = typeof RunAccepted.Type

/** 202 to a generate/chat on a shadow lane (or with X-AwoooP-Shadow): the decision, nothing executed. */
export const ShadowAccepted = Schema.Struct(
  { shadow: Schema.Literal(true), traceId: Schema.String },
  Schema.Record({ key: Schema.String, value: Schema.Unknown })
)

/** What a generate/chat answers with 202 instead of running: an async run (async lane) or a shadow decision. */
export const Accepted = Schema.Union(RunAccepted, ShadowAccepted)
export type Accepted = typeof Accepted.Type

const NullableString = Schema.NullOr(Schema.String)
const NullableNumber = Schema.NullOr(Schema.Number)

/** An async run's status (operations/async/AsyncRunState.ts `AsyncRunView`). */
export const AsyncRunStatus = Schema.Struct({
  runId: Schema.String,
  lane: Schema.String,
  operation: Schema.String,
  status: Schema.Literal("queued", "running", "succeeded", "failed", "cancelled"),
  attempts: Schema.Number,
  attemptLog: Schema.Array(Schema.Struct({
    attempt: Schema.Number,
    host: Schema.String,
    tier: Schema.String,
    startedAt: Schema.String,
    outcome: Schema.Literal("running", "succeeded", "failed", "interrupted"),
    kind: NullableString,
    message: NullableString
  })),
  traceId: NullableString,
  projectId: NullableString,
  queuedAt: NullableString,
  startedAt: NullableString,
  finishedAt: NullableString,
  error: Schema.NullOr(Schema.Struct({ status: NullableNumber, code: NullableString, message: NullableString })),
  /** The Ollama-shaped answer once succeeded. */
  result: Schema.Unknown,
  statusUrl: Schema.String
})

/** Any other run, as the journal's run_state projection shows it (projections/ReadModel.ts `runView`). */
export const ProjectedRunStatus = Schema.Struct({
  runId: Schema.String,
  streamId: Schema.String,
  status: Schema.Literal("running", "completed", "failed"),
  traceId: NullableString,
  projectId: NullableString,
  caller: Schema.optionalWith(NullableString, { default: () => null }),
  lane: NullableString,
  intent: NullableString,
  operation: NullableString,
  protocol: Schema.optionalWith(NullableString, { default: () => null }),
  stream: Schema.NullOr(Schema.Boolean),
  requestedModel: NullableString,
  assignedModel: NullableString,
  model: NullableString,
  attempts: Schema.Number,
  endpoint: NullableString,
  providerTier: NullableString,
  provider: NullableString,
  inputTokens: NullableNumber,
  outputTokens: NullableNumber,
  costUsd: NullableNumber,
  fallbackReason: NullableString,
  error: NullableString,
  errorCode: NullableString,
  errorStatus: NullableNumber,
  startedAt: NullableString,
  finishedAt: NullableString,
  durationMs: NullableNumber,
  route: Schema.Array(Schema.String),
  misses: Schema.Array(Schema.String),
  projected: Schema.Boolean
})

export const RunStatus = Schema.Union(AsyncRunStatus, ProjectedRunStatus)
export type RunStatus = typeof RunStatus.Type

/** One journal event of a trace (projections/ReadModel.ts `eventView`). */
export const TraceEvent = Schema.Struct({
  globalPosition: Schema.Number,
  streamId: Schema.String,
  streamPosition: Schema.Number,
  type: Schema.String,
  occurredAt: Schema.String,
  projectId: NullableString,
  lane: NullableString,
  data: Schema.Unknown
})

/** GET /awooop/traces/:traceId: the trace's runs and its events in order (the caller's project's part of it). */
export const TraceView = Schema.Struct({
  traceId: Schema.String,
  runs: Schema.Array(ProjectedRunStatus),
  events: Schema.Array(TraceEvent)
})
export type TraceView = typeof TraceView.Type

/** GET /awooop/cost?from=&to=&groupBy= (days inclusive, UTC; groupBy comma-separated). */
export const CostParams = Schema.Struct({
  from: Schema.optional(QueryParam),
  to: Schema.optional(QueryParam),
  groupBy: Schema.optional(QueryParam)
})

const CostTotals = {
  requests: Schema.Number,
  failed: Schema.Number,
  inputTokens: Schema.Number,
  outputTokens: Schema.Number,
  unknownUsage: Schema.Number,
  costUsd: Schema.Number,
  unknownCost: Schema.Number
}

export const CostGroupBy = Schema.Literal("day", "project", "lane", "provider", "model", "caller")

/** The cost ledger's totals (projections/ReadModel.ts `cost`), one row per group. */
export const CostReport = Schema.Struct({
  from: Schema.String,
  to: Schema.String,
  groupBy: Schema.Array(CostGroupBy),
  rows: Schema.Array(Schema.Struct({
    day: Schema.optional(Schema.String),
    project: Schema.optional(Schema.String),
    lane: Schema.optional(Schema.String),
    provider: Schema.optional(Schema.String),
    model: Schema.optional(Schema.String),
    caller: Schema.optional(Schema.String),
    ...CostTotals
  })),
  total: Schema.Struct(CostTotals),
  /** The project a caller's key reads (only its own); absent for the admin token and in open mode. */
  projectId: Schema.optional(Schema.String)
})
export type CostReport = typeof CostReport.Type

/** POST /api/show: the first host's answer (Ollama's fields, passed on as they are) and which host gave it. */
export const ShowResponse = Schema.Struct({
  // (In Ollama's order; a field Ollama adds that is not named here passes through as it is.)
  license: Schema.optional(Schema.String),
  modelfile: Schema.optional(Schema.String),
  parameters: Schema.optional(Schema.String),
  template: Schema.optional(Schema.String),
  system: Schema.optional(Schema.String),
  details: Schema.optional(ModelDetails),
  model_info: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Unknown })),
  capabilities: Schema.optional(Schema.Array(Schema.String)),
  modified_at: Schema.optional(Schema.String),
  awooop_host: Schema.String
})
export type ShowResponse = typeof ShowResponse.Type

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/** A refusal that carried no tagged error (the body's `error`, or the raw text, as the message). */
export class GatewayResponseError extends Schema.TaggedError<GatewayResponseError>()("GatewayResponseError", {
  status: Schema.Number,
  message: Schema.String
}) {}

/** The typed client's generate/chat got 202: the gateway queued the request as a run, or only decided it (shadow). */
export class RequestAccepted extends Schema.TaggedError<RequestAccepted>()("RequestAccepted", {
  accepted: Accepted
}) {}

/** A stream that failed after it started (an `{"error"}` line), or ended without its final chunk. */
export class StreamFailed extends Schema.TaggedError<StreamFailed>()("StreamFailed", {
  message: Schema.String
}) {}

// ---------------------------------------------------------------------------------------------
// The API
// ---------------------------------------------------------------------------------------------

// The Ollama endpoints that run on a lane (generate, chat, embed) are served by the node:http edge
// (http/Edge.ts); the others, like every endpoint below, by HttpApiBuilder from these declarations
// (http/ApiServer.ts).

const generate = HttpApiEndpoint.post("generate", "/api/generate").setPayload(GenerateRequest).setHeaders(AwooopHeaders)
  .addSuccess(GenerateResponse)
  // (One member at a time: HttpApi reads a status from each member of a union, not from the union.)
  .addSuccess(RunAccepted, { status: 202 })
  .addSuccess(ShadowAccepted, { status: 202 })
const chat = HttpApiEndpoint.post("chat", "/api/chat").setPayload(ChatRequest).setHeaders(AwooopHeaders)
  .addSuccess(ChatResponse)
  .addSuccess(RunAccepted, { status: 202 })
  .addSuccess(ShadowAccepted, { status: 202 })
const embed = HttpApiEndpoint.post("embed", "/api/embed").setPayload(EmbedRequest).setHeaders(AwooopHeaders).addSuccess(EmbedResponse)

const tags = HttpApiEndpoint.get("tags", "/api/tags").addSuccess(answer(TagsResponse))
const ps = HttpApiEndpoint.get("ps", "/api/ps").addSuccess(answer(PsResponse))
const show = HttpApiEndpoint.post("show", "/api/show").setPayload(ShowRequest).addSuccess(answer(ShowResponse))
const version = HttpApiEndpoint.get("version", "/api/version").addSuccess(answer(VersionResponse))

/** The Ollama API as callers see it (the typed client's `ollama` group). */
export class OllamaGroup extends HttpApiGroup.make("ollama").add(generate).add(chat).add(embed).add(tags).add(ps).add(version).add(show) {}

/** The same group without the endpoints the edge serves: what HttpApiBuilder serves of it. */
export class OllamaServedGroup extends HttpApiGroup.make("ollama").add(tags).add(ps).add(version).add(show) {}

/** The endpoints of OllamaGroup that the node:http edge serves instead of HttpApiBuilder. */
export const edgeEndpoints = ["generate", "chat", "embed"] as const

const RunId = Schema.Struct({ id: Schema.String })

export class RunsGroup extends HttpApiGroup.make("runs")
  .add(
    // The body is read by the server itself (http/AsyncRunRoutes.ts: the gateway's body limits and
    // its Ollama-style messages); the declared payload is what the typed client sends.
    HttpApiEndpoint.post("submit", "/awooop/runs").setPayload(RunSubmission).setHeaders(CallerHeaders).addSuccess(answer(RunAccepted), { status: 202 })
  )
  .add(HttpApiEndpoint.get("status", "/awooop/runs/:id").setPath(RunId).addSuccess(answer(RunStatus)))
  .add(HttpApiEndpoint.del("cancel", "/awooop/runs/:id").setPath(RunId).addSuccess(answer(AsyncRunStatus)))
  .add(HttpApiEndpoint.get("trace", "/awooop/traces/:traceId").setPath(Schema.Struct({ traceId: Schema.String })).addSuccess(answer(TraceView)))
  .add(HttpApiEndpoint.get("cost", "/awooop/cost").setUrlParams(CostParams).addSuccess(answer(CostReport)))
{}

/** Every error a typed call can fail with, declared once for both APIs below. */
const Refusals = HttpApi.make("awooop-gateway")
  // Every gateway error at the status its class declares (Errors.ts).
  .addError(GatewayErrorSchema)
  // A host's own 4xx, passed on with its status.
  .addError(UpstreamRejected, { status: 400 })
  .addError(UpstreamRejected, { status: 401 })
  .addError(UpstreamRejected, { status: 403 })
  .addError(UpstreamRejected, { status: 405 })
  .addError(UpstreamRejected, { status: 408 })
  .addError(UpstreamRejected, { status: 409 })
  .addError(UpstreamRejected, { status: 413 })
  .addError(UpstreamRejected, { status: 422 })
  .addError(UpstreamRejected, { status: 429 })
  // Untagged refusals.
  .addError(GatewayResponseError, { status: 400 })
  .addError(GatewayResponseError, { status: 401 })
  .addError(GatewayResponseError, { status: 403 })
  .addError(GatewayResponseError, { status: 404 })
  .addError(GatewayResponseError, { status: 409 })
  .addError(GatewayResponseError, { status: 413 })
  .addError(GatewayResponseError, { status: 429 })
  .addError(GatewayResponseError, { status: 500 })
  .addError(GatewayResponseError, { status: 501 })
  .addError(GatewayResponseError, { status: 502 })
  .addError(GatewayResponseError, { status: 503 })
  .addError(GatewayResponseError, { status: 504 })

/** The gateway's API: what the typed client is derived from. */
export class GatewayApi extends Refusals.add(OllamaGroup).add(RunsGroup).add(OperationsGroup).add(AdminGroup) {}

/**
 * What HttpApiBuilder serves (http/ApiServer.ts): the same groups and endpoints, less the ones the
 * edge serves (`edgeEndpoints`). test/api-contract.e2e.test.ts checks that the two differ by exactly those.
 */
export class ServedApi extends Refusals.add(OllamaServedGroup).add(RunsGroup).add(OperationsGroup).add(AdminGroup) {}

/** Every error a typed call can fail with because the gateway said no. */
export type GatewayRefusal = typeof GatewayApi extends HttpApi.HttpApi<infer _Id, infer _Groups, infer E, infer _R> ? E : never
