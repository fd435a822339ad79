/**
 * The OpenAI-compatible surface, for callers on OpenAI SDKs:
 *
 *   POST /v1/chat/completions   → the lane's chat      (SSE when `stream`, `[DONE]` at the end)
 *   POST /v1/completions        → the lane's generate  (legacy completions)
 *   POST /v1/embeddings         → the lane's embed     (float or base64, as the SDK asks)
 *   GET  /v1/models, /v1/models/:model  → the models the lanes serve (from the config)
 *
 * Lanes and headers are the Ollama routes' (X-AwoooP-Lane, -Project-ID, -Trace-ID, -Intent,
 * traceparent; a caller without X-AwoooP-Lane is put on a lane by its model through the legacy
 * rules). Requests are translated to Ollama bodies (domain/OpenAiApi.ts) and answered by the same
 * lane actor; its Ollama NDJSON is translated back. Errors use OpenAI's shape
 * `{"error":{"message","type","param":null,"code":null}}` with the gateway's status codes. A stream
 * that fails after it started ends with an `error` event and no `[DONE]`, so SDKs throw instead of
 * returning a silently truncated answer.
 *
 * The POST routes are on the node:http fast path (InferenceRoutes.makeFastHandler); the model list
 * goes through the platform router.
 */
import { HttpRouter } from "@effect/platform"
import { Clock, Effect, type Schema, Stream, type Tracer } from "effect"
import type { IncomingMessage, ServerResponse } from "node:http"
import { type CallerContext, resolveCallerContext } from "../domain/CallerContext.ts"
import { BadRequest, type GatewayError } from "../domain/Errors.ts"
import { ChatRequest, EmbedRequest, GenerateRequest, type Operation } from "../domain/OllamaApi.ts"
import {
  ChatCompletionRequest,
  CompletionRequest,
  EmbeddingRequest,
  toOllamaChat,
  toOllamaEmbed,
  toOllamaGenerate
} from "../domain/OpenAiApi.ts"
import * as Tracing from "../observability/Tracing.ts"
import { Gateway } from "../routing/Gateway.ts"
import { abandon, type LaneResult } from "../routing/Lane.ts"
import { LineSplitter, parseLine } from "../upstream/Ndjson.ts"
import { shadowInstead } from "./Accepted.ts"
import { jsonResponse } from "./ErrorResponse.ts"
import { errorHeaders, headerBag, makeFastHandler, pipeStream, readBody, resultHeaders } from "./InferenceRoutes.ts"
import { decodeBody, parseJsonObject } from "./RequestBody.ts"

type Kind = "chat" | "completion" | "embedding"

