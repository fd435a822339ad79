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
 * The POST routes are adapters on the shared fast path of ProtocolAdapter.ts (with /v1/responses and
 * /v1/messages); the model list goes through the platform router.
 */
import { HttpRouter } from "@effect/platform"
import { Clock, Effect } from "effect"
import { BadRequest } from "../domain/Errors.ts"
import { ChatRequest, EmbedRequest, GenerateRequest } from "../domain/OllamaApi.ts"
import {
  ChatCompletionRequest,
  CompletionRequest,
  EmbeddingRequest,
  toOllamaChat,
  toOllamaEmbed,
  toOllamaGenerate
} from "../domain/OpenAiApi.ts"
import { Gateway } from "../routing/Gateway.ts"
import { jsonResponse } from "./ErrorResponse.ts"
import { count, type EventWriter, type Json, ollamaToolCalls, type ProtocolAdapter, type RunMeta, sse, str } from "./ProtocolAdapter.ts"
import { decodeBody } from "./RequestBody.ts"

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

// ---------------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------------

const usageOf = (chunk: Json) => {
  const prompt = count(chunk.prompt_eval_count)
  const completion = count(chunk.eval_count)
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion }
}

const finishReason = (chunk: Json, toolCalls: boolean): string =>
  toolCalls ? "tool_calls" : chunk.done_reason === "length" ? "length" : "stop"

/** Ollama's tool calls (arguments as an object) → OpenAI's (arguments as a JSON string). */
const toolCallsOf = (message: Json, runId: string, offset = 0): Array<Json> | undefined => {
  const calls = ollamaToolCalls(message)
  if (calls.length === 0) return undefined
  return calls.map((c, i) => ({
    index: offset + i,
    id: `call_${runId.slice(0, 8)}_${offset + i}`,
    type: "function",
    function: { name: c.name, arguments: JSON.stringify(c.arguments) }
  }))
}

const chatCompletion = (answer: Json, meta: RunMeta) => {
  const message = (answer.message ?? {}) as Json
  const toolCalls = toolCallsOf(message, meta.runId)?.map(({ index: _index, ...call }) => call)
  return {
    id: chatId(meta),
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

const textCompletion = (answer: Json, meta: RunMeta) => ({
  id: completionId(meta),
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

const chatId = (meta: RunMeta) => `chatcmpl-${meta.runId.replace(/-/g, "")}`
const completionId = (meta: RunMeta) => `cmpl-${meta.runId.replace(/-/g, "")}`

const done = encoder.encode("data: [DONE]\n\n")

/**
 * Ollama chunks → SSE chunks. After the final chunk: the finish chunk, the usage chunk when asked
 * for, `[DONE]`; a broken stream ends with an `error` event and no `[DONE]`.
 */
const sseWriter = (kind: "chat" | "completion", meta: RunMeta, includeUsage: boolean): EventWriter => {
  const id = kind === "chat" ? chatId(meta) : completionId(meta)
  const object = kind === "chat" ? "chat.completion.chunk" : "text_completion"
  let first = true
  let toolCalls = 0
  const chunk = (model: string, choice: Json) => ({
    id,
    object,
    created: meta.created,
    model,
    system_fingerprint: "fp_awooop",
    choices: [choice],
    ...(includeUsage ? { usage: null } : {})
  })
  return {
    fail: (message) => [sse("error", openAiError(message, 500))],
    chunk: (c) => {
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
        out.push(sse(null, chunk(model, { index: 0, delta, finish_reason: c.done === true ? finishReason(c, toolCalls > 0) : null, logprobs: null })))
      } else {
        out.push(sse(null, chunk(model, { index: 0, text: str(c.response), logprobs: null, finish_reason: c.done === true ? finishReason(c, false) : null })))
      }
      if (c.done === true) {
        if (includeUsage) {
          out.push(sse(null, { id, object, created: meta.created, model, system_fingerprint: "fp_awooop", choices: [], usage: usageOf(c) }))
        }
        out.push(done)
      }
      return out
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The adapters (served by ProtocolAdapter.ts on the fast path)
// ---------------------------------------------------------------------------------------------

const chatAdapter: ProtocolAdapter = {
  protocol: "openai-chat",
  errorBody: openAiError,
  translate: (raw) =>
    Effect.gen(function*() {
      const r = yield* decodeBody(ChatCompletionRequest, raw)
      const stream = r.stream === true
      const body = toOllamaChat(r, stream)
      if ("error" in body && typeof body.error === "string") return yield* new BadRequest({ message: body.error })
      const decoded = yield* decodeBody(ChatRequest, body)
      const includeUsage = r.stream_options?.include_usage === true
      return {
        operation: "chat",
        body: decoded,
        stream,
        prompt: { messages: decoded.messages },
        answer: chatCompletion,
        events: (meta) => sseWriter("chat", meta, includeUsage)
      }
    })
}

const completionAdapter: ProtocolAdapter = {
  protocol: "openai-completions",
  errorBody: openAiError,
  translate: (raw) =>
    Effect.gen(function*() {
      const r = yield* decodeBody(CompletionRequest, raw)
      const stream = r.stream === true
      const decoded = yield* decodeBody(GenerateRequest, toOllamaGenerate(r, stream))
      const includeUsage = r.stream_options?.include_usage === true
      return {
        operation: "generate",
        body: decoded,
        stream,
        prompt: { system: null, prompt: decoded.prompt ?? null },
        answer: textCompletion,
        events: (meta) => sseWriter("completion", meta, includeUsage)
      }
    })
}

const embeddingAdapter: ProtocolAdapter = {
  protocol: "openai-embeddings",
  errorBody: openAiError,
  translate: (raw) =>
    Effect.gen(function*() {
      const r = yield* decodeBody(EmbeddingRequest, raw)
      const decoded = yield* decodeBody(EmbedRequest, toOllamaEmbed(r))
      const base64 = r.encoding_format === "base64"
      return {
        operation: "embed",
        body: decoded,
        stream: false,
        prompt: { input: decoded.input },
        answer: (answer) => embeddingList(answer, base64)
      }
    })
}

/** The OpenAI POST routes. */
export const openAiAdapters: Readonly<Record<string, ProtocolAdapter>> = {
  "/v1/chat/completions": chatAdapter,
  "/v1/completions": completionAdapter,
  "/v1/embeddings": embeddingAdapter
}

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
    awooop_default_lane: Object.hasOwn(gateway.laneRules.legacyLanes, id) ? gateway.laneRules.legacyLanes[id]! : null
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