const routes: Readonly<Record<string, Kind>> = {
  "/v1/chat/completions": "chat",
  "/v1/completions": "completion",
  "/v1/embeddings": "embedding"
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/** OpenAI's error types by status (as Ollama's own /v1 routes name them, plus the SDKs' classes). */
export const openAiErrorType = (status: number): string => {
  switch (status) {
    case 400:
    case 413:
    case 422: return "invalid_request_error"
    case 401: return "authentication_error"
    case 403: return "permission_error"
    case 404: return "not_found_error"
    case 409: return "conflict_error"
    case 429: return "rate_limit_error"
    default: return "api_error"
  }
}

export const openAiError = (message: string, status: number) => ({
  error: { message, type: openAiErrorType(status), param: null, code: null }
})

const encoder = new TextEncoder()

const writeError = (res: ServerResponse, error: GatewayError, caller: CallerContext | null) => {
  if (res.headersSent) return
  res.writeHead(error.status, errorHeaders(error, caller))
  res.end(encoder.encode(JSON.stringify(openAiError(error.message, error.status))))
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

interface Translated {
  readonly operation: Operation
  readonly body: Record<string, unknown>
  readonly stream: boolean
  readonly includeUsage: boolean
  readonly base64: boolean
  /** What the journal keeps when it keeps prompts (the Ollama routes' shapes). */
  readonly prompt: unknown
}

const decodeAs = <A, I>(schema: Schema.Schema<A, I>, value: unknown) => decodeBody(schema, value)

/** The OpenAI body → the Ollama body the lane routes (validated by the Ollama schema too). */
const translate = (kind: Kind, raw: Record<string, unknown>): Effect.Effect<Translated, BadRequest> =>
  Effect.gen(function*() {
    switch (kind) {
      case "chat": {
        const r = yield* decodeAs(ChatCompletionRequest, raw)
        const stream = r.stream === true
        const body = toOllamaChat(r, stream)
        if ("error" in body && typeof body.error === "string") return yield* new BadRequest({ message: body.error })
        const decoded = yield* decodeAs(ChatRequest, body)
        return {
          operation: "chat",
          body: decoded,
          stream,
          includeUsage: r.stream_options?.include_usage === true,
          base64: false,
          prompt: { messages: decoded.messages }
        } satisfies Translated
      }
      case "completion": {
        const r = yield* decodeAs(CompletionRequest, raw)
        const stream = r.stream === true
        const decoded = yield* decodeAs(GenerateRequest, toOllamaGenerate(r, stream))
        return {
          operation: "generate",
          body: decoded,
          stream,
          includeUsage: r.stream_options?.include_usage === true,
          base64: false,
          prompt: { system: null, prompt: decoded.prompt ?? null }
        } satisfies Translated
      }
      case "embedding": {
        const r = yield* decodeAs(EmbeddingRequest, raw)
        const decoded = yield* decodeAs(EmbedRequest, toOllamaEmbed(r))
        return {
          operation: "embed",
          body: decoded,
          stream: false,
          includeUsage: false,
          base64: r.encoding_format === "base64",
          prompt: { input: decoded.input }
        } satisfies Translated
      }
    }
  })

// ---------------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------------

type Json = Record<string, unknown>

const str = (v: unknown): string => (typeof v === "string" ? v : "")
const count = (v: unknown): number => (typeof v === "number" && Number.isFinite(v) ? v : 0)

const usageOf = (chunk: Json) => {
  const prompt = count(chunk.prompt_eval_count)
  const completion = count(chunk.eval_count)
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion }
}

const finishReason = (chunk: Json, toolCalls: boolean): string =>
  toolCalls ? "tool_calls" : chunk.done_reason === "length" ? "length" : "stop"

/** Ollama's tool calls (arguments as an object) → OpenAI's (arguments as a JSON string). */
const toolCallsOf = (message: Json, runId: string, offset = 0): Array<Json> | undefined => {
  const calls = message.tool_calls
  if (!Array.isArray(calls) || calls.length === 0) return undefined
  return calls.map((c: Json, i: number) => {
    const fn = (c.function ?? {}) as Json
    return {
      index: offset + i,
      id: `call_${runId.slice(0, 8)}_${offset + i}`,
      type: "function",
      function: { name: str(fn.name), arguments: JSON.stringify(fn.arguments ?? {}) }
    }
  })
}

interface Meta {
  readonly id: string
  readonly created: number
  readonly runId: string
}

const chatCompletion = (answer: Json, meta: Meta) => {
  const message = (answer.message ?? {}) as Json
  const toolCalls = toolCallsOf(message, meta.runId)?.map(({ index: _index, ...call }) => call)
  return {
    id: meta.id,
    object: "chat.completion",
    created: meta.created,
    model: str(answer.model),
    system_fingerprint: "fp_awooop",
    choices: [{
      index: 0,
      message: {
        role: "assistant",
        content: str(message.content),
        ...(typeof message.thinking === "string" && message.thinking !== "" ? { reasoning: message.thinking } : {}),
        ...(toolCalls === undefined ? {} : { tool_calls: toolCalls })
      },
      finish_reason: finishReason(answer, toolCalls !== undefined)
    }],
    usage: usageOf(answer)
  }
}

const textCompletion = (answer: Json, meta: Meta) => ({
  id: meta.id,
  object: "text_completion",
  created: meta.created,
  model: str(answer.model),
  system_fingerprint: "fp_awooop",
  choices: [{ index: 0, text: str(answer.response), logprobs: null, finish_reason: finishReason(answer, false) }],
  usage: usageOf(answer)
})

/** Float32 little-endian, base64: what the OpenAI SDKs ask for by default and decode. */
const base64Of = (vector: ReadonlyArray<number>): string => {
  const view = new DataView(new ArrayBuffer(vector.length * 4))
  vector.forEach((x, i) => view.setFloat32(i * 4, x, true))
  return Buffer.from(view.buffer).toString("base64")
}

const embeddingList = (answer: Json, base64: boolean) => {
  const vectors = Array.isArray(answer.embeddings) ? answer.embeddings as ReadonlyArray<ReadonlyArray<number>> : []
  const prompt = count(answer.prompt_eval_count)
  return {
    object: "list",
    data: vectors.map((v, index) => ({ object: "embedding", index, embedding: base64 ? base64Of(v) : v })),
    model: str(answer.model),
    usage: { prompt_tokens: prompt, total_tokens: prompt }
  }
}

const sse = (value: unknown) => encoder.encode(`data: ${JSON.stringify(value)}\n\n`)
const done = encoder.encode("data: [DONE]\n\n")
const errorEvent = (message: string) => encoder.encode(`event: error\ndata: ${JSON.stringify(openAiError(message, 500))}\n\n`)

/**
 * Ollama NDJSON lines → SSE events. After the final chunk: the finish chunk, the usage chunk when
 * asked for, `[DONE]`. An `{"error"}` line (the lane's mid-stream failure) or a stream that ends
 * without its final chunk → an `error` event and nothing after it.
 */
const sseStream = (kind: "chat" | "completion", lines: Stream.Stream<Uint8Array>, meta: Meta, includeUsage: boolean) => {
  const splitter = new LineSplitter()
  const object = kind === "chat" ? "chat.completion.chunk" : "text_completion"
  let state: "open" | "finished" | "failed" = "open"
  let first = true
  let toolCalls = 0
  const chunk = (model: string, choice: Json) => ({
    id: meta.id,
    object,
    created: meta.created,
    model,
    system_fingerprint: "fp_awooop",
    choices: [choice],
    ...(includeUsage ? { usage: null } : {})
  })
  const translateLine = (line: Uint8Array): Array<Uint8Array> => {
    if (state !== "open") return []
    const parsed = parseLine(line)
    if (parsed._tag === "Blank") return []
    if (parsed._tag === "Malformed") {
      state = "failed"
      return [errorEvent(`the upstream stream broke: ${parsed.message}`)]
    }
    const c = parsed.value
    if (typeof c.error === "string") {
      state = "failed"
      return [errorEvent(c.error)]
    }
    const model = str(c.model)
    const out: Array<Uint8Array> = []
    if (kind === "chat") {
      const message = (c.message ?? {}) as Json
      const delta: Json = first ? { role: "assistant" } : {}
      const content = str(message.content)
      if (content !== "" || first) delta.content = content
      if (typeof message.thinking === "string" && message.thinking !== "") delta.reasoning = message.thinking
      const calls = toolCallsOf(message, meta.runId, toolCalls)
      if (calls !== undefined) {
        delta.tool_calls = calls
        toolCalls += calls.length
      }
      first = false
      if (c.done !== true) out.push(sse(chunk(model, { index: 0, delta, finish_reason: null, logprobs: null })))
      else out.push(sse(chunk(model, { index: 0, delta, finish_reason: finishReason(c, toolCalls > 0), logprobs: null })))
    } else {
      out.push(sse(chunk(model, { index: 0, text: str(c.response), logprobs: null, finish_reason: c.done === true ? finishReason(c, false) : null })))
    }
    if (c.done === true) {
      state = "finished"
      if (includeUsage) {
        out.push(sse({ id: meta.id, object, created: meta.created, model, system_fingerprint: "fp_awooop", choices: [], usage: usageOf(c) }))
      }
      out.push(done)
    }
    return out
  }
  return lines.pipe(
    Stream.mapConcat((bytes) => splitter.push(bytes).flatMap(translateLine)),
    Stream.concat(Stream.suspend(() => {
      const last = splitter.rest()
      const tail = last === null ? [] : translateLine(last)
      return Stream.fromIterable(state === "open" ? [...tail, errorEvent("the upstream stream ended without its final chunk")] : tail)
    }))
  )
}

// ---------------------------------------------------------------------------------------------
// The handler
// ---------------------------------------------------------------------------------------------

const parseJson = (bytes: Uint8Array): Json => JSON.parse(new TextDecoder().decode(bytes)) as Json

const serve = (kind: Kind, path: string, req: IncomingMessage, res: ServerResponse) => {
  let span: Tracer.Span | null = null
  // A stream the lane handed over: if the caller goes away before it runs, `abandon` still frees it.
  let handedOver: LaneResult | null = null
  return Effect.gen(function*() {
    const gateway = yield* Gateway
    let caller: CallerContext | null = null
    let reachedLane = false
    let request: Translated | null = null
    const outcome = yield* Effect.gen(function*() {
      const bytes = yield* readBody(req, gateway.config.server.maxBodyBytes, { res, bodies: gateway.bodies })
      const raw = yield* parseJsonObject(bytes, gateway.config.server)
      const translated = yield* translate(kind, raw)
      request = translated
      const resolved = resolveCallerContext(headerBag(req), translated.body.model as string, gateway.laneRules)
      if (!("traceId" in resolved)) return yield* Effect.fail(resolved)
      caller = resolved
      span = yield* Tracing.startServerSpan("POST", path, resolved)
      const lane = gateway.lanes.get(resolved.lane)!
      // A mirrored request, or a lane in shadow mode: decided and journaled, never executed (issue 5).
      const shadow = yield* shadowInstead(gateway, translated.operation, translated.body, resolved, lane, headerBag(req))
      if (shadow !== null) return shadow
      reachedLane = true
      const handled = lane.handle({
        operation: translated.operation,
        body: translated.body,
        stream: translated.stream,
        caller: resolved,
        prompt: translated.prompt
      }).pipe(Effect.tap((r) => { handedOver = r }))
      return yield* (span === null ? handled : Effect.withParentSpan(handled, span))
    }).pipe(Effect.either)
    if (outcome._tag === "Left") {
      if (!reachedLane) gateway.metrics.request(caller === null ? "none" : (caller as CallerContext).lane, "none", outcome.left._tag)
      span ??= yield* Tracing.startServerSpan("POST", path, caller)
      writeError(res, outcome.left, caller)
      return yield* Tracing.endServerSpan(span, outcome.left.status, outcome.left)
    }
    if (outcome.right._tag === "Accepted") {
      res.writeHead(202, { "content-type": "application/json; charset=utf-8", ...outcome.right.headers })
      res.end(encoder.encode(JSON.stringify(outcome.right.body)))
      return yield* Tracing.endServerSpan(span, 202, null)
    }
    const result: LaneResult = outcome.right
    const translated = request! as Translated
    const meta: Meta = {
      id: `${kind === "chat" ? "chatcmpl" : "cmpl"}-${result.info.runId.replace(/-/g, "")}`,
      created: Math.floor((yield* Clock.currentTimeMillis) / 1000),
      runId: result.info.runId
    }
    if (result._tag === "Unary") {
      const answer = parseJson(result.bytes)
      const body = kind === "chat" ? chatCompletion(answer, meta) : kind === "completion" ? textCompletion(answer, meta) : embeddingList(answer, translated.base64)
      res.writeHead(200, resultHeaders(result, "application/json; charset=utf-8"))
      res.end(encoder.encode(JSON.stringify(body)))
      return yield* Tracing.endServerSpan(span, 200, null)
    }
    res.writeHead(200, { ...resultHeaders(result, "text/event-stream; charset=utf-8"), "cache-control": "no-cache" })
    yield* pipeStream(res, sseStream(kind === "chat" ? "chat" : "completion", result.stream, meta, translated.includeUsage), result.idleTimeoutMs)
    res.end()
    return yield* Tracing.endServerSpan(span, 200, null)
  }).pipe(
    Effect.onInterrupt(() =>
      Effect.zipRight(
        handedOver === null ? Effect.void : abandon(handedOver),
        span === null ? Effect.void : Tracing.endSpan(span, { type: "ClientAborted", message: "the caller went away" })
      ))
  )
}

const internalError = JSON.stringify(openAiError("internal gateway error; the journal and logs have the details", 500))

/** The OpenAI POST routes on the fast path. */
export const makeOpenAiHandler = makeFastHandler((req, res, path) => {
  if (req.method !== "POST") return undefined
  const kind = routes[path]
  if (kind === undefined) return undefined
  return { serve: serve(kind, path, req, res), refuse: (error) => writeError(res, error, null), internalError }
})

// ---------------------------------------------------------------------------------------------
// GET /v1/models
// ---------------------------------------------------------------------------------------------

/**
 * The models callers can name: each synchronous lane's model (async-only lanes refuse /v1 calls,
 * paid lanes answer with their providers' models and are reached by X-AwoooP-Lane). Read from the
 * config rather than the hosts' tags: a model installed on a host but served by no lane cannot be
 * asked for, and the list must not depend on which hosts answer right now. `awooop_lanes` says
 * which lanes serve it; `awooop_default_lane` is the lane a caller without X-AwoooP-Lane gets.
 */
const modelList = (gateway: Gateway, created: number) => {
  const byModel = new Map<string, Array<string>>()
  for (const [name, lane] of gateway.lanes) {
    if (lane.config.model === "" || lane.config.async) continue
    const lanes = byModel.get(lane.config.model) ?? []
    lanes.push(name)
    byModel.set(lane.config.model, lanes)
  }
  return [...byModel].map(([id, lanes]) => ({
    id,
    object: "model",
    created,
    owned_by: "awooop",
    awooop_lanes: lanes,
    awooop_default_lane: gateway.laneRules.legacyLanes[id] ?? null
  }))
}

const nowSeconds = Effect.map(Clock.currentTimeMillis, (ms) => Math.floor(ms / 1000))

const listModels = Effect.gen(function*() {
  const gateway = yield* Gateway
  return jsonResponse({ object: "list", data: modelList(gateway, yield* nowSeconds) })
})

/** A path segment decoded once more if it can be ("%" alone, say, cannot: then it is taken as it is, not a 500). */
const decodeSegment = (segment: string): string => {
  try {
    return decodeURIComponent(segment)
  } catch {
    return segment
  }
}

const getModel = Effect.gen(function*() {
  const gateway = yield* Gateway
  const { model } = yield* HttpRouter.params
  const id = decodeSegment(model ?? "")
  const found = modelList(gateway, yield* nowSeconds).find((m) => m.id === id)
  return found === undefined
    ? jsonResponse(openAiError(`model '${id}' not found: no lane serves it`, 404), {}, 404)
    : jsonResponse(found)
})

export const openAiRoutes = HttpRouter.empty.pipe(
  HttpRouter.get("/v1/models", listModels),
  HttpRouter.get("/v1/models/:model", getModel)
)
